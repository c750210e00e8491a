//! A whole compile run: cache keys down the plan, cache hits restored, sources staged, the ready
//! packages run in sandboxes by the scheduler, each success published for its dependants at once
//! and committed to the store as a layer on a separate thread (off the critical path), and a
//! report of every package with the real error of each failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::image::Descriptor;

use super::key::{cache_key, package_ref};
use super::package::{
    publish_dir, restore_from_store, sandbox_spec, write_package_image, CompileInput,
};
use super::report::{Metrics, PackageReport};
use super::runner::CompileSandbox;
use super::scheduler::{self, CancelToken, Event, Graph, Node, RunOptions, Status};
use super::stage::{materialize_packages, stage_sources};
use crate::extract::ExtractLimits;
use crate::oci::{image, OciStore};
use crate::plan::Plan;
use crate::sandbox::Network;
use crate::workdir::WorkDir;

/// How to compile.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub workers: usize,
    pub keep_going: bool,
    /// Keep the scratch dir of failed packages (for `fissile-oci shell`).
    pub keep_sandbox: bool,
    pub network: Network,
    pub timeout: Option<Duration>,
    pub memory_limit: Option<i64>,
    pub limits: ExtractLimits,
    pub source_date_epoch: u64,
}

/// The compilation base, unpacked and ready to be a lower dir.
#[derive(Clone, Debug)]
pub struct CompilationBase {
    pub name: String,
    pub descriptor: Descriptor,
    pub rootfs: PathBuf,
    /// Path of bash inside the base.
    pub bash: String,
}

/// What the display is told, in order, from the scheduling thread.
#[derive(Debug)]
pub enum Progress<'a> {
    Planned { total: usize, cached: usize },
    Cached { name: &'a str },
    Started { name: &'a str, log: &'a Path },
    Finished { report: &'a PackageReport },
    Stopping { reason: String },
}

/// A failed package, with what a user needs to fix it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub name: String,
    pub error: String,
    pub log: Option<PathBuf>,
    pub log_tail: Vec<String>,
    /// The kept scratch dir, with --keep-sandbox.
    pub kept: Option<PathBuf>,
}

#[derive(Debug)]
pub struct CompileReport {
    pub packages: Vec<PackageReport>,
    pub failures: Vec<Failure>,
    pub interrupted: bool,
    pub wall: Duration,
}

#[derive(thiserror::Error, Debug)]
pub enum CompileError {
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    #[error(transparent)]
    Stage(#[from] super::stage::StageError),
    #[error(transparent)]
    Graph(#[from] scheduler::GraphError),
    #[error("{path}: i/o error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CompileError {
    let path = path.into();
    move |source| CompileError::Io { path, source }
}

/// Everything known about one plan node during the run.
struct Unit {
    name: String,
    release: String,
    fingerprint: String,
    key: String,
    dependencies: Vec<usize>,
    published: PathBuf,
    log: PathBuf,
    /// When the store has it: the digest of its layer.
    cached: Option<String>,
    /// (release, package) staged for this unit.
    member: (usize, usize),
}

pub struct Compiler<'a> {
    pub wd: &'a WorkDir,
    pub store: &'a OciStore,
    pub base: &'a CompilationBase,
    pub sandbox: &'a dyn CompileSandbox,
    pub options: &'a CompileOptions,
}

impl Compiler<'_> {
    pub fn compile(
        &self,
        plan: &Plan,
        cancel: CancelToken,
        metrics: &mut Metrics,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<CompileReport, CompileError> {
        let started = Instant::now();
        let base_digest = self.base.descriptor.digest().to_string();
        let mut units: Vec<Unit> = Vec::with_capacity(plan.nodes.len());
        for node in &plan.nodes {
            let deps: Vec<(String, String)> = node
                .dependencies
                .iter()
                .map(|&d| (units[d].name.clone(), units[d].key.clone()))
                .collect();
            let key = cache_key(&node.name, &node.fingerprint, &base_digest, &deps);
            let (rid, _) = node.members[0];
            units.push(Unit {
                name: node.name.clone(),
                release: plan.releases[rid].name.clone(),
                fingerprint: node.fingerprint.clone(),
                published: self.wd.packages().join(&key),
                log: self
                    .wd
                    .logs()
                    .join(format!("{}-{}.log", node.name, &key[..16])),
                key,
                dependencies: node.dependencies.clone(),
                cached: None,
                member: node.members[0],
            });
        }
        // One read of the index for all lookups: a no-op run over hundreds of packages must
        // not parse index.json once per package.
        let refs = self.store.ref_map()?;
        for unit in &mut units {
            unit.cached = self.cached(unit, &refs);
        }
        let cached_count = units.iter().filter(|u| u.cached.is_some()).count();
        progress(Progress::Planned {
            total: units.len(),
            cached: cached_count,
        });
        for unit in units.iter().filter(|u| u.cached.is_some()) {
            progress(Progress::Cached { name: &unit.name });
        }

        // The scheduler sees only what must be compiled; cached dependencies are satisfied.
        let todo: Vec<usize> = (0..units.len())
            .filter(|&i| units[i].cached.is_none())
            .collect();
        let position: HashMap<usize, usize> =
            todo.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
        let timings = Timings::load(&self.wd.logs());
        let graph_nodes: Vec<Node> = todo
            .iter()
            .map(|&i| {
                let deps = units[i]
                    .dependencies
                    .iter()
                    .filter_map(|d| position.get(d).copied())
                    .collect();
                Node::new(deps, timings.weight(&units[i].name, &units[i].fingerprint))
            })
            .collect();
        let graph = Graph::new(&graph_nodes)?;
        for &i in &todo {
            stamp(metrics, "::wait", &units[i], "start");
        }

        let run_dir = self.wd.runs().join(format!(
            "{}-{}",
            crate::compile::report::utc_now().replace([' ', ':'], ""),
            std::process::id()
        ));
        std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
        std::fs::create_dir_all(self.wd.logs()).map_err(io(self.wd.logs()))?;
        let archives = materialize_packages(
            todo.iter().map(|&i| {
                let (rid, pid) = plan.nodes[i].members[0];
                (i, &plan.releases[rid].packages[pid])
            }),
            &run_dir,
        )?;

        let failures_detail: Mutex<HashMap<usize, Failure>> = Mutex::new(HashMap::new());
        let commit_results: Mutex<HashMap<usize, Result<String, String>>> =
            Mutex::new(HashMap::new());
        let (commit_tx, commit_rx) = mpsc::channel::<(usize, CompileInput, PathBuf)>();
        let mut reports: Vec<Option<PackageReport>> = (0..units.len()).map(|_| None).collect();
        for (i, unit) in units.iter().enumerate() {
            if let Some(layer) = &unit.cached {
                reports[i] = Some(self.report(unit, "cached", 0.0, Some(layer.clone()), None));
            }
        }

        let options = RunOptions::new(self.options.workers)
            .keep_going(self.options.keep_going)
            .cancel_token(cancel.clone());
        let run_report = std::thread::scope(|scope| {
            let units = &units;
            let commit_results = &commit_results;
            // Layers are written by one committer thread while the next packages compile.
            scope.spawn(move || {
                while let Ok(first) = commit_rx.recv() {
                    // Whatever else finished meanwhile is named in the same index update.
                    let batch: Vec<(usize, CompileInput, PathBuf)> =
                        std::iter::once(first).chain(commit_rx.try_iter()).collect();
                    let mut named = Vec::new();
                    for (i, input, scratch) in batch {
                        let unit = &units[i];
                        let deps: Vec<String> = unit
                            .dependencies
                            .iter()
                            .map(|&d| units[d].name.clone())
                            .collect();
                        let result = write_package_image(
                            self.store,
                            &input,
                            &unit.published,
                            &deps,
                            self.base.descriptor.digest().as_ref(),
                        )
                        .map_err(|e| format!("storing the compiled package failed: {e}"));
                        let result = result.map(|image| {
                            named.push((i, package_ref(&unit.name, &unit.key), image.manifest));
                            image.layer_digest
                        });
                        commit_results
                            .lock()
                            .expect("commit results")
                            .insert(i, result);
                        // Deleting a scratch dir is slow on some filesystems: not on the
                        // critical path.
                        let _ = crate::workdir::remove_tree(&scratch);
                    }
                    let refs: Vec<(String, Descriptor)> = named
                        .iter()
                        .map(|(_, n, d)| (n.clone(), d.clone()))
                        .collect();
                    if let Err(e) = self.store.set_refs(&refs) {
                        let mut results = commit_results.lock().expect("commit results");
                        for (i, _, _) in &named {
                            results.insert(
                                *i,
                                Err(format!(
                                    "naming the compiled package in the store failed: {e}"
                                )),
                            );
                        }
                    }
                }
            });
            let job = |pos: usize, token: &CancelToken| -> Result<f64, String> {
                let i = todo[pos];
                let tx = commit_tx.clone();
                let (rid, pid) = units[i].member;
                let package = &plan.releases[rid].packages[pid];
                self.compile_one(
                    &units[i],
                    i,
                    units,
                    package,
                    archives.get(&i).map(PathBuf::as_path),
                    &run_dir,
                    token,
                    &failures_detail,
                    tx,
                )
            };
            let mut start_times: HashMap<usize, Instant> = HashMap::new();
            let report = scheduler::run(&graph, &options, job, |event| match event {
                Event::Started(pos) => {
                    let unit = &units[todo[pos]];
                    start_times.insert(pos, Instant::now());
                    stamp(metrics, "::wait", unit, "done");
                    stamp(metrics, "", unit, "start");
                    stamp(metrics, "::run", unit, "start");
                    progress(Progress::Started {
                        name: &unit.name,
                        log: &unit.log,
                    });
                }
                Event::Finished(pos, status) => {
                    let i = todo[pos];
                    let unit = &units[i];
                    let seconds = start_times
                        .get(&pos)
                        .map(|t| t.elapsed().as_secs_f64())
                        .unwrap_or(0.0);
                    if start_times.contains_key(&pos) {
                        stamp(metrics, "::run", unit, "done");
                        stamp(metrics, "", unit, "done");
                    }
                    let (label, error) = match status {
                        Status::Succeeded(_) => ("compiled", None),
                        Status::Failed(e) => ("failed", Some(e.clone())),
                        Status::Skipped { because } => (
                            "skipped",
                            Some(format!(
                                "depends on {}, which failed",
                                units[todo[*because]].name
                            )),
                        ),
                        Status::Cancelled { error } => ("cancelled", Some(error.clone())),
                        Status::NotStarted => ("skipped", None),
                    };
                    let report = self.report(unit, label, seconds, None, error);
                    progress(Progress::Finished { report: &report });
                    reports[i] = Some(report);
                }
                Event::Stopping(reason) => progress(Progress::Stopping {
                    reason: match reason {
                        scheduler::StopReason::Failure(pos) => {
                            format!("{} failed", units[todo[pos]].name)
                        }
                        scheduler::StopReason::Interrupted => "interrupted".into(),
                    },
                }),
            });
            drop(commit_tx);
            report
        });

        // Fill in what the scheduler did not report (never started), and the committed layers.
        let mut commit_results = commit_results.into_inner().expect("commit results");
        let mut details = failures_detail.into_inner().expect("failures");
        let mut failures: Vec<Failure> = Vec::new();
        for (i, report) in reports.iter().enumerate() {
            if report.as_ref().is_some_and(|r| r.status == "failed") {
                if let Some(detail) = details.remove(&i) {
                    failures.push(detail);
                }
            }
        }
        let mut new_timings = timings;
        for (pos, &i) in todo.iter().enumerate() {
            let unit = &units[i];
            let report =
                reports[i].get_or_insert_with(|| self.report(unit, "skipped", 0.0, None, None));
            if let Some(span) = run_report.spans[pos] {
                if report.status == "compiled" {
                    new_timings.record(
                        &unit.name,
                        &unit.fingerprint,
                        span.duration().as_secs_f64(),
                    );
                }
            }
            match commit_results.remove(&i) {
                Some(Ok(layer)) => report.layer_digest = Some(layer),
                Some(Err(e)) => {
                    report.status = "failed".into();
                    report.error = Some(e.clone());
                    failures.push(Failure {
                        name: unit.name.clone(),
                        error: e,
                        log: Some(unit.log.clone()),
                        log_tail: Vec::new(),
                        kept: None,
                    });
                }
                None => {}
            }
        }
        new_timings.save(&self.wd.logs());
        failures.sort_by(|a, b| a.name.cmp(&b.name));
        let _ = std::fs::remove_dir(&run_dir);
        Ok(CompileReport {
            packages: reports
                .into_iter()
                .map(|r| r.expect("every unit has a report"))
                .collect(),
            failures,
            interrupted: run_report.interrupted,
            wall: started.elapsed(),
        })
    }

    /// A package is cached when its image is in the store (manifest readable, layer present
    /// with the right size) and its published dir exists, or can be restored from the image.
    fn cached(&self, unit: &Unit, refs: &HashMap<String, Descriptor>) -> Option<String> {
        let descriptor = refs.get(&package_ref(&unit.name, &unit.key))?.clone();
        let manifest = image::read_manifest(self.store, &descriptor).ok()?;
        for layer in manifest.layers() {
            let path = self.store.blob_path(layer.digest()).ok()?;
            if std::fs::metadata(path).ok()?.len() != layer.size() {
                return None;
            }
        }
        if !unit.published.is_dir() {
            restore_from_store(self.store, &descriptor, &unit.name, &unit.published).ok()?;
        }
        manifest.layers().last().map(|l| l.digest().to_string())
    }

    fn report(
        &self,
        unit: &Unit,
        status: &str,
        seconds: f64,
        layer_digest: Option<String>,
        error: Option<String>,
    ) -> PackageReport {
        PackageReport {
            name: unit.name.clone(),
            release: unit.release.clone(),
            fingerprint: unit.fingerprint.clone(),
            cache_key: unit.key.clone(),
            status: status.to_string(),
            seconds,
            layer_digest,
            log: if status == "cached" || status == "skipped" {
                None
            } else {
                Some(unit.log.display().to_string())
            },
            error,
            dependencies: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn compile_one(
        &self,
        unit: &Unit,
        index: usize,
        units: &[Unit],
        package: &crate::release::Package,
        archive: Option<&Path>,
        run_dir: &Path,
        token: &CancelToken,
        failures: &Mutex<HashMap<usize, Failure>>,
        commit: mpsc::Sender<(usize, CompileInput, PathBuf)>,
    ) -> Result<f64, String> {
        let started = Instant::now();
        let scratch = run_dir.join(format!("{}-{}", unit.name, &unit.key[..12]));
        let fail = |error: String, log_tail: bool| -> String {
            let kept = if self.options.keep_sandbox && scratch.exists() {
                Some(scratch.clone())
            } else {
                let _ = crate::workdir::remove_tree(&scratch);
                None
            };
            // Recorded whatever happens next: the scheduler decides whether this was a failure
            // of its own or the result of a cancellation, and only failures are reported.
            {
                failures.lock().expect("failures").insert(
                    index,
                    Failure {
                        name: unit.name.clone(),
                        error: error.clone(),
                        log: log_tail.then(|| unit.log.clone()),
                        log_tail: if log_tail {
                            tail(&unit.log, 30)
                        } else {
                            Vec::new()
                        },
                        kept,
                    },
                );
            }
            error
        };
        let source_dir = scratch.join("source");
        let install_dir = scratch.join("install");
        let _ = crate::workdir::remove_tree(&scratch);
        if let Err(e) = std::fs::create_dir_all(&install_dir) {
            return Err(fail(
                format!("cannot create {}: {e}", install_dir.display()),
                false,
            ));
        }
        if let Err(e) = stage_sources(package, archive, &source_dir, &self.options.limits) {
            return Err(fail(format!("cannot stage its sources: {e}"), false));
        }
        let _ = std::fs::remove_file(&unit.log);
        let input = CompileInput {
            name: unit.name.clone(),
            fingerprint: unit.fingerprint.clone(),
            key: unit.key.clone(),
            base_rootfs: self.base.rootfs.clone(),
            source_dir,
            install_dir: install_dir.clone(),
            scratch: scratch.join("sandbox"),
            dependencies: unit
                .dependencies
                .iter()
                .map(|&d| (units[d].name.clone(), units[d].published.clone()))
                .collect(),
            bash: self.base.bash.clone(),
            log: unit.log.clone(),
            network: self.options.network,
            timeout: self.options.timeout,
            memory_limit: self.options.memory_limit,
            source_date_epoch: self.options.source_date_epoch,
        };
        let outcome = match self.sandbox.run(&sandbox_spec(&input), token) {
            Ok(outcome) => outcome,
            Err(e) => return Err(fail(format!("sandbox error: {e}"), true)),
        };
        if !outcome.success() {
            let oom = if outcome.oom_killed {
                " (out of memory: raise --memory)"
            } else {
                ""
            };
            return Err(fail(
                format!("packaging script {}{oom}", outcome.status),
                true,
            ));
        }
        if let Err(e) = publish_dir(&install_dir, &unit.published) {
            return Err(fail(
                format!("cannot publish {}: {e}", unit.published.display()),
                false,
            ));
        }
        let _ = commit.send((index, input, scratch));
        Ok(started.elapsed().as_secs_f64())
    }
}

/// fissile's metrics series for a package: `compile-packages[SERIES]::release/name`.
fn stamp(metrics: &mut Metrics, series: &str, unit: &Unit, event: &str) {
    metrics.stamp(
        &format!("compile-packages{series}::{}/{}", unit.release, unit.name),
        event,
    );
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Last compile times, the scheduler's weights for the next run.
struct Timings(HashMap<String, f64>);

impl Timings {
    fn file(logs: &Path) -> PathBuf {
        logs.join("timings.json")
    }

    fn load(logs: &Path) -> Timings {
        let map = std::fs::read(Self::file(logs))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Timings(map)
    }

    fn weight(&self, name: &str, fingerprint: &str) -> f64 {
        self.0
            .get(&format!("{name}/{fingerprint}"))
            .or_else(|| self.0.get(name))
            .copied()
            .unwrap_or(1.0)
            .max(0.001)
    }

    fn record(&mut self, name: &str, fingerprint: &str, seconds: f64) {
        self.0.insert(format!("{name}/{fingerprint}"), seconds);
        self.0.insert(name.to_string(), seconds);
    }

    fn save(&self, logs: &Path) {
        if let Ok(bytes) = serde_json::to_vec(&self.0) {
            let _ = crate::oci::store::write_atomic(&Self::file(logs), &bytes);
        }
    }
}
