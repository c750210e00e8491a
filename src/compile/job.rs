//! One package's job, as the scheduler runs it: compiled here (a scratch dir, its sources
//! staged, the packaging script run in a sandbox, again on disk when its build outgrew its
//! tmpfs, the output published for dependants at once, the commit to the store handed to the
//! committer thread, and the scratch dir moved to the run's trash: deleting thousands of inodes
//! between packages slowed the next ones down, docs/DECISIONS.md, "Scratch dirs to a trash
//! emptied after the run"), fetched from the shared cache, or waited for while another shard
//! compiles it. Every way holds the package's key lock, so two runs on one work dir make each
//! package once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use oci_spec::image::Descriptor;

use super::compiler::Compiler;
use super::key::package_ref;
use super::outcome::{Failure, PackageError};
use super::package::{publish_dir, sandbox_spec, CompileInput};
use super::remote::pull_unit;
use super::scheduler::Step;
use super::scratch::human;
use super::stage::stage_sources;
use super::units::{cached, Unit};
use crate::cancel::CancelToken;
use crate::plan::Plan;
use crate::sandbox::{Outcome, ScratchSpace};
use crate::shared_cache::{package_tag, SharedCache};
use crate::workdir::{remove_tree, NameLock, RunDir};

/// Polls for a package another shard compiles: the first after this, then half as long again
/// each time, at most `POLL_MAX` apart.
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_millis(500);

/// What a node's job does now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// Pull it from the shared cache, which has it.
    Fetch = 0,
    /// Wait for another shard to push it, then pull it.
    Wait = 1,
    /// Compile it here (unless the store or the cache has it by the time it runs).
    Compile = 2,
}

impl Mode {
    pub fn atomic(self) -> AtomicU8 {
        AtomicU8::new(self as u8)
    }

    fn from_u8(v: u8) -> Mode {
        match v {
            0 => Mode::Fetch,
            1 => Mode::Wait,
            _ => Mode::Compile,
        }
    }
}

/// How a package's job ended well.
#[derive(Debug)]
pub(super) enum Done {
    /// Compiled here, in this many seconds.
    Compiled { seconds: f64 },
    /// Pulled from the shared cache.
    Pulled { layer: String, seconds: f64 },
    /// Another run on this work dir made it meanwhile.
    Cached { layer: String },
}

/// What the committer thread names in the store.
pub(super) enum ToStore {
    /// A compiled package: its layer and image are written, then named.
    Compiled(Commit),
    /// A pulled package, its image written: named.
    Pulled {
        unit: usize,
        manifest: Descriptor,
        lock: Option<NameLock>,
    },
}

/// A compiled package on its way to the store: unit index, what it was compiled from, and its
/// key lock, held until it is named.
pub(super) struct Commit {
    pub unit: usize,
    pub input: CompileInput,
    pub lock: Option<NameLock>,
}

/// What every job of a run shares.
pub(super) struct Jobs<'a> {
    pub compiler: &'a Compiler<'a>,
    pub plan: &'a Plan,
    pub units: &'a [Unit],
    /// Package archives copied out of release tarballs, by unit.
    pub archives: &'a HashMap<usize, PathBuf>,
    pub run_dir: &'a RunDir,
    pub to_store: mpsc::Sender<ToStore>,
    pub base_digest: &'a str,
    /// Each node's [`Mode`], by scheduler position.
    pub modes: Vec<AtomicU8>,
    /// What the sweep found in the shared cache, by unit.
    pub remote_hits: &'a [Option<Descriptor>],
    /// Past this, a shard stops waiting for other shards and compiles what it needs.
    pub deadline: Instant,
    /// Lookups so far (polls, or a lookup before a compile), by scheduler position.
    pub polls: Vec<AtomicUsize>,
    /// Lines for the user about a unit, shown when it finishes.
    pub notes: Mutex<HashMap<usize, Vec<String>>>,
    /// The sandbox could not give a package its tmpfs, and the user was told why (once).
    pub tmpfs_refused: AtomicBool,
}

type JobResult = Result<Step<Done>, Box<Failure>>;

impl Jobs<'_> {
    pub fn mode(&self, pos: usize) -> Mode {
        Mode::from_u8(self.modes[pos].load(Ordering::SeqCst))
    }

    fn set_mode(&self, pos: usize, mode: Mode) {
        self.modes[pos].store(mode as u8, Ordering::SeqCst);
    }

    fn cache(&self) -> Option<&SharedCache> {
        self.compiler.context.cache.filter(|c| c.usable())
    }

    fn notify(&self, message: &str) {
        if let Some(notify) = &self.compiler.context.notify {
            notify(message);
        }
    }

    /// Unit `index` (scheduler position `pos`), as its mode says.
    pub fn step(&self, index: usize, pos: usize, token: &CancelToken) -> JobResult {
        match self.mode(pos) {
            Mode::Fetch => {
                let digest = self.remote_hits[index]
                    .as_ref()
                    .map(|d| d.digest().to_string());
                self.fetch_or_compile(index, pos, digest.as_deref(), token)
            }
            Mode::Wait => self.wait(index, pos, token),
            Mode::Compile => self.compile(index, pos, token).map(Step::Done),
        }
    }

    /// One poll for a package another shard compiles: pulled once it is there; past the
    /// deadline (or with the cache gone) compiled here.
    fn wait(&self, index: usize, pos: usize, token: &CancelToken) -> JobResult {
        let unit = &self.units[index];
        let Some(cache) = self.cache() else {
            self.set_mode(pos, Mode::Compile);
            return Ok(Step::Attach { lane: 0 });
        };
        let polls = self.polls[pos].fetch_add(1, Ordering::SeqCst);
        match cache.lookup(&package_tag(&unit.name, &unit.key)) {
            Ok(Some(found)) => {
                return self.fetch_or_compile(index, pos, Some(found.digest().as_ref()), token)
            }
            Ok(None) if Instant::now() < self.deadline => {
                let pause = POLL_FIRST.mul_f64(1.5f64.powi(polls.min(20) as i32));
                return Ok(Step::Later(pause.min(POLL_MAX)));
            }
            Ok(None) => self.notify(&format!(
                "{}: not in the shared cache after --shard-wait: compiling it here",
                unit.name
            )),
            Err(e) => {
                if let Some(required) = cache.failed(&e, false) {
                    return Err(self.failure(index, PackageError::SharedCache(required)));
                }
            }
        }
        self.set_mode(pos, Mode::Compile);
        Ok(Step::Attach { lane: 0 })
    }

    /// Pulls the package from the shared cache; if that fails, it is compiled here once its
    /// dependencies are (the scheduler attaches it).
    fn fetch_or_compile(
        &self,
        index: usize,
        pos: usize,
        digest: Option<&str>,
        token: &CancelToken,
    ) -> JobResult {
        let lock = self.lock(index, token)?;
        if let Some(layer) = self.in_store(index) {
            return Ok(Step::Done(Done::Cached { layer }));
        }
        self.polls[pos].fetch_add(1, Ordering::SeqCst);
        match self.pull(index, digest, lock) {
            Ok(done) => Ok(Step::Done(done)),
            Err(Some(failure)) => Err(failure),
            Err(None) => {
                self.set_mode(pos, Mode::Compile);
                Ok(Step::Attach { lane: 0 })
            }
        }
    }

    /// Pulls unit `index` (its key lock held) and hands it to the committer to be named.
    /// `Err(None)`: the cache failed, and told; compile it instead. `Err(Some(_))`: the
    /// failure that ends the package (`--cache-required`).
    fn pull(
        &self,
        index: usize,
        digest: Option<&str>,
        lock: Option<NameLock>,
    ) -> Result<Done, Option<Box<Failure>>> {
        let Some(cache) = self.cache() else {
            return Err(None);
        };
        let started = Instant::now();
        let compiler = self.compiler;
        match pull_unit(
            cache,
            compiler.store,
            self.units,
            index,
            self.base_digest,
            digest,
            &compiler.options.limits,
        ) {
            Ok(pulled) => {
                let _ = self.to_store.send(ToStore::Pulled {
                    unit: index,
                    manifest: pulled.manifest,
                    lock,
                });
                Ok(Done::Pulled {
                    layer: pulled.layer_digest,
                    seconds: started.elapsed().as_secs_f64(),
                })
            }
            Err(e) => match cache.failed(&e, false) {
                Some(required) => Err(Some(
                    self.failure(index, PackageError::SharedCache(required)),
                )),
                None => Err(None),
            },
        }
    }

    /// The key lock of unit `index`, waiting for another run that holds it.
    fn lock(&self, index: usize, token: &CancelToken) -> Result<Option<NameLock>, Box<Failure>> {
        let unit = &self.units[index];
        let wd = self.compiler.wd;
        match wd.lock_name(&unit.key, token, || {
            self.notify(&format!(
                "{}: another run on this work dir is making it; waiting for it",
                unit.name
            ))
        }) {
            Ok(Some(lock)) => Ok(Some(lock)),
            Ok(None) => Err(self.failure(index, PackageError::Interrupted)),
            Err(e) => Err(self.failure(index, PackageError::Lock(e))),
        }
    }

    /// The layer of unit `index` when the store has it now (another run made it meanwhile).
    fn in_store(&self, index: usize) -> Option<String> {
        let unit = &self.units[index];
        let store = self.compiler.store;
        let name = package_ref(&unit.name, &unit.key);
        let descriptor = store.resolve(&name).ok()??;
        cached(unit, store, &HashMap::from([(name, descriptor)]))
    }

    fn failure(&self, index: usize, error: PackageError) -> Box<Failure> {
        Box::new(Failure {
            name: self.units[index].name.clone(),
            error,
            log: None,
            log_tail: Vec::new(),
            kept: None,
        })
    }

    /// Compiles unit `index` here, unless, once its key lock is held, the store or the shared
    /// cache has it.
    fn compile(&self, index: usize, pos: usize, token: &CancelToken) -> Result<Done, Box<Failure>> {
        let lock = self.lock(index, token)?;
        if let Some(layer) = self.in_store(index) {
            return Ok(Done::Cached { layer });
        }
        let unit = &self.units[index];
        // Another runner may have pushed it since the sweep; not again after a pull of it
        // failed or a wait for it ran out.
        let looked = self.polls[pos].fetch_add(1, Ordering::SeqCst) > 0;
        if let (Some(cache), false) = (self.cache(), looked) {
            match cache.lookup(&package_tag(&unit.name, &unit.key)) {
                Ok(Some(found)) => match self.pull(index, Some(found.digest().as_ref()), lock) {
                    Ok(done) => return Ok(done),
                    Err(Some(failure)) => return Err(failure),
                    // The lock went with the failed pull: take it again.
                    Err(None) => {
                        return self.compile_locked(index, token, self.lock(index, token)?)
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    if let Some(required) = cache.failed(&e, false) {
                        return Err(self.failure(index, PackageError::SharedCache(required)));
                    }
                }
            }
        }
        self.compile_locked(index, token, lock)
    }

    fn compile_locked(
        &self,
        index: usize,
        token: &CancelToken,
        lock: Option<NameLock>,
    ) -> Result<Done, Box<Failure>> {
        self.run(index, token, lock)
            .map(|seconds| Done::Compiled { seconds })
    }

    /// Compiles unit `index` in a sandbox; returns the seconds it took.
    fn run(
        &self,
        index: usize,
        token: &CancelToken,
        lock: Option<NameLock>,
    ) -> Result<f64, Box<Failure>> {
        let started = Instant::now();
        let unit = &self.units[index];
        let options = self.compiler.options;
        let scratch = self
            .run_dir
            .path()
            .join(format!("{}-{}", unit.name, &unit.key[..12]));
        let fail = |error: PackageError| -> Box<Failure> {
            let kept = if options.keep_sandbox && scratch.exists() {
                self.run_dir.keep(&scratch);
                Some(scratch.clone())
            } else {
                self.run_dir.discard(&scratch);
                None
            };
            let in_log = error.in_log();
            Box::new(Failure {
                name: unit.name.clone(),
                error,
                log: in_log.then(|| unit.log.clone()),
                log_tail: if in_log {
                    tail(&unit.log, 30)
                } else {
                    Vec::new()
                },
                kept,
            })
        };
        let source_dir = scratch.join("source");
        let install_dir = scratch.join("install");
        let _ = remove_tree(&scratch);
        if let Err(source) = fs_err::create_dir_all(&install_dir) {
            return Err(fail(PackageError::Scratch {
                path: install_dir,
                source,
            }));
        }
        let (rid, pid) = unit.member;
        let package = &self.plan.releases[rid].packages[pid];
        let archive = self.archives.get(&index).map(PathBuf::as_path);
        if let Err(e) = stage_sources(package, archive, &source_dir, &options.limits) {
            return Err(fail(PackageError::Stage(e)));
        }
        let _ = fs_err::remove_file(&unit.log);
        let base = self.compiler.base;
        let mut input = CompileInput {
            name: unit.name.clone(),
            fingerprint: unit.fingerprint.clone(),
            key: unit.key.clone(),
            base_rootfs: base.rootfs.clone(),
            source_dir,
            install_dir: install_dir.clone(),
            scratch: scratch.join("sandbox"),
            scratch_space: options.scratch_space,
            dependencies: unit
                .dependencies
                .iter()
                .map(|&d| (self.units[d].name.clone(), self.units[d].published.clone()))
                .collect(),
            bash: base.bash.clone(),
            log: unit.log.clone(),
            network: options.network,
            timeout: options.timeout,
            memory_limit: options.memory_limit,
            source_date_epoch: options.source_date_epoch,
        };
        let mut outcome = match self.compiler.sandbox.run(&sandbox_spec(&input), token) {
            Ok(outcome) => outcome,
            Err(e) => return Err(fail(PackageError::Sandbox(e))),
        };
        self.note_refused_tmpfs(index, &outcome);
        if let (false, true, ScratchSpace::Tmpfs { size }) =
            (outcome.success(), outcome.scratch.full, input.scratch_space)
        {
            if !token.is_cancelled() {
                // Out of room, most likely: the same build again, with its tree on disk.
                self.note(
                    index,
                    format!(
                        "its build filled its {} tmpfs; compiled again with the build tree on disk",
                        human(size)
                    ),
                );
                let _ = remove_tree(&install_dir);
                let _ = fs_err::remove_file(&unit.log);
                if let Err(source) = fs_err::create_dir_all(&install_dir) {
                    return Err(fail(PackageError::Scratch {
                        path: install_dir,
                        source,
                    }));
                }
                input.scratch_space = ScratchSpace::Disk;
                outcome = match self.compiler.sandbox.run(&sandbox_spec(&input), token) {
                    Ok(outcome) => outcome,
                    Err(e) => return Err(fail(PackageError::Sandbox(e))),
                };
            }
        }
        if !outcome.success() {
            return Err(fail(PackageError::Script {
                status: outcome.status,
                oom_killed: outcome.oom_killed,
            }));
        }
        if let Err(source) = publish_dir(&install_dir, &unit.published) {
            return Err(fail(PackageError::Publish {
                path: unit.published.clone(),
                source,
            }));
        }
        let _ = self.to_store.send(ToStore::Compiled(Commit {
            unit: index,
            input,
            lock,
        }));
        self.run_dir.discard(&scratch);
        Ok(started.elapsed().as_secs_f64())
    }

    fn note(&self, index: usize, line: String) {
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        notes.entry(index).or_default().push(line);
    }

    /// The lines for the user about unit `index`.
    pub fn take_notes(&self, index: usize) -> Vec<String> {
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        notes.remove(&index).unwrap_or_default()
    }

    /// Says once per compile why the sandbox could not give a package its tmpfs.
    fn note_refused_tmpfs(&self, index: usize, outcome: &Outcome) {
        if let Some(why) = &outcome.scratch.fallback {
            if !self.tmpfs_refused.swap(true, Ordering::Relaxed) {
                self.note(
                    index,
                    format!("no tmpfs for build trees here ({why}): they go to disk"),
                );
            }
        }
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(text) = fs_err::read(path) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
