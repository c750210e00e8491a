//! One package's compile, as a scheduler job: a scratch dir, its sources staged, the packaging
//! script run in a sandbox (again on disk when its build outgrew its tmpfs), the output
//! published for dependants at once, the commit to the store handed to the committer thread,
//! and the scratch dir moved to the run's trash: deleting thousands of inodes between packages
//! slowed the next ones down (docs/DECISIONS.md, "Scratch dirs to a trash emptied after the
//! run").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use super::compiler::Compiler;
use super::outcome::{Failure, PackageError};
use super::package::{publish_dir, sandbox_spec, CompileInput};
use super::scratch::human;
use super::stage::stage_sources;
use super::units::Unit;
use crate::cancel::CancelToken;
use crate::plan::Plan;
use crate::sandbox::{Outcome, ScratchSpace};
use crate::workdir::{remove_tree, RunDir};

/// A compiled package on its way to the store: unit index and what it was compiled from.
pub(super) struct Commit {
    pub unit: usize,
    pub input: CompileInput,
}

/// What every job of a run shares.
pub(super) struct Jobs<'a> {
    pub compiler: &'a Compiler<'a>,
    pub plan: &'a Plan,
    pub units: &'a [Unit],
    /// Package archives copied out of release tarballs, by unit.
    pub archives: &'a HashMap<usize, PathBuf>,
    pub run_dir: &'a RunDir,
    pub commits: mpsc::Sender<Commit>,
    /// Lines for the user about a unit, shown when it finishes.
    pub notes: Mutex<HashMap<usize, Vec<String>>>,
    /// The sandbox could not give a package its tmpfs, and the user was told why (once).
    pub tmpfs_refused: AtomicBool,
}

impl Jobs<'_> {
    /// Compiles unit `index`; returns the seconds it took.
    pub fn run(&self, index: usize, token: &CancelToken) -> Result<f64, Box<Failure>> {
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
        let _ = self.commits.send(Commit { unit: index, input });
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
