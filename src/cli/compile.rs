//! `fissile-oci compile`: the main job. Loads and plans the releases, makes sure the compilation
//! base exists, compiles what the cache does not have (importing what compiled releases bring),
//! and reports every package. `export` runs the same compile first.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use fissile_oci::base::{self, BaseChoice, CompilationBase};
use fissile_oci::cache::Policy;
use fissile_oci::cancel::CancelToken;
use fissile_oci::compile::report::{self, Metrics};
use fissile_oci::compile::scratch;
use fissile_oci::compile::{
    CompileOptions, CompileReport, Compiler, PackageStatus, RunContext, Shard,
};
use fissile_oci::oci::OciStore;
use fissile_oci::plan::Plan;
use fissile_oci::rootless::check::{self, Needs};
use fissile_oci::sandbox::{
    v2_device_rules_problem, CgroupSupport, HostContext, LibcontainerSandbox, Network, SandboxError,
};
use fissile_oci::shared_cache::{Notify, SharedCache};
use fissile_oci::workdir::{WorkDir, WorkDirLock};

use super::args::{
    memory_limit, parse_duration, parse_size, CacheArgs, NetworkArg, PrerequisitesArgs,
    RegistryArgs, ReleaseArgs, ScratchArg,
};
use super::progress::Display;
use super::{interrupt, LogFormat, Printer};

#[derive(Args, Debug)]
pub struct CompileArgs {
    #[command(flatten)]
    pub releases: ReleaseArgs,
    /// Compilation base or base to compile on [default: debian-<host suite>, built on first use]
    #[arg(
        long,
        visible_alias = "stemcell",
        value_name = "REF",
        env = "FISSILE_OCI_BASE"
    )]
    pub base: Option<String>,
    #[command(flatten)]
    pub prerequisites: PrerequisitesArgs,
    /// Compile everything that does not depend on a failure, then report all failures
    #[arg(long, env = "FISSILE_OCI_KEEP_GOING")]
    pub keep_going: bool,
    #[command(flatten)]
    pub run: PackageRunArgs,
    /// After compiling, evict least recently used images until the work dir is at most SIZE
    /// (e.g. 5G): keeps a CI runner's cache under its quota with no extra step
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "FISSILE_OCI_MAX_SIZE")]
    pub gc_max_size: Option<u64>,
    /// Accepted for fissile's scripts: fissile-oci never uses a container daemon
    #[arg(long)]
    pub without_docker: bool,
    /// Compile shard I of N (1 <= I <= N) of the packages, for N runners started at once by a
    /// CI matrix: every shard computes the same split, compiles its part and pulls what it needs
    /// of the others' from --cache as they push it; a final unsharded run pulls everything
    #[arg(
        long,
        value_name = "I/N",
        requires = "cache",
        env = "FISSILE_OCI_SHARD"
    )]
    pub shard: Option<Shard>,
    /// With --shard: how long (from the start) to wait for packages other shards compile;
    /// past it, what is still missing is compiled here
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30m",
        value_parser = parse_duration,
        env = "FISSILE_OCI_SHARD_WAIT"
    )]
    pub shard_wait: Duration,
}

/// How packages are compiled and reported, for every command that compiles (`compile`,
/// `export`, `image`).
#[derive(Args, Debug)]
pub struct PackageRunArgs {
    /// Packages compiled at once [default: number of cores]
    #[arg(
        short = 'j',
        long = "workers",
        short_alias = 'W',
        value_name = "N",
        env = "FISSILE_OCI_WORKERS"
    )]
    pub workers: Option<usize>,
    /// Keep a failed package's scratch dir and print the command that reopens it
    #[arg(long)]
    pub keep_sandbox: bool,
    /// Network inside compiles: none (loopback only) or host
    #[arg(
        long,
        visible_alias = "docker-network-mode",
        value_enum,
        default_value_t = NetworkArg::None,
        env = "FISSILE_OCI_NETWORK"
    )]
    pub network: NetworkArg,
    /// Kill a package's compile after this many seconds
    #[arg(long, value_name = "SECS", env = "FISSILE_OCI_TIMEOUT")]
    pub timeout: Option<u64>,
    /// Memory limit per compile, e.g. 4G (needs a usable cgroup)
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "FISSILE_OCI_MEMORY")]
    pub memory: Option<u64>,
    /// Where package build trees go: a private tmpfs per package (nothing touches the disk, all
    /// freed at once when the package ends; `auto` uses one when half of the available memory,
    /// shared by the packages compiled at once, gives each at least 256 MiB, and not with
    /// --memory or --keep-sandbox), or the work dir's disk. A package whose build fills its
    /// tmpfs is compiled again on disk, with a line saying so
    #[arg(
        long,
        value_enum,
        value_name = "WHERE",
        default_value_t = ScratchArg::Auto,
        env = "FISSILE_OCI_SCRATCH"
    )]
    pub scratch: ScratchArg,
    /// Size of each package's tmpfs [default: half the available memory / --workers]
    #[arg(long, value_name = "SIZE", value_parser = parse_size, env = "FISSILE_OCI_SCRATCH_SIZE")]
    pub scratch_size: Option<u64>,
    /// Append fissile-style timing metrics (CSV) to FILE
    #[arg(short = 'M', long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Write the package graph, coloured by outcome, as DOT to FILE
    #[arg(long, value_name = "FILE")]
    pub graph: Option<PathBuf>,
    /// Write a JSON summary of every package to FILE
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Exit 2 instead of waiting when another run holds the work dir
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub shared: CacheArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// What every command that compiles sets up first: the plan, the locked work dir, the store,
/// the sandbox and the compilation base.
pub struct Session {
    pub plan: Plan,
    pub wd: WorkDir,
    pub lock: WorkDirLock,
    pub store: OciStore,
    pub sandbox: LibcontainerSandbox,
    pub base: CompilationBase,
}

/// What chooses (and, on first use, builds) the compilation base of a [`Session`].
pub struct BaseOptions<'a> {
    /// `--base`; `None` for the default.
    pub base: Option<&'a str>,
    pub prerequisites: &'a PrerequisitesArgs,
    /// Network for the prerequisites script.
    pub network: Network,
    /// Stops building the bases.
    pub cancel: &'a CancelToken,
}

impl Session {
    pub fn open(
        releases: &ReleaseArgs,
        base_options: BaseOptions<'_>,
        wait: bool,
        work_dir: Option<&Path>,
        printer: Printer,
    ) -> anyhow::Result<Session> {
        let BaseOptions {
            base,
            prerequisites,
            network,
            cancel,
        } = base_options;
        let plan = super::inspect::load_plan(releases, printer)?;
        let (wd, lock, store) = open_store(work_dir, wait, printer)?;
        preflight(base, &store, printer)?;
        let sandbox = LibcontainerSandbox::from_current_exe()?;
        let script = prerequisites.script()?;
        let base = base::resolve_compilation_base(
            &wd,
            &store,
            &sandbox,
            &BaseChoice {
                base,
                script: &script,
                network,
                cancel,
            },
            &mut printer.progress(Instant::now()),
        )?;
        printer.detail(format_args!(
            "compilation base {} ({}){}",
            base.name,
            base.descriptor.digest(),
            base.stemcell()
                .map(|s| format!(", stemcell {s}"))
                .unwrap_or_default()
        ));
        Ok(Session {
            plan,
            wd,
            lock,
            store,
            sandbox,
            base,
        })
    }
}

/// The work dir, locked for a compile (shared with other compiles; waiting for a `cache gc`
/// when `wait`), and its store.
fn open_store(
    work_dir: Option<&Path>,
    wait: bool,
    printer: Printer,
) -> anyhow::Result<(WorkDir, WorkDirLock, OciStore)> {
    let wd = WorkDir::resolve(work_dir)?;
    let lock = wd.lock_shared(wait, |holder| {
        printer.info(format_args!(
            "waiting for {holder} to finish with {}",
            wd.root().display()
        ))
    })?;
    let store = OciStore::open_or_create(&wd.oci())?;
    Ok((wd, lock, store))
}

/// Rootless, the default base is bootstrapped on first use, and mmdebstrap's unshare mode
/// needs subordinate ids: checked before minutes of work, not after. Says what can be done
/// without (a notice), refuses what cannot.
fn preflight(base: Option<&str>, store: &OciStore, printer: Printer) -> anyhow::Result<()> {
    // As root on a cgroup v2 host, every sandbox loads the device rules: refused up front,
    // not by each package.
    if nix::unistd::geteuid().is_root() && HostContext::detect().cgroups == CgroupSupport::V2 {
        if let Some(problem) = v2_device_rules_problem() {
            return Err(SandboxError::DeviceRules { problem }.into());
        }
    }
    let bootstraps = base.is_none() && store.resolve(&base::default_base_tag())?.is_none();
    let needs = Needs {
        subordinate_ids: bootstraps,
        mmdebstrap: bootstraps,
    };
    let work = if bootstraps {
        format!(
            "compile (the default base {} is built first)",
            base::default_base_tag()
        )
    } else {
        "compile".to_string()
    };
    if let Some(notice) = check::preflight(needs, &work)? {
        printer.info(format_args!("{notice}"));
    }
    Ok(())
}

/// How a compile runs, resolved from the flags of `compile` or `export`.
pub struct Settings<'a> {
    pub base: Option<&'a str>,
    pub prerequisites: &'a PrerequisitesArgs,
    pub options: CompileOptions,
    pub wait: bool,
    pub metrics: Option<&'a Path>,
    pub graph: Option<&'a Path>,
    pub summary: Option<&'a Path>,
    /// The shared cache, and how to reach its registry.
    pub cache: Option<(&'a CacheArgs, &'a RegistryArgs)>,
    /// Where the build trees go, and why (shown with -v when something is compiled).
    pub scratch_why: String,
}

impl CompileArgs {
    pub fn settings(&self) -> anyhow::Result<Settings<'_>> {
        self.run.settings(
            self.base.as_deref(),
            &self.prerequisites,
            &self.releases,
            Scope {
                keep_going: self.keep_going,
                shard: self.shard,
                shard_wait: self.shard_wait,
            },
        )
    }
}

/// What differs between the commands that compile: whether to go on after a failure, and
/// which part of the plan this runner compiles.
pub struct Scope {
    pub keep_going: bool,
    pub shard: Option<Shard>,
    pub shard_wait: Duration,
}

impl PackageRunArgs {
    pub fn settings<'a>(
        &'a self,
        base: Option<&'a str>,
        prerequisites: &'a PrerequisitesArgs,
        releases: &ReleaseArgs,
        scope: Scope,
    ) -> anyhow::Result<Settings<'a>> {
        let workers = workers(self.workers);
        let memory = self.memory.map(memory_limit);
        let scratch = scratch_space(
            self.scratch.into(),
            self.scratch_size,
            workers,
            self.keep_sandbox,
            memory,
        )?;
        Ok(Settings {
            base,
            prerequisites,
            options: CompileOptions {
                workers,
                keep_going: scope.keep_going,
                keep_sandbox: self.keep_sandbox,
                network: self.network.into(),
                timeout: self.timeout.map(Duration::from_secs),
                memory_limit: memory,
                scratch_space: scratch.space,
                limits: releases.limits(),
                source_date_epoch: fissile_oci::clock::source_date_epoch(),
                shard: scope.shard,
                shard_wait: scope.shard_wait,
            },
            wait: !self.no_wait,
            metrics: self.metrics.as_deref(),
            graph: self.graph.as_deref(),
            summary: self.summary.as_deref(),
            cache: Some((&self.shared, &self.registry)),
            scratch_why: scratch.why,
        })
    }
}

/// Where the workers' notices go: `warning: …` lines, or JSON `warning` events.
pub fn notifier(printer: Printer) -> Notify {
    std::sync::Arc::new(move |message: &str| {
        if printer.quiet {
            return;
        }
        if printer.log_format == LogFormat::Json {
            eprintln!(
                "{}",
                serde_json::json!({"event": "warning", "message": message})
            );
        } else {
            eprintln!("warning: {message}");
        }
    })
}

/// Where the compile's build trees go (`--scratch`, `--scratch-size`), given the host's
/// available memory.
pub fn scratch_space(
    choice: scratch::ScratchChoice,
    size: Option<u64>,
    workers: usize,
    keep_sandbox: bool,
    memory: Option<i64>,
) -> anyhow::Result<scratch::ScratchDecision> {
    scratch::decide(
        choice,
        size,
        workers,
        keep_sandbox,
        memory,
        scratch::mem_available(),
    )
    .map_err(anyhow::Error::msg)
}

/// `-j N`, or one worker per core.
pub fn workers(asked: Option<usize>) -> usize {
    asked
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}

/// A finished compile: the plan, every package's outcome, and the store that holds them.
pub struct Compiled {
    pub wd: WorkDir,
    pub plan: Plan,
    pub report: CompileReport,
    pub store: OciStore,
    /// The compilation base, when the plan needed one (not for compiled releases only).
    pub base: Option<CompilationBase>,
    /// The compilation base's stemcell identity, when there was a base and it has one.
    pub stemcell: Option<fissile_oci::release::Stemcell>,
    /// Whether an interrupt stopped the run.
    pub interrupted: bool,
    lock: Option<WorkDirLock>,
}

impl Compiled {
    /// Lets other runs have the work dir.
    pub fn unlock(&mut self) {
        self.lock = None;
    }
}

/// Loads and plans the releases, then compiles what is not cached on the compilation base
/// (built on first use), importing what compiled releases bring; writes the summary, graph and
/// metrics. A plan of compiled releases only needs no base and no sandbox.
pub fn compile_releases(
    releases: &ReleaseArgs,
    settings: &Settings<'_>,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<Compiled> {
    let mut metrics =
        Metrics::open(settings.metrics).with_context(|| "cannot open the metrics file")?;
    let plan = super::inspect::load_plan(releases, printer)?;
    let (wd, lock, store) = open_store(work_dir, settings.wait, printer)?;
    let cache = match settings.cache {
        Some((cache, registry)) => cache.open(registry, &wd, printer)?,
        None => None,
    };
    metrics.stamp("compile-packages", "start");
    let mut display = Display::new(printer);
    // Installed first: building the default base on first use takes minutes, and an
    // interrupted build must remove what it wrote (rootless, the user could not).
    let cancel = CancelToken::new();
    let interrupted = interrupt::install(cancel.clone());
    let (result, stemcell, base) = if plan.needs_compiling() {
        let sandbox = LibcontainerSandbox::from_current_exe()?;
        let script = settings.prerequisites.script()?;
        let (base, push_base) = compilation_base(
            &wd,
            &store,
            &sandbox,
            settings,
            &script,
            &cancel,
            cache.as_ref(),
            printer,
        )?;
        let stemcell = base.stemcell();
        printer.detail(format_args!("scratch: {}", settings.scratch_why));
        printer.detail(format_args!(
            "compilation base {} ({}){}",
            base.name,
            base.descriptor.digest(),
            stemcell
                .as_ref()
                .map(|s| format!(", stemcell {s}"))
                .unwrap_or_default()
        ));
        let compiler = Compiler {
            wd: &wd,
            store: &store,
            base: &base,
            sandbox: &sandbox,
            options: &settings.options,
            context: RunContext {
                cache: cache.as_ref(),
                push_base,
                notify: Some(notifier(printer)),
            },
        };
        let result = compiler.compile(&plan, cancel, &mut metrics, &mut |p| display.show(p));
        (result, stemcell, Some(base))
    } else {
        let result =
            fissile_oci::compile::import_only(&plan, &wd, &store, &settings.options, &mut |p| {
                display.show(p)
            });
        (result, None, None)
    };
    display.finish();
    metrics.stamp("compile-packages", "done");
    let mut report = result?;

    // Dependencies by name, for the graph.
    for (i, node) in plan.nodes.iter().enumerate() {
        report.packages[i].dependencies = node
            .dependencies
            .iter()
            .map(|&d| plan.nodes[d].name.clone())
            .collect();
    }
    if let Some(path) = settings.summary {
        report::write_summary_with(
            path,
            &report.packages,
            report.wall.as_secs_f64(),
            report.cache.as_ref(),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = settings.graph {
        report::write_graph(path, &report.packages)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let interrupted = report.interrupted || interrupted.load(Ordering::SeqCst);
    Ok(Compiled {
        wd,
        plan,
        report,
        store,
        base,
        stemcell,
        interrupted,
        lock: Some(lock),
    })
}

/// The compilation base of a compile. With a shared cache, the fleet's: the one the cache has
/// for what was asked (`--base`, the script, this version), pulled by digest if this work dir
/// lacks it, whatever bytes its own base has; else the one found or built here, which the run
/// then pushes (the returned tag). One run at a time builds or pulls a base in a work dir.
#[allow(clippy::too_many_arguments)]
fn compilation_base(
    wd: &WorkDir,
    store: &OciStore,
    sandbox: &LibcontainerSandbox,
    settings: &Settings<'_>,
    script: &str,
    cancel: &CancelToken,
    cache: Option<&SharedCache>,
    printer: Printer,
) -> anyhow::Result<(CompilationBase, Option<String>)> {
    let asked = settings
        .base
        .map(str::to_string)
        .unwrap_or_else(base::default_base_tag);
    let lock_name = {
        use sha2::Digest as _;
        let hash = hex::encode(sha2::Sha256::digest(
            format!("{asked}\n{script}").as_bytes(),
        ));
        format!("base-{}", &hash[..16])
    };
    let Some(_lock) = wd.lock_name(&lock_name, cancel, || {
        printer.info(format_args!(
            "waiting for another run on this work dir to make the compilation base for {asked}"
        ))
    })?
    else {
        return Err(base::BaseError::Interrupted { tag: asked }.into());
    };
    let resolve = |base: Option<&str>| -> anyhow::Result<CompilationBase> {
        preflight(base, store, printer)?;
        Ok(base::resolve_compilation_base(
            wd,
            store,
            sandbox,
            &BaseChoice {
                base,
                script,
                network: settings.options.network,
                cancel,
            },
            &mut printer.progress(Instant::now()),
        )?)
    };
    let Some(cache) = cache.filter(|c| c.usable()) else {
        return Ok((resolve(settings.base)?, None));
    };
    let tag = fissile_oci::shared_cache::base_tag(&asked, script, env!("CARGO_PKG_VERSION"));
    let found = match cache.lookup(&tag) {
        Ok(found) => found,
        Err(e) => {
            if let Some(required) = cache.failed(&e, false) {
                return Err(required.into());
            }
            None
        }
    };
    let Some(found) = found else {
        let base = resolve(settings.base)?;
        let push = (cache.mode() == fissile_oci::shared_cache::CacheMode::ReadWrite).then_some(tag);
        return Ok((base, push));
    };
    let digest = found.digest().to_string();
    // The fleet's base: this work dir's under any name, else pulled.
    let have = store.refs()?.into_iter().find(|r| {
        r.descriptor.digest().as_ref() == digest && base::is_compilation_base(&r.descriptor)
    });
    let name = match have {
        Some(entry) => Some(entry.name),
        None => match cache.fetch_base(store, &tag, &digest) {
            Ok(mut descriptor) => {
                let name = base::compilation_base_name_of(&descriptor)
                    .unwrap_or_else(|| format!("fissile-cbase-shared-{}", &digest[7..19]));
                let mut notes = fissile_oci::oci::store::annotations(&descriptor);
                notes.insert(
                    "org.opencontainers.image.created".into(),
                    fissile_oci::clock::now_rfc3339(),
                );
                descriptor.set_annotations(Some(notes.into_iter().collect()));
                store.set_ref(&name, &descriptor)?;
                printer.info(format_args!(
                    "compilation base {name} ({digest}) pulled from the shared cache {}: the fleet's, so keys match",
                    cache.repository()
                ));
                Some(name)
            }
            Err(e) => {
                if let Some(required) = cache.failed(&e, false) {
                    return Err(required.into());
                }
                None
            }
        },
    };
    match name {
        Some(name) => Ok((resolve(Some(&name))?, None)),
        None => Ok((resolve(settings.base)?, None)),
    }
}

pub fn run(
    args: CompileArgs,
    work_dir: Option<&Path>,
    printer: Printer,
) -> anyhow::Result<ExitCode> {
    if args.without_docker {
        printer.info("note: --without-docker changes nothing: fissile-oci never uses a daemon");
    }
    let mut compiled = compile_releases(&args.releases, &args.settings()?, work_dir, printer)?;
    let code = finish(&compiled, &args.releases, printer);
    if let Some(max_size) = args.gc_max_size {
        // A collection needs the work dir to itself: other compiles may be using it, and then
        // the last one to end collects. A failed collection costs only disk space.
        compiled.unlock();
        match compiled.wd.lock(false, |_| {}) {
            Ok(_lock) => {
                let policy = Policy {
                    max_size: Some(max_size),
                    max_age: None,
                };
                if let Err(e) = super::cache::collect(&compiled.wd, &policy, printer) {
                    printer.warn(format_args!("{e:#}"));
                }
            }
            Err(fissile_oci::workdir::WorkDirError::Busy { holder, .. }) => {
                printer.info(format_args!(
                    "--gc-max-size: not applied now, {holder} is using the work dir (a later run, or `cache gc --max-size`, applies it)"
                ))
            }
            Err(e) => printer.warn(format_args!("{e:#}")),
        }
    }
    Ok(code)
}

/// Prints the outcome and gives the exit code of a compile: 130 when interrupted, 1 when a
/// package failed, else 0.
pub fn finish(compiled: &Compiled, releases: &ReleaseArgs, printer: Printer) -> ExitCode {
    let report = &compiled.report;
    print_outcome(report, releases, printer);
    if compiled.interrupted {
        eprintln!("interrupted: running compiles were stopped and their scratch dirs removed");
        return ExitCode::from(130);
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The closing line (or JSON event) and every failure with the end of its log.
fn print_outcome(report: &CompileReport, releases: &ReleaseArgs, printer: Printer) {
    // Packages another shard compiles, which this one did not need, are not "skipped".
    let other_shards = report
        .packages
        .iter()
        .filter(|p| {
            p.status == PackageStatus::Skipped
                && p.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("shard ") && e.ends_with(" compiles it"))
        })
        .count();
    let skipped = report.count(PackageStatus::Skipped) + report.count(PackageStatus::Cancelled)
        - other_shards;
    if printer.log_format == LogFormat::Json {
        let cache = report.cache.as_ref().map(|c| {
            serde_json::json!({"repository": c.repository, "pulled": c.pulled, "pushed": c.pushed,
                "push_failures": c.push_failures.iter().map(|(what, why)| serde_json::json!({"image": what, "error": why})).collect::<Vec<_>>(),
                "down": c.down})
        });
        eprintln!(
            "{}",
            serde_json::json!({"event": "done", "total": report.packages.len(),
                "compiled": report.count(PackageStatus::Compiled), "cached": report.count(PackageStatus::Cached),
                "imported": report.count(PackageStatus::Imported), "pulled": report.count(PackageStatus::Pulled),
                "other_shards": other_shards,
                "failed": report.count(PackageStatus::Failed), "skipped": skipped, "wall_seconds": report.wall.as_secs_f64(),
                "shared_cache": cache,
                "failures": report.failures.iter().map(|f| serde_json::json!({"package": f.name, "error": f.error.to_string(), "log": f.log})).collect::<Vec<_>>()})
        );
    } else if !printer.quiet {
        let imported = match report.count(PackageStatus::Imported) {
            0 => String::new(),
            n => format!(", {n} imported"),
        };
        let pulled = match (&report.cache, report.count(PackageStatus::Pulled)) {
            (None, 0) => String::new(),
            (_, n) => format!(", {n} pulled"),
        };
        let others = match other_shards {
            0 => String::new(),
            n => format!(", {n} left to other shards"),
        };
        eprintln!(
            "{} packages: {} compiled, {} cached{pulled}{imported}, {} failed, {} skipped{others} in {:.1}s",
            report.packages.len(),
            report.count(PackageStatus::Compiled),
            report.count(PackageStatus::Cached),
            report.count(PackageStatus::Failed),
            skipped,
            report.wall.as_secs_f64()
        );
        if let Some(cache) = &report.cache {
            eprintln!(
                "shared cache {}: {} pulled, {} pushed{}",
                cache.repository,
                cache.pulled,
                cache.pushed,
                match cache.push_failures.len() {
                    0 => String::new(),
                    n => format!(", {n} pushes failed"),
                }
            );
        }
    }
    if let Some(cache) = &report.cache {
        for (what, why) in &cache.push_failures {
            printer.warn(format_args!(
                "push of {what} to the shared cache failed: {why}"
            ));
        }
    }
    for failure in &report.failures {
        eprintln!();
        eprintln!("error: package {} failed: {}", failure.name, failure.error);
        if let Some(log) = &failure.log {
            if !failure.log_tail.is_empty() {
                eprintln!(
                    "  last {} lines of {}:",
                    failure.log_tail.len(),
                    log.display()
                );
                for line in &failure.log_tail {
                    eprintln!("    {line}");
                }
            } else {
                eprintln!("  log: {}", log.display());
            }
        }
        if let Some(kept) = &failure.kept {
            eprintln!("  scratch dir kept: {}", kept.display());
            eprintln!(
                "  reopen it: fissile-oci shell {} {}",
                releases
                    .paths()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                failure.name
            );
        }
    }
}
