//! The tree helper, `fissile-oci __tree-helper`: a process that moves into a user namespace
//! where the caller is root and its whole subordinate id range is mapped, and does jobs on trees
//! there. In that namespace it has `CAP_DAC_OVERRIDE` and `CAP_FOWNER` over every file the
//! caller's sandboxes and mmdebstrap wrote, whatever their owner and mode (a `0640 root:shadow`
//! file, a `0700` directory of `_apt`), which the bare user can neither read nor remove.
//!
//! One helper serves a whole run: it is started on the first job and answers one JSON line per
//! JSON line of [`TreeJob`] on its stdin, so a compile whose every package needs it pays for the
//! user namespace and `newuidmap` once, not per package. It exits when its stdin closes, which
//! is when the caller exits, however it dies (a job in progress is finished first: every job is
//! idempotent, and a half-written layer is a temp file `cache gc` removes). A helper that died
//! (a stray signal) is started again once for the same job.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

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
    #[error("the tree helper (pid {pid}) ended ({status}) without an answer, twice, while {job}")]
    Died {
        pid: u32,
        status: String,
        job: String,
        #[source]
        source: std::io::Error,
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

/// The tree helper of this process: started from one executable on the first job, then reused.
#[derive(Debug)]
pub struct TreeHelper {
    exe: PathBuf,
    running: Mutex<Option<Running>>,
}

/// A started helper and the two ends of its pipes.
#[derive(Debug)]
struct Running {
    child: Child,
    jobs: ChildStdin,
    replies: BufReader<ChildStdout>,
}

/// Why a job got no answer.
enum Lost {
    /// Never sent or never answered: the helper is gone.
    Helper(std::io::Error),
    /// Answered with something that is not a reply.
    Garbled(serde_json::Error),
}

impl TreeHelper {
    /// `exe` is the fissile-oci binary (`/proc/self/exe` in the CLI: it stays valid when the
    /// binary is replaced on disk mid-run).
    pub fn new(exe: PathBuf) -> TreeHelper {
        TreeHelper {
            exe,
            running: Mutex::new(None),
        }
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

    /// Sends `job` to the helper (started if needed) and waits for its answer; one job at a
    /// time, whatever the thread.
    fn run(&self, job: &TreeJob) -> Result<Option<Layer>, TreeError> {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut restarted = false;
        let reply = loop {
            let helper = match running.as_mut() {
                Some(helper) => helper,
                None => running.insert(self.start()?),
            };
            let pid = helper.child.id();
            match helper.ask(job) {
                Ok(reply) => break reply,
                Err(lost) => {
                    // Gone or garbled: never ask that process again.
                    let mut gone = running.take().expect("a helper was running");
                    drop(gone.jobs);
                    let status = gone
                        .child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string());
                    match lost {
                        Lost::Garbled(source) => return Err(TreeError::BadReply { pid, source }),
                        Lost::Helper(_) if !restarted => restarted = true,
                        Lost::Helper(source) => {
                            return Err(TreeError::Died {
                                pid,
                                status,
                                job: job.describe(),
                                source,
                            })
                        }
                    }
                }
            }
        };
        match reply {
            TreeReply::Done => Ok(None),
            TreeReply::Layer(layer) => Ok(Some(*layer)),
            TreeReply::Failed { message } => Err(TreeError::Failed {
                job: job.describe(),
                message,
            }),
        }
    }

    fn start(&self) -> Result<Running, TreeError> {
        let mut child = Command::new(&self.exe)
            .arg(TREE_HELPER_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| TreeError::Spawn {
                exe: self.exe.clone(),
                source,
            })?;
        Ok(Running {
            jobs: child.stdin.take().expect("stdin is piped"),
            replies: BufReader::new(child.stdout.take().expect("stdout is piped")),
            child,
        })
    }
}

impl Running {
    fn ask(&mut self, job: &TreeJob) -> Result<TreeReply, Lost> {
        let mut line = serde_json::to_vec(job).expect("a tree job always serialises");
        line.push(b'\n');
        self.jobs
            .write_all(&line)
            .and_then(|()| self.jobs.flush())
            .map_err(Lost::Helper)?;
        let mut answer = String::new();
        match self.replies.read_line(&mut answer) {
            Ok(0) => Err(Lost::Helper(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => serde_json::from_str(&answer).map_err(Lost::Garbled),
            Err(e) => Err(Lost::Helper(e)),
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

/// Entry point of the hidden subcommand: enters the helper's user namespace, then answers each
/// job line on stdin with a reply line on stdout until stdin closes. Returns the exit code.
pub fn tree_helper_main() -> i32 {
    let host = HostContext::detect();
    let maps = helper_maps(&host);
    // Entered once, before any job is read; if that fails, every job is told why.
    let entered = enter(&maps).map_err(|e| chain(&e));
    let mut stdout = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let reply = match (&entered, line) {
            (_, Err(_)) => return 1,
            (Err(message), _) => failed(format!("entering the user namespace: {message}")),
            (Ok(()), Ok(line)) => match serde_json::from_str::<TreeJob>(&line) {
                Err(e) => failed(format!("reading the job: {e}")),
                Ok(job) => run_job(job, &maps),
            },
        };
        let mut json = serde_json::to_vec(&reply).unwrap_or_default();
        json.push(b'\n');
        if stdout
            .write_all(&json)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return 1;
        }
    }
    0
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

fn run_job(job: TreeJob, maps: &IdMaps) -> TreeReply {
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
            options.owners = options.owners.read_from(maps.clone());
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
