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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
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
use crate::shared_cache::SharedCache;
use crate::workdir::{remove_tree, NameLock, RunDir};

/// Polls for a package another shard compiles: once its dependencies are known to be in the
/// registry (it cannot be there before them), the first at once, then `POLL_FIRST` later and
/// half as long again each time, at most `POLL_MAX` apart.
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_millis(500);
/// How often a waiting job looks again, which costs no request unless a listing or a key is
/// due. Shorter costs CPU the compiles need (`scripts/bench/fleet.sh` was no faster with 25 ms
/// and a 50 ms listing interval).
const WAIT_TICK: Duration = Duration::from_millis(50);
/// Times a listed tag may fail to answer before the listing is no longer believed for it (a
/// push that died between making the tag's directory and writing its link leaves a tag that
/// distribution lists for good): from then on its key is looked up with `HEAD`s.
const LISTED_BUT_MISSING: u32 = 3;

/// What this run knows of one package in the shared cache, by scheduler position: whether it
/// is there (or done here, so it will be), the manifest a poll found, when its key may be
/// polled again and how often it was.
#[derive(Default)]
pub(super) struct Presence {
    pub known: std::sync::atomic::AtomicBool,
    pub compiled_here: std::sync::atomic::AtomicBool,
    found: std::sync::Mutex<Option<String>>,
    due: std::sync::Mutex<(Option<Instant>, u32)>,
    /// How often a listing showed its tag and the tag did not answer.
    listed_missing: std::sync::atomic::AtomicU32,
}

impl Presence {
    /// Takes note that the cache has the package, to be pulled by `reference` (its tag, or
    /// the digest a lookup found).
    fn found_at(&self, reference: String) {
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(reference);
        self.known.store(true, Ordering::SeqCst);
    }

    /// Forgets what [`Presence::found_at`] noted: the tag did not answer.
    fn forget(&self) {
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.known.store(false, Ordering::SeqCst);
    }

    /// Whether listings are still believed about this key.
    fn listing_believed(&self) -> bool {
        self.listed_missing.load(Ordering::SeqCst) < LISTED_BUT_MISSING
    }

    /// Whether this caller may poll the key now; if so, the next poll is pushed back.
    fn claim(&self, now: Instant) -> bool {
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        if due.0.is_some_and(|at| now < at) {
            return false;
        }
        let pause = POLL_FIRST.mul_f64(1.5f64.powi(due.1.min(20) as i32));
        *due = (Some(now + pause.min(POLL_MAX)), due.1 + 1);
        true
    }
}

/// Why a pull did not give the package.
enum PullFailed {
    /// The cache failed, and told: compile it here instead.
    CompileHere,
    /// Its tag is not there (yet): wait for it again.
    NotYet,
    /// The failure that ends the package (`--cache-required`).
    Ends(Box<Failure>),
}

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
    /// What the sweep found in the shared cache, by unit: the reference to pull it by.
    pub remote_hits: &'a [Option<String>],
    /// Past this, a shard stops waiting for other shards and compiles what it needs.
    pub deadline: Instant,
    /// Lookups so far (polls, or a lookup before a compile), by scheduler position.
    pub polls: Vec<AtomicUsize>,
    /// Lines for the user about a unit, shown when it finishes.
    pub notes: Mutex<HashMap<usize, Vec<String>>>,
    /// The sandbox could not give a package its tmpfs, and the user was told why (once).
    pub tmpfs_refused: AtomicBool,
    /// Each node's dependencies among the scheduled nodes, by scheduler position.
    pub deps: Vec<Vec<usize>>,
    /// Whether this shard compiles the node, by scheduler position.
    pub mine: Vec<bool>,
    /// What is known of each node in the shared cache, by scheduler position.
    pub presence: Vec<Presence>,
    /// Each node's tag in the shared cache, by scheduler position.
    pub tags: Vec<String>,
    /// The newest listing of the cache's tags taken note of.
    pub listing_seen: AtomicU64,
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
        let result = self.step_mode(index, pos, token);
        if let Ok(Step::Done(done)) = &result {
            // Done here: in the cache soon (pushed), or already (pulled).
            self.presence[pos].known.store(true, Ordering::SeqCst);
            if matches!(done, Done::Compiled { .. }) {
                self.presence[pos]
                    .compiled_here
                    .store(true, Ordering::SeqCst);
            }
        }
        result
    }

    fn step_mode(&self, index: usize, pos: usize, token: &CancelToken) -> JobResult {
        match self.mode(pos) {
            Mode::Fetch => {
                let reference = self.remote_hits[index].clone();
                self.fetch_or_compile(index, pos, reference.as_deref(), token)
            }
            Mode::Wait => self.wait(index, pos, token),
            Mode::Compile => self.compile(index, pos, token).map(Step::Done),
        }
    }

    /// One look for a package another shard compiles: pulled once the cache has it; past the
    /// deadline (or with the cache gone) compiled here. The run's listing of the cache's tags
    /// answers for every key at once ([`SharedCache::listing`]); without one (or for a key the
    /// listing lied about), only the packages it needs whose own dependencies are known to be
    /// in the cache are looked up (the fleet's frontier), each key once per interval however
    /// many jobs wait for it.
    fn wait(&self, index: usize, pos: usize, token: &CancelToken) -> JobResult {
        let unit = &self.units[index];
        let Some(cache) = self.cache() else {
            self.set_mode(pos, Mode::Compile);
            return Ok(Step::Attach { lane: 0 });
        };
        let now = Instant::now();
        if now >= self.deadline && !self.presence[pos].known.load(Ordering::SeqCst) {
            // One last look at the package itself, whatever is known of its dependencies.
            self.polls[pos].fetch_add(1, Ordering::SeqCst);
            match cache.lookup(&self.tags[pos]) {
                Ok(Some(found)) => {
                    return self.fetch_or_compile(index, pos, Some(found.digest().as_ref()), token)
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
            return Ok(Step::Attach { lane: 0 });
        }
        let listing = cache.listing(false);
        if let Some((generation, listed)) = &listing {
            let generation = *generation;
            // One listing answers for every key this run waits for; whoever sees a new one
            // first takes note of what it has.
            if self.listing_seen.fetch_max(generation, Ordering::SeqCst) < generation {
                for (k, tag) in self.tags.iter().enumerate() {
                    let presence = &self.presence[k];
                    if !presence.known.load(Ordering::SeqCst)
                        && presence.listing_believed()
                        && listed.contains(tag)
                    {
                        presence.found_at(tag.clone());
                    }
                }
            }
        }
        if listing.is_none() || !self.presence[pos].listing_believed() {
            self.poll_frontier(pos, now, cache)
                .map_err(|e| self.failure(index, e))?;
            if !cache.usable() {
                self.set_mode(pos, Mode::Compile);
                return Ok(Step::Attach { lane: 0 });
            }
        }
        let found = self.presence[pos]
            .found
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match found {
            Some(reference) => self.fetch_or_compile(index, pos, Some(&reference), token),
            None => Ok(Step::Later(WAIT_TICK)),
        }
    }

    /// Looks up, one `HEAD` each, the keys of the frontier of node `pos` that are due, and
    /// takes note of those found. `Err`: the failure that ends the package
    /// (`--cache-required`).
    fn poll_frontier(
        &self,
        pos: usize,
        now: Instant,
        cache: &SharedCache,
    ) -> Result<(), PackageError> {
        for k in self.frontier(pos) {
            if !self.presence[k].claim(now) {
                continue;
            }
            self.polls[k].fetch_add(1, Ordering::SeqCst);
            match cache.lookup(&self.tags[k]) {
                Ok(Some(found)) => self.presence[k].found_at(found.digest().to_string()),
                Ok(None) => {}
                Err(e) => {
                    if let Some(required) = cache.failed(&e, false) {
                        return Err(PackageError::SharedCache(required));
                    }
                    if !cache.usable() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    fn frontier(&self, pos: usize) -> Vec<usize> {
        frontier(pos, &self.deps, &self.mine, |k| {
            self.presence[k].known.load(Ordering::SeqCst)
        })
    }

    /// Pulls the package from the shared cache (by `reference`: its tag, or the digest a
    /// lookup found); if that fails, it is compiled here once its dependencies are (the
    /// scheduler attaches it). A package a listing showed but whose tag does not answer yet
    /// (a registry lists a tag while it is still writing it) is waited for again.
    fn fetch_or_compile(
        &self,
        index: usize,
        pos: usize,
        reference: Option<&str>,
        token: &CancelToken,
    ) -> JobResult {
        let lock = self.lock(index, token)?;
        if let Some(layer) = self.in_store(index) {
            return Ok(Step::Done(Done::Cached { layer }));
        }
        let by_tag = reference.is_none_or(|r| r == self.tags[pos]);
        let wait_again = by_tag && self.mode(pos) == Mode::Wait && Instant::now() < self.deadline;
        self.polls[pos].fetch_add(1, Ordering::SeqCst);
        match self.pull(index, reference, lock, wait_again) {
            Ok(done) => Ok(Step::Done(done)),
            Err(PullFailed::Ends(failure)) => Err(failure),
            Err(PullFailed::NotYet) => {
                self.presence[pos]
                    .listed_missing
                    .fetch_add(1, Ordering::SeqCst);
                self.presence[pos].forget();
                Ok(Step::Later(WAIT_TICK))
            }
            Err(PullFailed::CompileHere) => {
                self.set_mode(pos, Mode::Compile);
                Ok(Step::Attach { lane: 0 })
            }
        }
    }

    /// Pulls unit `index` (its key lock held) and hands it to the committer to be named.
    /// With `missing_is_later`, a tag that is not there is [`PullFailed::NotYet`] rather than
    /// a failure of the cache.
    fn pull(
        &self,
        index: usize,
        reference: Option<&str>,
        lock: Option<NameLock>,
        missing_is_later: bool,
    ) -> Result<Done, PullFailed> {
        let Some(cache) = self.cache() else {
            return Err(PullFailed::CompileHere);
        };
        let started = Instant::now();
        let compiler = self.compiler;
        match pull_unit(
            cache,
            compiler.store,
            self.units,
            index,
            self.base_digest,
            reference,
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
            Err(e) if missing_is_later && e.is_not_found() => Err(PullFailed::NotYet),
            Err(e) => match cache.failed(&e, false) {
                Some(required) => Err(PullFailed::Ends(
                    self.failure(index, PackageError::SharedCache(required)),
                )),
                None => Err(PullFailed::CompileHere),
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
        // Another runner may have pushed it since the sweep; not again after a pull of it
        // failed or a wait for it ran out, nor when a dependency was compiled here (then
        // another runner would have had to compile that one too, at the same time).
        let looked = self.polls[pos].fetch_add(1, Ordering::SeqCst) > 0
            || self.deps[pos]
                .iter()
                .any(|&d| self.presence[d].compiled_here.load(Ordering::SeqCst));
        if let (Some(cache), false) = (self.cache(), looked) {
            let tag = &self.tags[pos];
            let found = match cache.listing(false) {
                Some((_, listed)) => Ok(listed.contains(tag).then(|| tag.clone())),
                None => cache
                    .lookup(tag)
                    .map(|hit| hit.map(|d| d.digest().to_string())),
            };
            match found {
                Ok(Some(reference)) => match self.pull(index, Some(&reference), lock, false) {
                    Ok(done) => return Ok(done),
                    Err(PullFailed::Ends(failure)) => return Err(failure),
                    // The lock went with the failed pull: take it again.
                    Err(PullFailed::NotYet | PullFailed::CompileHere) => {
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

/// What to poll for node `pos`: it and the nodes it needs (`deps`), not yet `known` to be in the
/// cache, that another shard compiles (not `mine`) and whose own dependencies are known to be
/// there. A node of this shard not done yet blocks what depends on it (nothing can be in the
/// cache before it).
fn frontier(
    pos: usize,
    deps: &[Vec<usize>],
    mine: &[bool],
    known: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![pos];
    while let Some(k) = stack.pop() {
        if !seen.insert(k) || known(k) || mine[k] {
            continue;
        }
        let missing: Vec<usize> = deps[k].iter().copied().filter(|&d| !known(d)).collect();
        if missing.is_empty() {
            out.push(k);
        } else {
            stack.extend(missing);
        }
    }
    out.sort_unstable();
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_frontier_is_polled() {
        // 0 and 1 are leaves of another shard; 2 (other) needs 0 and 1; 3 (mine) needs 2;
        // 4 (other) needs 3 and 1; 5 (other) needs 4.
        let deps = vec![vec![], vec![], vec![0, 1], vec![2], vec![3, 1], vec![4]];
        let mine = [false, false, false, true, false, false];
        let known = |set: &'static [usize]| move |k: usize| set.contains(&k);
        // Nothing known: the leaf 1 that 4 needs; not 5 or 4, nor what only 3 (mine, not
        // done) waits for.
        assert_eq!(frontier(5, &deps, &mine, known(&[])), vec![1]);
        assert_eq!(frontier(2, &deps, &mine, known(&[])), vec![0, 1]);
        assert_eq!(frontier(4, &deps, &mine, known(&[])), vec![1]);
        // 0 found: still 1; both found: 2 itself.
        assert_eq!(frontier(2, &deps, &mine, known(&[0])), vec![1]);
        assert_eq!(frontier(2, &deps, &mine, known(&[0, 1])), vec![2]);
        // 3 done here and 1 found: 4 is due, 5 not yet.
        assert_eq!(frontier(5, &deps, &mine, known(&[0, 1, 2, 3])), vec![4]);
        assert_eq!(frontier(5, &deps, &mine, known(&[0, 1, 2, 3, 4])), vec![5]);
        // Known itself: nothing to poll.
        assert!(frontier(5, &deps, &mine, known(&[0, 1, 2, 3, 4, 5])).is_empty());
    }

    #[test]
    fn a_key_is_polled_once_per_interval_and_backs_off() {
        let presence = Presence::default();
        let t0 = Instant::now();
        assert!(presence.claim(t0));
        assert!(
            !presence.claim(t0),
            "a second waiter does not poll the same key"
        );
        assert!(!presence.claim(t0 + POLL_FIRST / 2));
        assert!(presence.claim(t0 + POLL_FIRST));
        // Half as long again: not yet at POLL_FIRST after the second poll.
        assert!(!presence.claim(t0 + POLL_FIRST * 2));
        assert!(presence.claim(t0 + POLL_FIRST * 3));
        let mut at = t0 + POLL_FIRST * 3;
        for _ in 0..30 {
            at += POLL_MAX;
            assert!(presence.claim(at), "never more than POLL_MAX apart");
        }
    }
}
