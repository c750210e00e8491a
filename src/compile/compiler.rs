//! A whole compile run, as a list of phases: keys down the plan, cache hits restored, compiled
//! releases' packages imported (and the source packages they stand in for resolved), package
//! archives copied out of their tarballs, the ready packages run in sandboxes by the scheduler
//! (each success published for its dependants at once and committed to the store by the
//! committer thread), and a report of every package.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::commit::commit_all;
use super::import::{import_all, ImportError};
use super::job::{Commit, Jobs};
use super::key::package_ref;
use super::outcome::{CompileReport, Failure, Progress};
use super::report::{Metrics, PackageReport};
use super::scheduler::{self, CancelToken, Event, Graph, Node, RunOptions, Status};
use super::stage::materialize_packages;
use super::status::PackageStatus;
use super::timings::Timings;
use super::units::{find_cached, units, BaseIdentity, Origin, Unit};
use crate::base::CompilationBase;
use crate::extract::ExtractLimits;
use crate::oci::OciStore;
use crate::plan::Plan;
use crate::sandbox::{Network, Sandbox, ScratchSpace};
use crate::workdir::{LastUse, RunDir, WorkDir};

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
    /// Where each package's build tree goes (see [`super::scratch`]).
    pub scratch_space: ScratchSpace,
    pub limits: ExtractLimits,
    pub source_date_epoch: u64,
}

#[derive(thiserror::Error, Debug)]
pub enum CompileError {
    #[error(transparent)]
    Oci(#[from] crate::oci::OciError),
    #[error(transparent)]
    Stage(#[from] super::stage::StageError),
    #[error(transparent)]
    Graph(#[from] scheduler::GraphError),
    /// A compiled release's package that cannot be imported: bad input, named.
    #[error("{}: compiled package {package:?}: {source}", .release.display())]
    Import {
        release: PathBuf,
        package: String,
        #[source]
        source: Box<ImportError>,
    },
    #[error("package {package:?} must be compiled, and no compilation base was given")]
    NoBase { package: String },
    #[error("{path}: i/o error")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub(super) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CompileError {
    let path = path.into();
    move |source| CompileError::Io { path, source }
}

/// Compiles plans on one compilation base, in one work dir.
pub struct Compiler<'a> {
    pub wd: &'a WorkDir,
    pub store: &'a OciStore,
    pub base: &'a CompilationBase,
    pub sandbox: &'a dyn Sandbox,
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
        let stemcell = self.base.stemcell();
        let base = BaseIdentity {
            digest: &base_digest,
            stemcell: stemcell.as_ref(),
        };
        let Prepared {
            units,
            mut reports,
            run_dir,
        } = prepare(
            plan,
            self.wd,
            self.store,
            Some(base),
            self.options,
            progress,
        )?;

        // The scheduler sees only what must be compiled; cached dependencies are satisfied.
        let todo: Vec<usize> = (0..units.len())
            .filter(|&i| units[i].origin == Origin::Compile && units[i].cached.is_none())
            .collect();
        let position: HashMap<usize, usize> =
            todo.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
        let mut timings = Timings::load(&self.wd.logs());
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

        // The package archives copied out of release tarballs in one pass, into the run dir
        // (removed when this function returns, however it returns, but for the failed
        // packages' scratch dirs that --keep-sandbox keeps).
        let archives = materialize_packages(
            todo.iter().map(|&i| {
                let (rid, pid) = plan.nodes[i].members[0];
                (i, &plan.releases[rid].packages[pid])
            }),
            run_dir.path(),
        )?;

        // Compile: the workers run jobs, the committer stores their results, this thread
        // turns scheduler events into progress and metrics.
        let options = RunOptions::new(self.options.workers)
            .keep_going(self.options.keep_going)
            .cancel_token(cancel);
        let (commit_tx, commit_rx) = mpsc::channel::<Commit>();
        let (run_report, mut commit_results) = std::thread::scope(|scope| {
            let units = &units;
            let committer =
                scope.spawn(move || commit_all(self.store, &base_digest, units, commit_rx));
            let owned_jobs = Jobs {
                compiler: self,
                plan,
                units,
                archives: &archives,
                run_dir: &run_dir,
                commits: commit_tx,
                notes: Default::default(),
                tmpfs_refused: Default::default(),
            };
            let jobs = &owned_jobs;
            let mut start_times: HashMap<usize, Instant> = HashMap::new();
            let run_report = scheduler::run(
                &graph,
                &options,
                |pos, token| jobs.run(todo[pos], token),
                |event| match event {
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
                        for message in jobs.take_notes(i) {
                            progress(Progress::Note {
                                name: &unit.name,
                                message: &message,
                            });
                        }
                        let seconds = start_times
                            .get(&pos)
                            .map(|t| t.elapsed().as_secs_f64())
                            .unwrap_or(0.0);
                        if start_times.contains_key(&pos) {
                            stamp(metrics, "::run", unit, "done");
                            stamp(metrics, "", unit, "done");
                        }
                        let (status, error) = match status {
                            Status::Succeeded(_) => (PackageStatus::Compiled, None),
                            Status::Failed(f) => (PackageStatus::Failed, Some(f.error.to_string())),
                            Status::Skipped { because } => (
                                PackageStatus::Skipped,
                                Some(format!(
                                    "depends on {}, which failed",
                                    units[todo[*because]].name
                                )),
                            ),
                            Status::Cancelled { error } => {
                                (PackageStatus::Cancelled, Some(error.error.to_string()))
                            }
                            Status::NotStarted => (PackageStatus::Skipped, None),
                        };
                        let report = report(unit, status, seconds, None, error);
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
                },
            );
            // The jobs' sender goes with them: the committer ends once it has stored the rest.
            drop(owned_jobs);
            let commits = committer
                .join()
                .expect("the committer thread does not panic");
            (run_report, commits)
        });

        // The report: failures of the compile itself, then of the commits; times for next run.
        let mut failures: Vec<Failure> = Vec::new();
        for (pos, status) in run_report.statuses.into_iter().enumerate() {
            if let Status::Failed(mut failure) = status {
                failure.name.clone_from(&units[todo[pos]].name);
                failures.push(*failure);
            }
        }
        for (pos, &i) in todo.iter().enumerate() {
            let unit = &units[i];
            let report = reports[i]
                .get_or_insert_with(|| report(unit, PackageStatus::Skipped, 0.0, None, None));
            if let Some(span) = run_report.spans[pos] {
                if report.status == PackageStatus::Compiled {
                    timings.record(&unit.name, &unit.fingerprint, span.duration().as_secs_f64());
                }
            }
            match commit_results.remove(&i) {
                Some(Ok(layer)) => report.layer_digest = Some(layer),
                Some(Err(error)) => {
                    report.status = PackageStatus::Failed;
                    report.error = Some(error.to_string());
                    failures.push(Failure {
                        name: unit.name.clone(),
                        error,
                        log: Some(unit.log.clone()),
                        log_tail: Vec::new(),
                        kept: None,
                    });
                }
                None => {}
            }
        }
        timings.save(&self.wd.logs());
        failures.sort_by(|a, b| a.name.cmp(&b.name));
        record_use(self.wd, &units, &reports, Some(&self.base.name));
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
}

/// A run's units with everything that needs no sandbox done: keys, cache hits, imports.
struct Prepared {
    units: Vec<Unit>,
    reports: Vec<Option<PackageReport>>,
    /// The run's scratch dir: removed when dropped, but for what --keep-sandbox keeps.
    run_dir: RunDir,
}

/// Keys every package, finds what the store has, imports the compiled releases' packages and
/// resolves the source packages they stand in for; makes the run's scratch dir.
fn prepare(
    plan: &Plan,
    wd: &WorkDir,
    store: &OciStore,
    base: Option<BaseIdentity<'_>>,
    options: &CompileOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Prepared, CompileError> {
    if base.is_none() {
        if let Some(node) = plan.nodes.iter().find(|n| !n.is_compiled()) {
            return Err(CompileError::NoBase {
                package: node.name.clone(),
            });
        }
    }
    let refs = store.ref_map()?;
    let mut units = units(plan, wd, &refs, base);
    find_cached(&mut units, store, &refs);
    let count = |origin: Origin, cached: bool| {
        units
            .iter()
            .filter(|u| u.origin == origin && u.cached.is_some() == cached)
            .count()
    };
    let cached = count(Origin::Compile, true);
    progress(Progress::Planned {
        total: units.len(),
        cached,
        imported: units.len() - cached - count(Origin::Compile, false),
    });
    let mut reports: Vec<Option<PackageReport>> = units
        .iter()
        .map(|unit| {
            if unit.origin != Origin::Compile {
                return None;
            }
            let layer = unit.cached.clone()?;
            progress(Progress::Cached { name: &unit.name });
            Some(report(unit, PackageStatus::Cached, 0.0, Some(layer), None))
        })
        .collect();

    let run_dir = RunDir::create(wd, "").map_err(io(wd.runs()))?;
    fs_err::create_dir_all(wd.logs()).map_err(io(wd.logs()))?;
    import_all(
        plan,
        &mut units,
        store,
        run_dir.path(),
        options,
        &mut reports,
        progress,
    )?;
    Ok(Prepared {
        units,
        reports,
        run_dir,
    })
}

/// A run over compiled releases only: every package imported (or found imported), nothing
/// compiled, so no compilation base and no sandbox. A plan with a package to compile is an
/// error: that needs [`Compiler::compile`].
pub fn import_only(
    plan: &Plan,
    wd: &WorkDir,
    store: &OciStore,
    options: &CompileOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<CompileReport, CompileError> {
    let started = Instant::now();
    let prepared = prepare(plan, wd, store, None, options, progress)?;
    record_use(wd, &prepared.units, &prepared.reports, None);
    Ok(CompileReport {
        packages: prepared
            .reports
            .into_iter()
            .map(|r| r.expect("every unit of an import-only run is imported"))
            .collect(),
        failures: Vec::new(),
        interrupted: false,
        wall: started.elapsed(),
    })
}

/// Every package a run found, made or imported, and its compilation base, count as used now
/// (what `cache gc --max-size/--max-age` evicts by). Best effort: the record only orders
/// evictions.
fn record_use(wd: &WorkDir, units: &[Unit], reports: &[Option<PackageReport>], base: Option<&str>) {
    let mut uses = LastUse::load(wd);
    let names: Vec<String> = units
        .iter()
        .zip(reports)
        .filter(|(_, r)| {
            r.as_ref().is_some_and(|r| {
                matches!(
                    r.status,
                    PackageStatus::Cached | PackageStatus::Compiled | PackageStatus::Imported
                )
            })
        })
        .map(|(u, _)| package_ref(&u.name, &u.key))
        .collect();
    uses.record(
        names.iter().map(String::as_str).chain(base),
        crate::clock::now_millis(),
    );
    let _ = uses.save(wd);
}

fn report(
    unit: &Unit,
    status: PackageStatus,
    seconds: f64,
    layer_digest: Option<String>,
    error: Option<String>,
) -> PackageReport {
    PackageReport {
        name: unit.name.clone(),
        release: unit.release.clone(),
        fingerprint: unit.fingerprint.clone(),
        cache_key: unit.key.clone(),
        status,
        seconds,
        layer_digest,
        log: match status {
            PackageStatus::Cached | PackageStatus::Skipped => None,
            _ => Some(unit.log.display().to_string()),
        },
        error,
        dependencies: Vec::new(),
    }
}

/// fissile's metrics series for a package: `compile-packages[SERIES]::release/name`.
fn stamp(metrics: &mut Metrics, series: &str, unit: &Unit, event: &str) {
    metrics.stamp(
        &format!("compile-packages{series}::{}/{}", unit.release, unit.name),
        event,
    );
}
