//! A package's compile sandbox, opened for a person: its dependencies compiled (from the cache
//! when they are there) and mounted, its sources staged (or the scratch dir a failed
//! `compile --keep-sandbox` kept, reopened as it was left), and the BOSH environment set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::compiler::{CompileError, Compiler};
use super::key::cache_key;
use super::outcome::PackageError;
use super::package::{sandbox_spec, CompileInput};
use super::report::Metrics;
use super::stage::{materialize_packages, stage_sources, StageError};
use crate::cancel::CancelToken;
use crate::plan::{NodeId, Plan};
use crate::sandbox::{SandboxSpec, ScratchSpace};
use crate::workdir::{remove_tree, RunDir, WorkDir};

#[derive(thiserror::Error, Debug)]
pub enum ShellError {
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("dependency {name} failed to compile: {error}{}", .log.as_ref().map(|l| format!(" (see {})", l.display())).unwrap_or_default())]
    Dependency {
        name: String,
        error: Box<PackageError>,
        log: Option<PathBuf>,
    },
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("{name} is a package of a compiled release (for {stemcell}): there is nothing to compile; open a shell on a source release's package")]
    Compiled { name: String, stemcell: String },
    #[error("cannot create {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A prepared compile sandbox: run [`ShellSession::spec`] (with the caller's command, terminal
/// and prompt), then [`ShellSession::clean_up`].
pub struct ShellSession {
    pub package: String,
    pub spec: SandboxSpec,
    /// Whether `scratch` is the dir a failed compile kept (else freshly staged, removed after).
    pub reopened: bool,
    scratch: PathBuf,
    /// The run dir of a fresh staging: removed with the session.
    _run_dir: Option<RunDir>,
}

impl ShellSession {
    /// Removes what the shell staged, unless it reopened a kept scratch dir, which stays (with
    /// what the shell changed) for the next look.
    pub fn clean_up(self) {
        if !self.reopened {
            let _ = remove_tree(&self.scratch);
        }
    }
}

impl Compiler<'_> {
    /// Compiles `target`'s dependencies, then prepares its compile sandbox.
    pub fn prepare_shell(&self, plan: &Plan, target: NodeId) -> Result<ShellSession, ShellError> {
        if let Some(stemcell) = &plan.nodes[target].compiled_for {
            return Err(ShellError::Compiled {
                name: plan.nodes[target].name.clone(),
                stemcell: stemcell.to_string(),
            });
        }
        let deps_plan = plan.restricted_to(&plan.dependency_closure(target));
        let report = self.compile(
            &deps_plan,
            CancelToken::new(),
            &mut Metrics::none(),
            &mut |_| {},
        )?;
        if let Some(f) = report.failures.into_iter().next() {
            return Err(ShellError::Dependency {
                name: f.name,
                error: Box::new(f.error),
                log: f.log,
            });
        }
        let keys: HashMap<&str, &str> = report
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.cache_key.as_str()))
            .collect();
        let node = &plan.nodes[target];
        let direct: Vec<(String, PathBuf, String)> = node
            .dependencies
            .iter()
            .map(|&d| {
                let name = plan.nodes[d].name.clone();
                let key = keys[name.as_str()].to_string();
                (name, self.wd.packages().join(&key), key)
            })
            .collect();
        let key = cache_key(
            &node.name,
            &node.fingerprint,
            self.base.descriptor.digest().as_ref(),
            &direct
                .iter()
                .map(|(name, _, key)| (name.clone(), key.clone()))
                .collect::<Vec<_>>(),
        );

        let kept = find_kept_scratch(self.wd, &node.name, &key);
        let reopened = kept.is_some();
        let mut run_dir = None;
        let scratch = match kept {
            Some(dir) => dir,
            None => {
                let run = RunDir::create(self.wd, "shell-").map_err(|source| ShellError::Io {
                    path: self.wd.runs(),
                    source,
                })?;
                let dir = run.path().join(&node.name);
                run_dir = Some(run);
                let (rid, pid) = node.members[0];
                let package = &plan.releases[rid].packages[pid];
                let archive = materialize_packages([((), package)], &dir)?.remove(&());
                stage_sources(
                    package,
                    archive.as_deref(),
                    &dir.join("source"),
                    &self.options.limits,
                )?;
                let install = dir.join("install");
                fs_err::create_dir_all(&install).map_err(|source| ShellError::Io {
                    path: install,
                    source,
                })?;
                dir
            }
        };
        let input = CompileInput {
            name: node.name.clone(),
            fingerprint: node.fingerprint.clone(),
            key,
            base_rootfs: self.base.rootfs.clone(),
            source_dir: scratch.join("source"),
            install_dir: scratch.join("install"),
            // Where a compile kept its build tree: the shell goes on from it, and leaves it for
            // the next look.
            scratch: scratch.join("sandbox"),
            scratch_space: ScratchSpace::Disk,
            dependencies: direct
                .into_iter()
                .map(|(name, dir, _)| (name, dir))
                .collect(),
            bash: self.base.bash.clone(),
            log: scratch.join("shell.log"),
            network: self.options.network,
            timeout: None,
            memory_limit: None,
            source_date_epoch: self.options.source_date_epoch,
        };
        Ok(ShellSession {
            package: node.name.clone(),
            spec: sandbox_spec(&input),
            reopened,
            scratch,
            _run_dir: run_dir,
        })
    }
}

/// The newest scratch dir a `compile --keep-sandbox` kept for this package and key.
fn find_kept_scratch(wd: &WorkDir, name: &str, key: &str) -> Option<PathBuf> {
    let wanted = format!("{name}-{}", &key[..12]);
    let mut found: Vec<PathBuf> = fs_err::read_dir(wd.runs())
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(&wanted))
        .filter(|p: &PathBuf| Path::new(p).join("source").is_dir())
        .collect();
    found.sort();
    found.pop()
}
