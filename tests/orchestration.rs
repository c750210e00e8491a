//! The compile orchestration without a sandbox: a recording fake stands in for libcontainer, so
//! cache hits, the publish order, commit failures, fail-fast, keep-going, cancellation and the
//! report are tested as any user, in milliseconds; so are the rules by which packages of
//! compiled releases stand in for compiles. The real sandbox is tested in tests/sandbox.rs and
//! end to end in tests/compile.rs and tests/export.rs.

#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fissile_oci::base::stemcell::{STEMCELL_OS_ANNOTATION, STEMCELL_VERSION_ANNOTATION};
use fissile_oci::base::CompilationBase;
use fissile_oci::cancel::CancelToken;
use fissile_oci::compile::report::{write_summary, Metrics};
use fissile_oci::compile::{
    CompileOptions, CompileReport, Compiler, PackageError, PackageStatus, Progress,
};
use fissile_oci::extract::ExtractLimits;
use fissile_oci::oci::store::sha256_digest;
use fissile_oci::oci::OciStore;
use fissile_oci::plan::{load_plan, Plan, PlanRequest};
use fissile_oci::release::LoadOptions;
use fissile_oci::sandbox::{
    ExitStatus, Network, Outcome, Output, Sandbox, SandboxError, SandboxSpec, ScratchReport,
    ScratchSpace,
};
use fissile_oci::workdir::WorkDir;
use oci_spec::image::{Descriptor, MediaType};

/// What the fake does for one package (by `BOSH_PACKAGE_NAME`).
#[derive(Clone, Debug, Default)]
enum Behaviour {
    /// Writes `built-by-fake` into the install dir, naming the dependencies it saw.
    #[default]
    Succeed,
    /// Prints a line to the log and exits with this code.
    Exit(i32),
    /// As `Exit`, once the named package has started (so a failure meets a running compile).
    ExitOnceStarted(i32, &'static str),
    /// Runs until cancelled (or 10 s), then reports the interruption as the real sandbox does.
    Hang,
    /// Succeeds after this long.
    Slow(Duration),
    /// Succeeds, leaving a file whose name is not UTF-8: the layer writer refuses it.
    UnstorableOutput,
    /// The sandbox itself panics.
    Panic,
    /// Succeeds, leaving this many incompressible bytes (so sizes are the outputs' own).
    Big(usize),
    /// With its build tree on a tmpfs: leaves half an output, fails and reports the tmpfs full,
    /// as a build that ran out of room does. On disk: succeeds.
    OutgrowsTmpfs,
    /// Succeeds, reporting that no tmpfs could be had (as the real sandbox does where a kernel
    /// refuses it) when one was asked for.
    NoTmpfsHere,
}

/// A sandbox that records every run and plays a [`Behaviour`] per package.
#[derive(Default)]
struct FakeSandbox {
    behaviours: HashMap<String, Behaviour>,
    /// Package names in the order their runs started.
    started: Mutex<Vec<String>>,
    /// Per package: the dependencies mounted read-only, and what each held at start.
    mounted: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl FakeSandbox {
    fn with(behaviours: &[(&str, Behaviour)]) -> FakeSandbox {
        FakeSandbox {
            behaviours: behaviours
                .iter()
                .map(|(n, b)| (n.to_string(), b.clone()))
                .collect(),
            ..FakeSandbox::default()
        }
    }

    fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }
}

fn env<'a>(spec: &'a SandboxSpec, key: &str) -> &'a str {
    spec.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("the compile sandbox has no {key}"))
}

impl Sandbox for FakeSandbox {
    fn run(&self, spec: &SandboxSpec, cancel: &CancelToken) -> Result<Outcome, SandboxError> {
        let name = env(spec, "BOSH_PACKAGE_NAME").to_string();
        let install_target = env(spec, "BOSH_INSTALL_TARGET");
        let install = spec
            .mounts
            .iter()
            .find(|m| m.destination == Path::new(install_target) && !m.readonly)
            .expect("the install dir is mounted read-write")
            .source
            .clone();
        let mut deps = BTreeMap::new();
        for m in spec.mounts.iter().filter(|m| m.readonly) {
            let dep = m.destination.file_name().unwrap().to_string_lossy();
            let content = std::fs::read_to_string(m.source.join("built-by-fake"))
                .unwrap_or_else(|_| "<not published>".into());
            deps.insert(dep.into_owned(), content);
        }
        self.mounted
            .lock()
            .unwrap()
            .insert(name.clone(), deps.clone());
        self.started.lock().unwrap().push(name.clone());
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        let _running = Decrement(&self.running);

        let Output::CappedFile { path: log, .. } = &spec.stdout else {
            panic!("compile output goes to the package log")
        };
        let say = |line: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            writeln!(f, "{line}").unwrap();
        };
        say(&format!("+ compiling {name}"));
        let on_tmpfs = matches!(spec.scratch_space, ScratchSpace::Tmpfs { .. });
        let mut scratch = ScratchReport {
            tmpfs: on_tmpfs,
            ..ScratchReport::default()
        };
        let outcome = |status, scratch: ScratchReport| Outcome {
            container_id: format!("fake-{name}"),
            status,
            wall: Duration::ZERO,
            oom_killed: false,
            scratch,
        };
        let built = format!(
            "{name} on {}",
            deps.keys().cloned().collect::<Vec<_>>().join(",")
        );
        match self.behaviours.get(&name).cloned().unwrap_or_default() {
            Behaviour::Succeed => {}
            Behaviour::Exit(code) => {
                say(&format!("{name}: make: *** [all] Error {code}"));
                return Ok(outcome(ExitStatus::Exited(code), scratch));
            }
            Behaviour::ExitOnceStarted(code, other) => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !self.started().iter().any(|s| s == other) {
                    assert!(Instant::now() < deadline, "{other} never started");
                    std::thread::sleep(Duration::from_millis(1));
                }
                say(&format!("{name}: make: *** [all] Error {code}"));
                return Ok(outcome(ExitStatus::Exited(code), scratch));
            }
            Behaviour::Hang => {
                if cancel.wait_timeout(Duration::from_secs(10)) {
                    return Err(SandboxError::Interrupted {
                        container_id: format!("fake-{name}"),
                        signal: 15,
                    });
                }
            }
            Behaviour::Slow(d) => std::thread::sleep(d),
            Behaviour::UnstorableOutput => {
                let bad = std::ffi::OsStr::from_bytes(b"not-utf8-\xff");
                std::fs::write(install.join(bad), "x").unwrap();
            }
            Behaviour::Panic => panic!("the fake sandbox broke on {name}"),
            Behaviour::Big(len) => {
                // xorshift: bytes gzip cannot shrink, the same for the same package.
                let mut x = name.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
                });
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                std::fs::write(install.join("data"), bytes).unwrap();
            }
            Behaviour::OutgrowsTmpfs if on_tmpfs => {
                std::fs::write(install.join("half-written"), "x").unwrap();
                say(&format!("{name}: cc1: No space left on device"));
                scratch.full = true;
                return Ok(outcome(ExitStatus::Exited(2), scratch));
            }
            Behaviour::OutgrowsTmpfs => {}
            Behaviour::NoTmpfsHere if on_tmpfs => {
                scratch.tmpfs = false;
                scratch.fallback = Some("tmpfs refused by the fake".into());
            }
            Behaviour::NoTmpfsHere => {}
        }
        std::fs::write(install.join("built-by-fake"), built).unwrap();
        Ok(outcome(ExitStatus::Exited(0), scratch))
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A release source dir: `(name, dependencies)` per package, each with one source file.
fn write_release(dir: &Path, packages: &[(&str, &[&str])]) {
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/final.yml"), "name: fake\n").unwrap();
    for (name, deps) in packages {
        let pkg = dir.join("packages").join(name);
        std::fs::create_dir_all(&pkg).unwrap();
        let deps_yaml = if deps.is_empty() {
            "dependencies: []\n".to_string()
        } else {
            format!(
                "dependencies:\n{}",
                deps.iter().map(|d| format!("- {d}\n")).collect::<String>()
            )
        };
        std::fs::write(
            pkg.join("spec"),
            format!("---\nname: {name}\n{deps_yaml}files:\n- {name}/**/*\n"),
        )
        .unwrap();
        std::fs::write(pkg.join("packaging"), "cp -a . \"$BOSH_INSTALL_TARGET\"\n").unwrap();
        let src = dir.join("src").join(name);
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("main.c"), format!("/* {name} */\n")).unwrap();
    }
}

/// A work dir, a store and a compilation base that no sandbox will ever see.
struct Bench {
    tmp: tempfile::TempDir,
    wd: WorkDir,
    store: OciStore,
    base: CompilationBase,
    release: PathBuf,
}

impl Bench {
    fn new(packages: &[(&str, &[&str])]) -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let wd = WorkDir::at(tmp.path().join("work"));
        let store = OciStore::open_or_create(&wd.oci()).unwrap();
        let base = CompilationBase {
            name: "fake-base".into(),
            descriptor: Descriptor::new(
                MediaType::ImageManifest,
                0,
                sha256_digest(&"b".repeat(64)),
            ),
            rootfs: tmp.path().join("no-rootfs"),
            bash: "/bin/bash".into(),
        };
        let release = tmp.path().join("release");
        write_release(&release, packages);
        Bench {
            tmp,
            wd,
            store,
            base,
            release,
        }
    }

    fn plan(&self) -> Plan {
        let paths = [self.release.clone()];
        let load = LoadOptions::new(self.tmp.path().join("bosh-cache"));
        load_plan(
            &PlanRequest {
                paths: &paths,
                load: &load,
                role_manifest: None,
                roles: None,
                only_releases: None,
            },
            &mut |_, _| {},
        )
        .unwrap()
    }

    fn compile_with(
        &self,
        sandbox: &FakeSandbox,
        workers: usize,
        keep_going: bool,
        cancel: CancelToken,
    ) -> (CompileReport, Vec<String>) {
        self.compile_with_options(sandbox, options(workers, keep_going), cancel)
    }

    fn compile_with_options(
        &self,
        sandbox: &FakeSandbox,
        options: CompileOptions,
        cancel: CancelToken,
    ) -> (CompileReport, Vec<String>) {
        let compiler = Compiler {
            wd: &self.wd,
            store: &self.store,
            base: &self.base,
            sandbox,
            options: &options,
            context: Default::default(),
        };
        let mut events = Vec::new();
        let report = compiler
            .compile(&self.plan(), cancel, &mut Metrics::none(), &mut |p| {
                events.push(match p {
                    Progress::Planned { total, cached, .. } => format!("planned {total} {cached}"),
                    Progress::Cached { name } => format!("cached {name}"),
                    Progress::Started { name, .. } => format!("started {name}"),
                    Progress::Finished { report } => format!("{} {}", report.status, report.name),
                    Progress::Note { name, message } => format!("note {name}: {message}"),
                    Progress::Stopping { reason } => format!("stopping: {reason}"),
                    Progress::Pulling { name } => format!("pulling {name}"),
                    Progress::Waiting { name, shard } => format!("waiting {name} {shard}"),
                    Progress::Pushing { remaining } => format!("pushing {remaining}"),
                })
            })
            .unwrap();
        (report, events)
    }

    fn compile(&self, sandbox: &FakeSandbox) -> CompileReport {
        self.compile_with(sandbox, 2, false, CancelToken::new()).0
    }

    /// Compiles only the named packages (and what they need), as a release of its own would.
    fn compile_only(&self, sandbox: &FakeSandbox, names: &[&str]) -> CompileReport {
        let plan = self.plan();
        let mut keep = Vec::new();
        for name in names {
            let id = plan.find(name).unwrap();
            keep.extend(plan.dependency_closure(id));
            keep.push(id);
        }
        keep.sort();
        keep.dedup();
        let plan = plan.restricted_to(&keep);
        let compiler = Compiler {
            wd: &self.wd,
            store: &self.store,
            base: &self.base,
            sandbox,
            options: &options(2, false),
            context: Default::default(),
        };
        compiler
            .compile(&plan, CancelToken::new(), &mut Metrics::none(), &mut |_| {})
            .unwrap()
    }
}

fn options(workers: usize, keep_going: bool) -> CompileOptions {
    CompileOptions {
        workers,
        keep_going,
        keep_sandbox: false,
        network: Network::None,
        timeout: None,
        memory_limit: None,
        scratch_space: ScratchSpace::Disk,
        limits: ExtractLimits::default(),
        source_date_epoch: 0,
        shard: None,
        shard_wait: Duration::ZERO,
    }
}

fn statuses(report: &CompileReport) -> BTreeMap<String, PackageStatus> {
    report
        .packages
        .iter()
        .map(|p| (p.name.clone(), p.status))
        .collect()
}

/// a <- b <- c (c depends on b, b on a), and d alone.
const CHAIN: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])];

#[test]
fn dependants_start_after_their_dependencies_are_published_and_see_only_direct_ones() {
    let bench = Bench::new(CHAIN);
    let sandbox = FakeSandbox::default();
    let report = bench.compile(&sandbox);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(statuses(&report)
        .values()
        .all(|s| *s == PackageStatus::Compiled));
    let mounted = sandbox.mounted.lock().unwrap().clone();
    assert_eq!(mounted["a"], BTreeMap::new());
    // b sees a's published output; c sees b only (direct dependencies, as bosh mounts them).
    assert_eq!(mounted["b"]["a"], "a on ");
    assert_eq!(mounted["c"].keys().collect::<Vec<_>>(), ["b"]);
    assert_eq!(mounted["c"]["b"], "b on a");
    let order = sandbox.started();
    let at = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(at("a") < at("b") && at("b") < at("c"), "{order:?}");
    // Every package is an image in the store, named by its key, with its layer's digest.
    let refs = bench.store.ref_map().unwrap();
    for p in &report.packages {
        assert!(refs.contains_key(&format!("pkg-{}-{}", p.name, p.cache_key)));
        assert!(p.layer_digest.as_deref().unwrap().starts_with("sha256:"));
        assert!(bench
            .wd
            .packages()
            .join(&p.cache_key)
            .join("built-by-fake")
            .is_file());
    }
    // Nothing left behind in the run's scratch space.
    let leftovers: Vec<_> = std::fs::read_dir(bench.wd.runs()).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_second_run_is_all_cache_hits_and_runs_no_sandbox() {
    let bench = Bench::new(CHAIN);
    let first = bench.compile(&FakeSandbox::default());
    let sandbox = FakeSandbox::default();
    let (second, events) = bench.compile_with(&sandbox, 2, false, CancelToken::new());
    assert!(sandbox.started().is_empty());
    assert!(statuses(&second)
        .values()
        .all(|s| *s == PackageStatus::Cached));
    assert_eq!(events[0], "planned 4 4");
    for (a, b) in first.packages.iter().zip(&second.packages) {
        assert_eq!(
            (&a.cache_key, &a.layer_digest),
            (&b.cache_key, &b.layer_digest)
        );
    }
    // A published dir that went missing (a `cache gc`, a copied store) is restored from the
    // image, still without a sandbox.
    let c = second.packages.iter().find(|p| p.name == "c").unwrap();
    fissile_oci::workdir::remove_tree(&bench.wd.packages().join(&c.cache_key)).unwrap();
    let third = bench.compile(&sandbox);
    assert!(sandbox.started().is_empty());
    assert!(statuses(&third)
        .values()
        .all(|s| *s == PackageStatus::Cached));
    assert!(bench
        .wd
        .packages()
        .join(&c.cache_key)
        .join("built-by-fake")
        .is_file());
}

#[test]
fn a_changed_package_recompiles_it_and_its_dependants_only() {
    let bench = Bench::new(CHAIN);
    bench.compile(&FakeSandbox::default());
    std::fs::write(bench.release.join("src/b/main.c"), "/* b, changed */\n").unwrap();
    let sandbox = FakeSandbox::default();
    let report = bench.compile(&sandbox);
    let mut started = sandbox.started();
    started.sort();
    assert_eq!(started, ["b", "c"]);
    let s = statuses(&report);
    assert_eq!(s["a"], PackageStatus::Cached);
    assert_eq!(s["d"], PackageStatus::Cached);
    assert_eq!(s["b"], PackageStatus::Compiled);
    assert_eq!(s["c"], PackageStatus::Compiled);
}

#[test]
fn fail_fast_cancels_the_running_skips_the_dependants_and_reports_the_log() {
    // a fails while d hangs: d is cancelled, b and c are skipped behind a.
    let bench = Bench::new(CHAIN);
    let sandbox = FakeSandbox::with(&[
        ("a", Behaviour::ExitOnceStarted(2, "d")),
        ("d", Behaviour::Hang),
    ]);
    let started = Instant::now();
    let (report, events) = bench.compile_with(&sandbox, 2, false, CancelToken::new());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "d was not cancelled"
    );
    let s = statuses(&report);
    assert_eq!(s["a"], PackageStatus::Failed);
    assert_eq!(s["d"], PackageStatus::Cancelled);
    assert_eq!(s["b"], PackageStatus::Skipped);
    assert_eq!(s["c"], PackageStatus::Skipped);
    assert!(
        events.iter().any(|e| e == "stopping: a failed"),
        "{events:?}"
    );
    assert_eq!(report.failures.len(), 1, "only a failed on its own");
    let failure = &report.failures[0];
    assert_eq!(failure.name, "a");
    assert!(matches!(
        failure.error,
        PackageError::Script {
            status: ExitStatus::Exited(2),
            ..
        }
    ));
    assert!(
        failure.log_tail.iter().any(|l| l.contains("Error 2")),
        "{failure:?}"
    );
    let b = report.packages.iter().find(|p| p.name == "b").unwrap();
    assert_eq!(b.error.as_deref(), Some("depends on a, which failed"));
    // A failed package is not cached: the next run compiles it again.
    let again = FakeSandbox::default();
    bench.compile(&again);
    assert!(again.started().contains(&"a".to_string()));
}

#[test]
fn keep_going_compiles_everything_not_behind_a_failure() {
    let bench = Bench::new(CHAIN);
    let sandbox = FakeSandbox::with(&[("b", Behaviour::Exit(1))]);
    let (report, _) = bench.compile_with(&sandbox, 1, true, CancelToken::new());
    let s = statuses(&report);
    assert_eq!(s["a"], PackageStatus::Compiled);
    assert_eq!(s["b"], PackageStatus::Failed);
    assert_eq!(s["c"], PackageStatus::Skipped);
    assert_eq!(s["d"], PackageStatus::Compiled);
    assert!(!sandbox.started().contains(&"c".to_string()));
}

#[test]
fn an_interrupt_stops_the_running_compiles_and_says_so() {
    let bench = Bench::new(&[("slow", &[]), ("after", &["slow"])]);
    let sandbox = FakeSandbox::with(&[("slow", Behaviour::Hang)]);
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        trigger.cancel();
    });
    let (report, _) = bench.compile_with(&sandbox, 2, false, cancel);
    canceller.join().unwrap();
    assert!(report.interrupted);
    let s = statuses(&report);
    assert_eq!(s["slow"], PackageStatus::Cancelled);
    assert_eq!(s["after"], PackageStatus::Skipped);
    assert!(report.failures.is_empty(), "an interrupt is not a failure");
}

#[test]
fn a_commit_failure_fails_the_package_and_caches_nothing() {
    let bench = Bench::new(&[("odd", &[]), ("fine", &[])]);
    let sandbox = FakeSandbox::with(&[("odd", Behaviour::UnstorableOutput)]);
    let report = bench.compile(&sandbox);
    let s = statuses(&report);
    assert_eq!(s["odd"], PackageStatus::Failed);
    assert_eq!(s["fine"], PackageStatus::Compiled);
    let failure = &report.failures[0];
    assert_eq!(failure.name, "odd");
    assert!(
        matches!(failure.error, PackageError::Store(_)),
        "{failure:?}"
    );
    assert!(
        failure.error.to_string().contains("not UTF-8"),
        "{}",
        failure.error
    );
    let odd = report.packages.iter().find(|p| p.name == "odd").unwrap();
    assert!(!bench
        .store
        .ref_map()
        .unwrap()
        .contains_key(&format!("pkg-odd-{}", odd.cache_key)));
}

#[test]
fn a_panicking_sandbox_fails_its_package_only() {
    let bench = Bench::new(&[("boom", &[]), ("calm", &[])]);
    let sandbox = FakeSandbox::with(&[("boom", Behaviour::Panic)]);
    let (report, _) = bench.compile_with(&sandbox, 2, true, CancelToken::new());
    let s = statuses(&report);
    assert_eq!(s["boom"], PackageStatus::Failed);
    assert_eq!(s["calm"], PackageStatus::Compiled);
    assert!(matches!(
        report.failures[0].error,
        PackageError::Panicked(_)
    ));
}

#[test]
fn the_workers_bound_the_parallelism_and_the_summary_names_every_status() {
    let fan: Vec<(String, Vec<&str>)> = (0..6).map(|i| (format!("p{i}"), vec![])).collect();
    let packages: Vec<(&str, &[&str])> = fan
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let bench = Bench::new(&packages);
    let behaviours: Vec<(&str, Behaviour)> = fan
        .iter()
        .map(|(n, _)| (n.as_str(), Behaviour::Slow(Duration::from_millis(20))))
        .collect();
    let sandbox = FakeSandbox::with(&behaviours);
    let (report, _) = bench.compile_with(&sandbox, 3, false, CancelToken::new());
    assert_eq!(sandbox.most_running.load(Ordering::SeqCst), 3);
    let path = bench.tmp.path().join("summary.json");
    write_summary(&path, &report.packages, report.wall.as_secs_f64()).unwrap();
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let packages = summary["packages"].as_array().unwrap();
    assert_eq!(packages.len(), 6);
    for p in packages {
        assert_eq!(p["status"], "compiled");
        assert_eq!(p["cache_key"].as_str().unwrap().len(), 64);
        assert!(p["log"].as_str().unwrap().ends_with(".log"));
    }
    assert!(summary["wall_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn a_size_policy_evicts_the_least_recently_used_and_the_rest_stays_cached() {
    let names = ["a1", "a2", "b1", "b2", "c1", "c2"];
    let packages: Vec<(&str, &[&str])> = names.iter().map(|n| (*n, &[][..])).collect();
    let bench = Bench::new(&packages);
    let behaviours: Vec<(&str, Behaviour)> = names
        .iter()
        .map(|n| (*n, Behaviour::Big(200_000)))
        .collect();
    let sandbox = FakeSandbox::with(&behaviours);
    // Three "releases" compiled in turn, then the first again (all cached: a use all the same).
    for group in [["a1", "a2"], ["b1", "b2"], ["c1", "c2"], ["a1", "a2"]] {
        bench.compile_only(&sandbox, &group);
    }
    assert_eq!(sandbox.started().len(), 6);
    // Each package is ~400 kB (its layer and its unpacked copy): room for four of them.
    let usage = fissile_oci::cache::disk_usage(bench.wd.root());
    let _lock = bench.wd.lock(false, |_| {}).unwrap();
    let report = fissile_oci::cache::collect(
        &bench.wd,
        &fissile_oci::cache::Policy {
            max_size: Some(usage - 600_000),
            max_age: None,
        },
    )
    .unwrap();
    let evicted: Vec<&str> = report
        .evicted
        .iter()
        .map(|v| v.name.split('-').nth(1).unwrap())
        .collect();
    assert_eq!(evicted, ["b1", "b2"], "{report:?}");
    assert!(report.usage_after <= usage - 600_000, "{report:?}");
    assert_eq!(
        report.blobs_removed, 6,
        "layer, config and manifest of each"
    );
    assert_eq!(report.dirs_removed, 2, "their unpacked copies");
    assert_eq!(report.logs_removed, 2);
    // a and c are still cached; b compiles again.
    let again = FakeSandbox::with(&behaviours);
    let all = bench.compile(&again);
    let mut started = again.started();
    started.sort();
    assert_eq!(started, ["b1", "b2"]);
    assert!(all.failures.is_empty());
}

#[test]
fn collecting_removes_what_killed_runs_left_and_what_no_image_reaches() {
    let bench = Bench::new(CHAIN);
    let report = bench.compile(&FakeSandbox::default());
    // A run dir whose owner is gone (this pid with another start time never existed), one with
    // no owner file at all, and one of a live process (this one), which must stay.
    let runs = bench.wd.runs();
    std::fs::create_dir_all(runs.join("dead/pkg-0123/source")).unwrap();
    std::fs::write(
        runs.join("dead/owner"),
        format!("{} 1\n", std::process::id()),
    )
    .unwrap();
    std::fs::create_dir_all(runs.join("base-crashed/rootfs")).unwrap();
    let live = fissile_oci::workdir::RunDir::create(&bench.wd, "live-").unwrap();
    // An image dropped from the store: its blobs, unpacked copy and log go too.
    let d = report.packages.iter().find(|p| p.name == "d").unwrap();
    bench
        .store
        .remove_refs(&[format!("pkg-d-{}", d.cache_key)])
        .unwrap();
    let _lock = bench.wd.lock(false, |_| {}).unwrap();
    let collected =
        fissile_oci::cache::collect(&bench.wd, &fissile_oci::cache::Policy::default()).unwrap();
    let mut removed: Vec<String> = collected
        .runs_removed
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    removed.sort();
    assert_eq!(removed, ["base-crashed", "dead"]);
    assert!(live.path().is_dir());
    assert!(collected.evicted.is_empty());
    assert_eq!(collected.blobs_removed, 3);
    assert_eq!(collected.dirs_removed, 1);
    assert_eq!(collected.logs_removed, 1);
    assert!(!bench.wd.packages().join(&d.cache_key).exists());
    assert!(!bench.wd.package_log("d", &d.cache_key).exists());
    // The others are untouched and still cached.
    let again = FakeSandbox::default();
    bench.compile(&again);
    assert_eq!(again.started(), ["d"]);
}

#[test]
fn a_build_that_fills_its_tmpfs_is_compiled_again_on_disk_with_a_line_saying_so() {
    let bench = Bench::new(&[("big", &[]), ("broken", &[]), ("small", &["big"])]);
    let sandbox = FakeSandbox::with(&[
        ("big", Behaviour::OutgrowsTmpfs),
        ("broken", Behaviour::Exit(1)),
    ]);
    let mut options = options(2, true);
    options.scratch_space = ScratchSpace::Tmpfs { size: 64 << 20 };
    let (report, events) = bench.compile_with_options(&sandbox, options, CancelToken::new());
    let status = statuses(&report);
    assert_eq!(status["big"], PackageStatus::Compiled, "{events:#?}");
    assert_eq!(status["small"], PackageStatus::Compiled);
    assert_eq!(
        status["broken"],
        PackageStatus::Failed,
        "a plain failure stays one"
    );
    let started = sandbox.started();
    let runs = |name: &str| started.iter().filter(|s| *s == name).count();
    assert_eq!((runs("big"), runs("broken"), runs("small")), (2, 1, 1));
    let note = events
        .iter()
        .position(|e| e.starts_with("note big:"))
        .expect("a line says why big ran twice");
    assert!(
        events[note].contains("64 MiB tmpfs") && events[note].contains("on disk"),
        "{}",
        events[note]
    );
    assert_eq!(
        events[note + 1],
        "compiled big",
        "the note comes with the package's end"
    );
    assert!(!events.iter().any(|e| e.starts_with("note broken")));
    // The second run started from an empty install dir: nothing of the first is published.
    let big = report.packages.iter().find(|p| p.name == "big").unwrap();
    let published = bench.wd.packages().join(&big.cache_key);
    assert!(published.join("built-by-fake").is_file());
    assert!(!published.join("half-written").exists());
}

#[test]
fn a_sandbox_without_a_tmpfs_is_said_once_and_the_compile_goes_on() {
    let bench = Bench::new(&[("a", &[]), ("b", &[]), ("c", &["a", "b"])]);
    let sandbox = FakeSandbox::with(&[
        ("a", Behaviour::NoTmpfsHere),
        ("b", Behaviour::NoTmpfsHere),
        ("c", Behaviour::NoTmpfsHere),
    ]);
    let mut options = options(1, false);
    options.scratch_space = ScratchSpace::Tmpfs { size: 64 << 20 };
    let (report, events) = bench.compile_with_options(&sandbox, options, CancelToken::new());
    assert!(report.failures.is_empty());
    let notes: Vec<&String> = events.iter().filter(|e| e.starts_with("note ")).collect();
    assert_eq!(notes.len(), 1, "{events:#?}");
    assert!(notes[0].contains("tmpfs refused by the fake") && notes[0].contains("disk"));
    assert_eq!(sandbox.started().len(), 3, "no package ran twice");
}

/// The base's stemcell, as `base build` records it.
fn with_stemcell(bench: &mut Bench, stemcell: Option<&str>) {
    let mut notes = std::collections::HashMap::new();
    if let Some(s) = stemcell {
        let (os, version) = s.split_once('/').unwrap();
        notes.insert(STEMCELL_OS_ANNOTATION.to_string(), os.to_string());
        notes.insert(STEMCELL_VERSION_ANNOTATION.to_string(), version.to_string());
    }
    bench.base.descriptor.set_annotations(Some(notes));
}

/// An extracted compiled release of the bench's source packages `names` (same names,
/// fingerprints and dependencies), each archive holding `built-by-fake` = "`tag` NAME".
fn compiled_release_of(
    bench: &Bench,
    name: &str,
    stemcell: &str,
    names: &[&str],
    tag: &str,
) -> PathBuf {
    let source = bench.plan();
    let root = bench.tmp.path().join(name);
    std::fs::create_dir_all(root.join("compiled_packages")).unwrap();
    let mut manifest = format!("name: {name}\nversion: '1'\ncompiled_packages:\n");
    for package in source.releases[0]
        .packages
        .iter()
        .filter(|p| names.contains(&p.name.as_str()))
    {
        let content = format!("{tag} {}", package.name);
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "./built-by-fake", content.as_bytes())
            .unwrap();
        let archive = builder.into_inner().unwrap();
        let file = root.join(format!("compiled_packages/{}.tgz", package.name));
        std::fs::write(&file, &archive).unwrap();
        use sha1::Digest as _;
        manifest.push_str(&format!(
            "- name: {}\n  version: {fp}\n  fingerprint: {fp}\n  sha1: {}\n  stemcell: {stemcell}\n  dependencies: [{}]\n",
            package.name,
            hex::encode(sha1::Sha1::digest(&archive)),
            package.dependencies.join(", "),
            fp = package.fingerprint,
        ));
    }
    std::fs::write(root.join("release.MF"), manifest).unwrap();
    root
}

impl Bench {
    fn plan_of(&self, paths: &[PathBuf]) -> Plan {
        let load = LoadOptions::new(self.tmp.path().join("bosh-cache"));
        load_plan(
            &PlanRequest {
                paths,
                load: &load,
                role_manifest: None,
                roles: None,
                only_releases: None,
            },
            &mut |_, _| {},
        )
        .unwrap()
    }

    /// Compiles the bench's release and `others`; the report's lines for the bench's release.
    fn compile_among(&self, sandbox: &FakeSandbox, others: &[PathBuf]) -> CompileReport {
        let mut paths = vec![self.release.clone()];
        paths.extend(others.iter().cloned());
        let options = CompileOptions {
            workers: 2,
            keep_going: false,
            keep_sandbox: false,
            network: Network::None,
            timeout: None,
            memory_limit: None,
            scratch_space: ScratchSpace::Disk,
            limits: ExtractLimits::default(),
            source_date_epoch: 0,
            shard: None,
            shard_wait: Duration::ZERO,
        };
        Compiler {
            wd: &self.wd,
            store: &self.store,
            base: &self.base,
            sandbox,
            options: &options,
            context: Default::default(),
        }
        .compile(
            &self.plan_of(&paths),
            CancelToken::new(),
            &mut Metrics::none(),
            &mut |_| {},
        )
        .unwrap()
    }
}

/// Status and key of each package of `release`.
fn of_release(report: &CompileReport, release: &str) -> BTreeMap<String, (PackageStatus, String)> {
    report
        .packages
        .iter()
        .filter(|p| p.release == release)
        .map(|p| (p.name.clone(), (p.status, p.cache_key.clone())))
        .collect()
}

#[test]
fn imports_stand_in_for_compiles_when_the_bases_stemcell_is_served() {
    let mut bench = Bench::new(CHAIN);
    with_stemcell(&mut bench, Some("ubuntu-jammy/1.400"));
    let compiled = compiled_release_of(&bench, "cr", "ubuntu-jammy/1.329", &["a", "b"], "imported");
    let sandbox = FakeSandbox::default();
    let report = bench.compile_among(&sandbox, &[compiled]);
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let mut started = sandbox.started();
    started.sort();
    assert_eq!(
        started,
        ["c", "d"],
        "a and b come from the compiled release"
    );
    let source = of_release(&report, "fake");
    let imported = of_release(&report, "cr");
    for name in ["a", "b"] {
        assert_eq!(source[name].0, PackageStatus::Imported);
        assert_eq!(imported[name].0, PackageStatus::Imported);
        assert_eq!(
            source[name].1, imported[name].1,
            "{name} stands in under its import key"
        );
    }
    assert_eq!(source["c"].0, PackageStatus::Compiled);
    // c was compiled against the imported b, and is keyed by it.
    assert_eq!(sandbox.mounted.lock().unwrap()["c"]["b"], "imported b");

    // The next run, without the compiled release: the store's import still stands in.
    let again = FakeSandbox::default();
    let report = bench.compile_among(&again, &[]);
    assert!(again.started().is_empty(), "{:?}", again.started());
    let s = statuses(&report);
    assert_eq!(s["a"], PackageStatus::Imported);
    assert_eq!(s["c"], PackageStatus::Cached);
}

#[test]
fn no_import_stands_in_across_major_versions_or_operating_systems_or_without_a_stemcell() {
    for base in [Some("ubuntu-jammy/2.1"), Some("ubuntu-noble/1.329"), None] {
        let mut bench = Bench::new(CHAIN);
        with_stemcell(&mut bench, base);
        let compiled =
            compiled_release_of(&bench, "cr", "ubuntu-jammy/1.329", &["a", "b"], "imported");
        let sandbox = FakeSandbox::default();
        let report = bench.compile_among(&sandbox, &[compiled]);
        assert_eq!(sandbox.started().len(), 4, "{base:?}: everything compiles");
        assert!(of_release(&report, "fake")
            .values()
            .all(|(s, _)| *s == PackageStatus::Compiled));
        assert!(of_release(&report, "cr")
            .values()
            .all(|(s, _)| *s == PackageStatus::Imported));
    }
}

#[test]
fn the_exact_stemcell_wins_then_the_newest_of_its_major_version() {
    let one: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"])];
    for (base, expected) in [
        ("ubuntu-jammy/1.329", "from 1.329"),
        ("ubuntu-jammy/1.500", "from 1.400"),
        ("ubuntu-jammy/1.100", "from 1.400"),
    ] {
        let mut bench = Bench::new(one);
        with_stemcell(&mut bench, Some(base));
        let older =
            compiled_release_of(&bench, "cr-old", "ubuntu-jammy/1.329", &["a"], "from 1.329");
        let newer =
            compiled_release_of(&bench, "cr-new", "ubuntu-jammy/1.400", &["a"], "from 1.400");
        // Imported in an earlier run of their own: the choice is made from the store's
        // annotations.
        let options = CompileOptions {
            workers: 1,
            keep_going: false,
            keep_sandbox: false,
            network: Network::None,
            timeout: None,
            memory_limit: None,
            scratch_space: ScratchSpace::Disk,
            limits: ExtractLimits::default(),
            source_date_epoch: 0,
            shard: None,
            shard_wait: Duration::ZERO,
        };
        let imports = fissile_oci::compile::import_only(
            &bench.plan_of(&[older, newer]),
            &bench.wd,
            &bench.store,
            &options,
            &mut |_| {},
        )
        .unwrap();
        assert!(imports
            .packages
            .iter()
            .all(|p| p.status == PackageStatus::Imported));
        let sandbox = FakeSandbox::default();
        let report = bench.compile_among(&sandbox, &[]);
        assert_eq!(sandbox.started(), ["b"], "{base}");
        assert_eq!(statuses(&report)["a"], PackageStatus::Imported);
        assert_eq!(
            sandbox.mounted.lock().unwrap()["b"]["a"],
            format!("{expected} a"),
            "{base}"
        );
    }
}

#[test]
fn what_depends_on_an_import_is_keyed_by_it() {
    let one: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"])];
    let mut plain = Bench::new(one);
    with_stemcell(&mut plain, Some("ubuntu-jammy/1.329"));
    let compiled_here = statuses_and_keys(&plain.compile_among(&FakeSandbox::default(), &[]));
    let mut bench = Bench::new(one);
    with_stemcell(&mut bench, Some("ubuntu-jammy/1.329"));
    let compiled = compiled_release_of(&bench, "cr", "ubuntu-jammy/1.329", &["a"], "imported");
    let with_import = of_release(
        &bench.compile_among(&FakeSandbox::default(), &[compiled]),
        "fake",
    );
    assert_eq!(with_import["a"].0, PackageStatus::Imported);
    assert_eq!(with_import["b"].0, PackageStatus::Compiled);
    assert_ne!(with_import["b"].1, compiled_here["b"].1, "b used another a");
    assert_ne!(with_import["a"].1, compiled_here["a"].1);
}

fn statuses_and_keys(report: &CompileReport) -> BTreeMap<String, (PackageStatus, String)> {
    report
        .packages
        .iter()
        .map(|p| (p.name.clone(), (p.status, p.cache_key.clone())))
        .collect()
}

#[test]
fn two_compiled_releases_with_different_files_for_one_package_keep_their_own() {
    let bench = Bench::new(&[("a", &[])]);
    let first = compiled_release_of(&bench, "cr-one", "ubuntu-jammy/1.329", &["a"], "first");
    let second = compiled_release_of(&bench, "cr-two", "ubuntu-jammy/1.329", &["a"], "second");
    let options = CompileOptions {
        workers: 1,
        keep_going: false,
        keep_sandbox: false,
        network: Network::None,
        timeout: None,
        memory_limit: None,
        scratch_space: ScratchSpace::Disk,
        limits: ExtractLimits::default(),
        source_date_epoch: 0,
        shard: None,
        shard_wait: Duration::ZERO,
    };
    let report = fissile_oci::compile::import_only(
        &bench.plan_of(&[first, second]),
        &bench.wd,
        &bench.store,
        &options,
        &mut |_| {},
    )
    .unwrap();
    let key = |release: &str| of_release(&report, release)["a"].1.clone();
    assert_ne!(key("cr-one"), key("cr-two"));
    for (release, tag) in [("cr-one", "first"), ("cr-two", "second")] {
        let published = bench.wd.packages().join(key(release));
        assert_eq!(
            std::fs::read_to_string(published.join("built-by-fake")).unwrap(),
            format!("{tag} a")
        );
    }
}
