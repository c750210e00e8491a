//! A whole compile run, as a list of phases: keys down the plan, cache hits restored, compiled
//! releases' packages imported (and the source packages they stand in for resolved), package
//! archives copied out of their tarballs, the ready packages run in sandboxes by the scheduler
//! (each success published for its dependants at once and committed to the store by the
//! committer thread), and a report of every package.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use oci_spec::image::Descriptor;

use super::commit::commit_all;
use super::import::{import_all, ImportError};
use super::job::{Done, Jobs, Mode, Presence, ToStore};
use super::key::package_ref;
use super::outcome::{CacheSummary, CompileReport, Failure, Progress};
use super::remote::{self, Push};
use super::report::{Metrics, PackageReport};
use super::scheduler::{self, CancelToken, Event, Graph, Node, RunOptions, Status};
use super::shard::{self, Shard};
use super::stage::materialize_packages;
use super::status::PackageStatus;
use super::timings::Timings;
use super::units::{find_cached, units, BaseIdentity, Origin, Unit};
use crate::base::CompilationBase;
use crate::extract::ExtractLimits;
use crate::oci::OciStore;
use crate::plan::Plan;
use crate::sandbox::{Network, Sandbox, ScratchSpace};
use crate::shared_cache::{package_tag, Notify, SharedCache, SharedCacheError};
use crate::workdir::{LastUse, RunDir, WorkDir};

/// The scheduler's lane for fetching from the shared cache, and its workers: pulls and polls
/// never take a compile slot.
const FETCH_LANE: usize = 1;
const FETCH_WORKERS: usize = 8;

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
    /// Compile only this shard's part of the plan; what it needs from the others comes from
    /// the shared cache.
    pub shard: Option<Shard>,
    /// How long, from the start of the run, a shard waits for what other shards compile.
    pub shard_wait: Duration,
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
    /// `--cache-required`, and the shared cache failed.
    #[error(transparent)]
    SharedCache(#[from] SharedCacheError),
}

pub(super) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CompileError {
    let path = path.into();
    move |source| CompileError::Io { path, source }
}

/// What a run shares with other runs: the fleet's shared cache, and where the workers' notices
/// go (another run compiling the same package, the cache failing).
#[derive(Clone, Default)]
pub struct RunContext<'a> {
    /// The shared cache, when the run uses one.
    pub cache: Option<&'a SharedCache>,
    /// Push the compilation base to the shared cache under this tag (it does not have it).
    pub push_base: Option<String>,
    /// Notices from the workers, shown as they happen.
    pub notify: Option<Notify>,
}

/// Compiles plans on one compilation base, in one work dir.
pub struct Compiler<'a> {
    pub wd: &'a WorkDir,
    pub store: &'a OciStore,
    pub base: &'a CompilationBase,
    pub sandbox: &'a dyn Sandbox,
    pub options: &'a CompileOptions,
    pub context: RunContext<'a>,
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
        let cache = self.context.cache;
        let shard = self.options.shard;
        // Which shard compiles each package: the same answer on every runner.
        let owners = match shard {
            Some(shard) => Some(shard_owners(plan, shard.count)?),
            None => None,
        };
        let mine = |i: usize| match (&owners, shard) {
            (Some(owners), Some(shard)) => owners[i] == shard.position(),
            _ => true,
        };
        let (mut units, run_dir) = plan_units(plan, self.wd, self.store, Some(base))?;

        // What the shared cache has: one sweep of lookups.
        let todo: Vec<usize> = (0..units.len())
            .filter(|&i| units[i].origin == Origin::Compile && units[i].cached.is_none())
            .collect();
        let mut remote_hits: Vec<Option<String>> = vec![None; units.len()];
        let (push_tx, push_rx) = mpsc::channel::<Push>();
        let pending_pushes = AtomicUsize::new(0);
        let queue_push = |push: Push| {
            pending_pushes.fetch_add(1, Ordering::SeqCst);
            let _ = push_tx.send(push);
        };
        if let Some(cache) = cache.filter(|c| c.usable()) {
            if let (Some(tag), true) = (&self.context.push_base, cache.pushes()) {
                queue_push(Push::Base {
                    manifest: self.base.descriptor.clone(),
                    tag: tag.clone(),
                });
            }
            // Packages this work dir has and the cache lacks are pushed too: a fleet's cache
            // fills from every runner's.
            let have: Vec<usize> = if cache.pushes() {
                (0..units.len())
                    .filter(|&i| units[i].origin == Origin::Compile && units[i].cached.is_some())
                    .filter(|&i| mine(i))
                    .collect()
            } else {
                Vec::new()
            };
            let which: Vec<usize> = todo.iter().chain(&have).copied().collect();
            match remote::sweep(cache, &units, &which) {
                Ok(found) => remote_hits = found,
                Err(e) => {
                    if let Some(required) = cache.failed(&e, false) {
                        return Err(required.into());
                    }
                }
            }
            if cache.pushes() {
                let refs = self.store.ref_map()?;
                for &i in have.iter().filter(|&&i| remote_hits[i].is_none()) {
                    if let Some(manifest) = refs.get(&package_ref(&units[i].name, &units[i].key)) {
                        if let Some(push) =
                            local_push(self.store, &units, i, &base_digest, manifest)
                        {
                            queue_push(push);
                        }
                    }
                }
            }
        }
        let elsewhere = todo
            .iter()
            .filter(|&&i| !mine(i) && remote_hits[i].is_none())
            .count();
        let pulled = todo.iter().filter(|&&i| remote_hits[i].is_some()).count();
        let mut reports = cached_reports(&units, progress, pulled, elsewhere);
        import_all(
            plan,
            &mut units,
            self.store,
            run_dir.path(),
            self.options,
            &mut reports,
            progress,
        )?;

        // The scheduler sees only what must be compiled or fetched; what the store has is
        // satisfied. A package the cache has is fetched without waiting for its dependencies;
        // one another shard compiles is waited for, and only if this shard needs it.
        let position: HashMap<usize, usize> =
            todo.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
        let mut timings = Timings::load(&self.wd.logs());
        let mut modes = Vec::with_capacity(todo.len());
        let graph_nodes: Vec<Node> = todo
            .iter()
            .map(|&i| {
                let deps = units[i]
                    .dependencies
                    .iter()
                    .filter_map(|d| position.get(d).copied())
                    .collect();
                let node = Node::new(deps, timings.weight(&units[i].name, &units[i].fingerprint));
                let usable = cache.is_some_and(|c| c.usable());
                let (node, mode) = if remote_hits[i].is_some() {
                    (node.detached().in_lane(FETCH_LANE), Mode::Fetch)
                } else if !mine(i) && usable {
                    (node.detached().in_lane(FETCH_LANE), Mode::Wait)
                } else {
                    (node, Mode::Compile)
                };
                modes.push(mode);
                if mine(i) {
                    node
                } else {
                    node.on_demand()
                }
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

        // Compile: the workers run jobs, the committer stores their results, the pushers send
        // them to the shared cache, this thread turns scheduler events into progress and
        // metrics.
        let options = RunOptions::new(self.options.workers)
            .with_lane(FETCH_WORKERS)
            .keep_going(self.options.keep_going)
            .cancel_token(cancel);
        let (store_tx, store_rx) = mpsc::channel::<ToStore>();
        let pushing = cache.filter(|c| c.pushes());
        let (run_report, mut commit_results, push_report) = std::thread::scope(|scope| {
            let units = &units;
            let pusher = cache.map(|cache| {
                let pending = &pending_pushes;
                scope.spawn(move || remote::push_all(cache, self.store, push_rx, pending))
            });
            let committer = {
                let push_tx = pushing.map(|_| push_tx.clone());
                let pending = &pending_pushes;
                let base_digest = &base_digest;
                scope.spawn(move || {
                    commit_all(self.store, base_digest, units, store_rx, push_tx, pending)
                })
            };
            let owned_jobs = Jobs {
                compiler: self,
                plan,
                units,
                archives: &archives,
                run_dir: &run_dir,
                to_store: store_tx,
                base_digest: &base_digest,
                modes: modes.iter().map(|m| m.atomic()).collect(),
                remote_hits: &remote_hits,
                deadline: started + self.options.shard_wait,
                polls: (0..todo.len()).map(|_| AtomicUsize::new(0)).collect(),
                notes: Default::default(),
                tmpfs_refused: Default::default(),
                deps: graph_nodes.iter().map(|n| n.dependencies.clone()).collect(),
                mine: todo.iter().map(|&i| mine(i)).collect(),
                presence: todo
                    .iter()
                    .map(|&i| {
                        let presence = Presence::default();
                        if remote_hits[i].is_some() {
                            presence.known.store(true, Ordering::SeqCst);
                        }
                        presence
                    })
                    .collect(),
                tags: todo
                    .iter()
                    .map(|&i| package_tag(&units[i].name, &units[i].key))
                    .collect(),
                listing_seen: Default::default(),
            };
            let jobs = &owned_jobs;
            let mut start_times: HashMap<usize, Instant> = HashMap::new();
            let run_report = scheduler::run_steps(
                &graph,
                &options,
                |pos, token| jobs.step(todo[pos], pos, token),
                |event| match event {
                    Event::Started(pos) => {
                        let unit = &units[todo[pos]];
                        match jobs.mode(pos) {
                            Mode::Fetch => progress(Progress::Pulling { name: &unit.name }),
                            Mode::Wait => progress(Progress::Waiting {
                                name: &unit.name,
                                shard: owners
                                    .as_ref()
                                    .map(|o| o[todo[pos]] + 1)
                                    .unwrap_or_default(),
                            }),
                            Mode::Compile => {
                                start_times.insert(pos, Instant::now());
                                stamp(metrics, "::wait", unit, "done");
                                stamp(metrics, "", unit, "start");
                                stamp(metrics, "::run", unit, "start");
                                progress(Progress::Started {
                                    name: &unit.name,
                                    log: &unit.log,
                                });
                            }
                        }
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
                        let (status, error, seconds, layer) = match status {
                            Status::Succeeded(Done::Compiled { .. }) => {
                                (PackageStatus::Compiled, None, seconds, None)
                            }
                            Status::Succeeded(Done::Pulled { layer, seconds }) => {
                                (PackageStatus::Pulled, None, *seconds, Some(layer.clone()))
                            }
                            Status::Succeeded(Done::Cached { layer }) => {
                                (PackageStatus::Cached, None, 0.0, Some(layer.clone()))
                            }
                            Status::Failed(f) => (
                                PackageStatus::Failed,
                                Some(f.error.to_string()),
                                seconds,
                                None,
                            ),
                            Status::Skipped { because } => (
                                PackageStatus::Skipped,
                                Some(format!(
                                    "depends on {}, which failed",
                                    units[todo[*because]].name
                                )),
                                seconds,
                                None,
                            ),
                            Status::Cancelled { error } => (
                                PackageStatus::Cancelled,
                                Some(error.error.to_string()),
                                seconds,
                                None,
                            ),
                            Status::NotStarted | Status::NotNeeded => {
                                (PackageStatus::Skipped, None, seconds, None)
                            }
                        };
                        let mut report = report(unit, status, seconds, layer, error);
                        if status == PackageStatus::Pulled {
                            report.log = None;
                        }
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
            // The jobs' sender goes with them: the committer ends once it has stored the rest,
            // and the pushers once they have pushed what it and the sweep gave them.
            drop(owned_jobs);
            let commits = committer
                .join()
                .expect("the committer thread does not panic");
            drop(push_tx);
            let remaining = pending_pushes.load(Ordering::SeqCst);
            if remaining > 0 {
                progress(Progress::Pushing { remaining });
            }
            let pushes = pusher.map(|p| p.join().expect("the pushers do not panic"));
            (run_report, commits, pushes)
        });

        // The report: failures of the compile itself, then of the commits; times for next run.
        let mut failures: Vec<Failure> = Vec::new();
        for (pos, status) in run_report.statuses.iter().enumerate() {
            let i = todo[pos];
            match status {
                Status::Succeeded(Done::Compiled { seconds }) => {
                    timings.record(&units[i].name, &units[i].fingerprint, *seconds)
                }
                Status::NotNeeded => {
                    let owner = owners.as_ref().map(|o| o[i] + 1).unwrap_or_default();
                    let count = shard.map(|s| s.count).unwrap_or_default();
                    reports[i] = Some(report(
                        &units[i],
                        PackageStatus::Skipped,
                        0.0,
                        None,
                        Some(format!("shard {owner}/{count} compiles it")),
                    ));
                }
                _ => {}
            }
        }
        for (pos, status) in run_report.statuses.into_iter().enumerate() {
            if let Status::Failed(mut failure) = status {
                failure.name.clone_from(&units[todo[pos]].name);
                failures.push(*failure);
            }
        }
        for &i in &todo {
            let unit = &units[i];
            let report = reports[i]
                .get_or_insert_with(|| report(unit, PackageStatus::Skipped, 0.0, None, None));
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
        let reports: Vec<PackageReport> = reports
            .into_iter()
            .map(|r| r.expect("every unit has a report"))
            .collect();
        let cache_summary = cache.map(|cache| {
            let push_report = push_report.unwrap_or_default();
            CacheSummary {
                repository: cache.repository().to_string(),
                pulled: reports
                    .iter()
                    .filter(|r| r.status == PackageStatus::Pulled)
                    .count(),
                pushed: push_report.pushed,
                push_failures: push_report.failed,
                warnings: cache.warnings(),
                down: cache.down_reason(),
            }
        });
        if let Some(cache) = cache.filter(|c| c.required()) {
            if let Some(reason) = cache
                .down_reason()
                .or_else(|| cache.warnings().into_iter().next())
            {
                return Err(SharedCacheError::Required {
                    repository: cache.repository().to_string(),
                    reason,
                }
                .into());
            }
        }
        Ok(CompileReport {
            packages: reports,
            failures,
            interrupted: run_report.interrupted,
            wall: started.elapsed(),
            cache: cache_summary,
        })
    }
}

/// The shard (from 0) of every plan node; packages of compiled releases are nobody's (they
/// are imported, never compiled), `usize::MAX`.
fn shard_owners(plan: &Plan, shards: usize) -> Result<Vec<usize>, CompileError> {
    let compiled: Vec<usize> = (0..plan.nodes.len())
        .filter(|&i| !plan.nodes[i].is_compiled())
        .collect();
    let index: HashMap<usize, usize> = compiled.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let deps: Vec<Vec<usize>> = compiled
        .iter()
        .map(|&i| {
            plan.nodes[i]
                .dependencies
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect()
        })
        .collect();
    let parts = shard::partition(&deps, shards)?;
    let mut owners = vec![usize::MAX; plan.nodes.len()];
    for (p, &i) in compiled.iter().enumerate() {
        owners[i] = parts[p];
    }
    Ok(owners)
}

/// A package of this work dir for the pushers: its image and config, read from the store.
fn local_push(
    store: &OciStore,
    units: &[Unit],
    index: usize,
    base_digest: &str,
    manifest: &Descriptor,
) -> Option<Push> {
    let image = crate::oci::image::read_manifest(store, manifest).ok()?;
    let config = crate::oci::image::read_config(store, &image).ok()?;
    let diff_id = config.rootfs().diff_ids().last()?.clone();
    let mut package = remote::expected_config(units, index, base_digest);
    package.diff_id = diff_id;
    Some(Push::Package {
        name: units[index].name.clone(),
        manifest: manifest.clone(),
        config: package,
        annotations: remote::annotations(units, index, base_digest),
    })
}

/// Keys every package and finds what the store has; makes the run's scratch dir.
fn plan_units(
    plan: &Plan,
    wd: &WorkDir,
    store: &OciStore,
    base: Option<BaseIdentity<'_>>,
) -> Result<(Vec<Unit>, RunDir), CompileError> {
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
    let run_dir = RunDir::create(wd, "").map_err(io(wd.runs()))?;
    fs_err::create_dir_all(wd.logs()).map_err(io(wd.logs()))?;
    Ok((units, run_dir))
}

/// Announces the run (`pulled` and `elsewhere` as [`Progress::Planned`] says) and reports
/// what the store has; returns the reports so far.
fn cached_reports(
    units: &[Unit],
    progress: &mut dyn FnMut(Progress<'_>),
    pulled: usize,
    elsewhere: usize,
) -> Vec<Option<PackageReport>> {
    let count = |origin: Origin, cached: bool| {
        units
            .iter()
            .filter(|u| u.origin == origin && u.cached.is_some() == cached)
            .count()
    };
    let cached = count(Origin::Compile, true);
    let imported = units.len() - cached - count(Origin::Compile, false);
    progress(Progress::Planned {
        total: units.len(),
        cached,
        imported,
        pulled,
        elsewhere,
    });
    units
        .iter()
        .map(|unit| {
            if unit.origin != Origin::Compile {
                return None;
            }
            let layer = unit.cached.clone()?;
            progress(Progress::Cached { name: &unit.name });
            Some(report(unit, PackageStatus::Cached, 0.0, Some(layer), None))
        })
        .collect()
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
    let (mut units, run_dir) = plan_units(plan, wd, store, None)?;
    let mut reports = cached_reports(&units, progress, 0, 0);
    import_all(
        plan,
        &mut units,
        store,
        run_dir.path(),
        options,
        &mut reports,
        progress,
    )?;
    record_use(wd, &units, &reports, None);
    Ok(CompileReport {
        packages: reports
            .into_iter()
            .map(|r| r.expect("every unit of an import-only run is imported"))
            .collect(),
        failures: Vec::new(),
        interrupted: false,
        wall: started.elapsed(),
        cache: None,
    })
}

/// Every package a run found, made or imported, and its compilation base, count as used now
/// (what `cache gc --max-size/--max-age` evicts by). Best effort: the record only orders
/// evictions.
fn record_use(wd: &WorkDir, units: &[Unit], reports: &[Option<PackageReport>], base: Option<&str>) {
    let names: Vec<String> = units
        .iter()
        .zip(reports)
        .filter(|(_, r)| {
            r.as_ref().is_some_and(|r| {
                matches!(
                    r.status,
                    PackageStatus::Cached
                        | PackageStatus::Compiled
                        | PackageStatus::Imported
                        | PackageStatus::Pulled
                )
            })
        })
        .map(|(u, _)| package_ref(&u.name, &u.key))
        .collect();
    // Best effort: the record only orders evictions.
    let _ = LastUse::update(wd, |uses| {
        uses.record(
            names.iter().map(String::as_str).chain(base),
            crate::clock::now_millis(),
        )
    });
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
            PackageStatus::Cached | PackageStatus::Skipped | PackageStatus::Pulled => None,
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
