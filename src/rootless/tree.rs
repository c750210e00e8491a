//! The tree helper, `fissile-oci __tree-helper`: a short-lived process that moves into a user
//! namespace where the caller is root and its whole subordinate id range is mapped, and does one
//! job on a tree there. In that namespace it has `CAP_DAC_OVERRIDE` and `CAP_FOWNER` over every
//! file the caller's sandboxes and mmdebstrap wrote, whatever their owner and mode (a
//! `0640 root:shadow` file, a `0700` directory of `_apt`), which the bare user can neither read
//! nor remove.
//!
//! The caller writes one [`TreeJob`] as JSON on the helper's stdin and reads one reply from its
//! stdout. The helper gets SIGKILL when the thread that started it ends, so a dying caller
//! leaves no helper behind; what it was writing is a temp file the next `cache gc` removes.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};
use serde::{Deserialize, Serialize};

use super::idmap::{IdMaps, MapRange};
use crate::oci::{Layer, LayerOptions, OciStore};
use crate::sandbox::HostContext;

/// The hidden subcommand that runs the tree helper.
pub const TREE_HELPER_SUBCOMMAND: &str = "__tree-helper";

/// One job for the helper.
#[derive(Debug, Serialize, Deserialize)]
pub enum TreeJob {
    /// Remove these trees (files, directories, symlinks; missing ones are fine).
    Remove { paths: Vec<PathBuf> },
    /// Scrub what a bootstrap leaves that is specific to the host or the moment
    /// (`rootfs_builder::normalize`).
    Normalize { tree: PathBuf },
    /// Write `tree` as a layer into the store at `store`; the options' owners are read through
    /// the helper's own map.
    WriteLayer {
        store: PathBuf,
        tree: PathBuf,
        options: LayerOptions,
    },
}

impl TreeJob {
    fn describe(&self) -> String {
        match self {
            TreeJob::Remove { paths } => format!(
                "removing {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TreeJob::Normalize { tree } => format!("normalising {}", tree.display()),
            TreeJob::WriteLayer { tree, .. } => format!("writing a layer of {}", tree.display()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum TreeReply {
    Done,
    Layer(Box<Layer>),
    Failed { message: String },
}

#[derive(thiserror::Error, Debug)]
pub enum TreeError {
    #[error("cannot start the tree helper ({exe} {TREE_HELPER_SUBCOMMAND})", exe = .exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot talk to the tree helper (pid {pid})")]
    Io {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("the tree helper (pid {pid}) ended ({status}) without an answer while {job}")]
    Died {
        pid: u32,
        status: String,
        job: String,
    },
    #[error("the tree helper (pid {pid}) gave an unreadable answer")]
    BadReply {
        pid: u32,
        #[source]
        source: serde_json::Error,
    },
    #[error("{job} in a user namespace with the subordinate ids mapped failed: {message}")]
    Failed { job: String, message: String },
}

/// Starts tree helpers from one executable.
#[derive(Clone, Debug)]
pub struct TreeHelper {
    exe: PathBuf,
}

impl TreeHelper {
    /// `exe` is the fissile-oci binary (`/proc/self/exe` in the CLI: it stays valid when the
    /// binary is replaced on disk mid-run).
    pub fn new(exe: PathBuf) -> TreeHelper {
        TreeHelper { exe }
    }

    /// Removes `paths` in the helper's namespace.
    pub fn remove(&self, paths: &[PathBuf]) -> Result<(), TreeError> {
        self.run(&TreeJob::Remove {
            paths: paths.to_vec(),
        })
        .map(drop)
    }

    /// Normalises a bootstrapped tree in the helper's namespace.
    pub fn normalize(&self, tree: &Path) -> Result<(), TreeError> {
        self.run(&TreeJob::Normalize {
            tree: tree.to_path_buf(),
        })
        .map(drop)
    }

    /// Writes `tree` as a layer into `store` from the helper's namespace.
    pub fn write_layer(
        &self,
        store: &OciStore,
        tree: &Path,
        options: &LayerOptions,
    ) -> Result<Layer, TreeError> {
        let job = TreeJob::WriteLayer {
            store: store.root().to_path_buf(),
            tree: tree.to_path_buf(),
            options: options.clone(),
        };
        match self.run(&job)? {
            Some(layer) => Ok(layer),
            None => Err(TreeError::Failed {
                job: job.describe(),
                message: "the helper answered without a layer".into(),
            }),
        }
    }

    fn run(&self, job: &TreeJob) -> Result<Option<Layer>, TreeError> {
        let mut command = Command::new(&self.exe);
        command
            .arg(TREE_HELPER_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: between fork and exec the child only calls prctl, which is async-signal-safe.
        // The helper must not outlive the thread that waits for it.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| TreeError::Spawn {
            exe: self.exe.clone(),
            source,
        })?;
        let pid = child.id();
        let io = |source| TreeError::Io { pid, source };
        let json = serde_json::to_vec(job).expect("a tree job always serialises");
        let sent = child.stdin.take().expect("stdin is piped").write_all(&json);
        let mut answer = Vec::new();
        let read = child
            .stdout
            .take()
            .expect("stdout is piped")
            .read_to_end(&mut answer);
        let status = child.wait().map_err(io)?;
        if answer.is_empty() {
            return Err(TreeError::Died {
                pid,
                status: status.to_string(),
                job: job.describe(),
            });
        }
        sent.map_err(io)?;
        read.map_err(io)?;
        match serde_json::from_slice(&answer)
            .map_err(|source| TreeError::BadReply { pid, source })?
        {
            TreeReply::Done => Ok(None),
            TreeReply::Layer(layer) => Ok(Some(*layer)),
            TreeReply::Failed { message } => Err(TreeError::Failed {
                job: job.describe(),
                message,
            }),
        }
    }
}

/// The helper's id maps: the caller's own uid and gid as 0 and, when it has subordinate ranges
/// and `newuidmap`/`newgidmap`, the whole ranges from 1 on. The sandbox maps the same ids at the
/// same places, only fewer of them (65535), so its trees read here as they were written; and
/// everything mmdebstrap's unshare mode writes (the range from its start) is in it too.
pub fn helper_maps(host: &HostContext) -> IdMaps {
    let mut uids = vec![MapRange::new(0, host.euid, 1)];
    let mut gids = vec![MapRange::new(0, host.egid, 1)];
    if let (Some(u), Some(g), true) = (host.subuid, host.subgid, host.id_map_helpers) {
        uids.push(MapRange::new(1, u.start, u.count));
        gids.push(MapRange::new(1, g.start, g.count));
    }
    IdMaps { uids, gids }
}

/// Entry point of the hidden subcommand: reads a job on stdin, does it in the helper's user
/// namespace, answers on stdout. Returns the exit code.
pub fn tree_helper_main() -> i32 {
    let mut input = Vec::new();
    let reply = match std::io::stdin().read_to_end(&mut input) {
        Err(e) => failed(format!("reading the job from stdin: {e}")),
        Ok(_) => match serde_json::from_slice::<TreeJob>(&input) {
            Err(e) => failed(format!("reading the job from stdin: {e}")),
            Ok(job) => run_job(job),
        },
    };
    let code = match reply {
        TreeReply::Failed { .. } => 1,
        _ => 0,
    };
    let json = serde_json::to_vec(&reply).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(&json)
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return 1;
    }
    code
}

fn failed(message: String) -> TreeReply {
    TreeReply::Failed { message }
}

/// The whole error chain in one line: the caller shows it as the helper's message.
fn chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn run_job(job: TreeJob) -> TreeReply {
    let host = HostContext::detect();
    let maps = helper_maps(&host);
    if let Err(e) = enter(&maps) {
        return failed(chain(&e));
    }
    match job {
        TreeJob::Remove { paths } => {
            for path in paths {
                if let Err(e) = crate::workdir::remove_tree(&path) {
                    return failed(chain(&e));
                }
            }
            TreeReply::Done
        }
        TreeJob::Normalize { tree } => match rootfs_builder::normalize::normalize(&tree) {
            Ok(()) => TreeReply::Done,
            Err(e) => failed(chain(&e)),
        },
        TreeJob::WriteLayer {
            store,
            tree,
            mut options,
        } => {
            options.owners = options.owners.read_from(maps);
            match OciStore::open(&store).and_then(|s| crate::oci::write_layer(&s, &tree, &options))
            {
                Ok(layer) => TreeReply::Layer(Box::new(layer)),
                Err(e) => failed(chain(&e)),
            }
        }
    }
}

/// Only a user namespace: mounts, cgroups and the network stay the caller's.
fn enter(maps: &IdMaps) -> Result<(), crate::sandbox::userns::UserNsError> {
    let linux = |ranges: &[MapRange]| -> Vec<LinuxIdMapping> {
        ranges
            .iter()
            .map(|r| {
                LinuxIdMappingBuilder::default()
                    .container_id(r.inside)
                    .host_id(r.outside)
                    .size(r.count)
                    .build()
                    .expect("all id mapping fields are set")
            })
            .collect()
    };
    crate::sandbox::userns::enter_user_namespace(
        CloneFlags::CLONE_NEWUSER,
        &linux(&maps.uids),
        &linux(&maps.gids),
    )
}
