//! The container's network namespace, made by the helper rather than by libcontainer, so that
//! its loopback interface can be brought up before the command starts: a fresh netns has `lo`
//! down, the container keeps no CAP_NET_ADMIN to raise it, and once libcontainer has made its
//! processes non-dumpable nothing can enter their namespaces from outside (rootless, not even
//! the owner of their user namespace, because their memory map belongs to the host's).
//!
//! A forked child unshares a network namespace, raises `lo` and waits; the runtime spec names
//! `/proc/<child>/ns/net` and libcontainer joins it. The child exits when released (after the
//! container is built) or when the helper dies; the namespace lives on in the container.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, Pid};

#[derive(thiserror::Error, Debug)]
pub enum NetnsError {
    #[error("failed to set up the network namespace holder")]
    Setup(#[source] std::io::Error),
    #[error("failed to create a network namespace with loopback up (errno {errno})")]
    Child { errno: i32 },
}

/// A network namespace with `lo` up, held by a child process until released.
pub struct NetnsHolder {
    pid: Pid,
    control: UnixStream,
}

impl NetnsHolder {
    /// Must be called while single-threaded and before the process turns non-dumpable.
    pub fn create() -> Result<NetnsHolder, NetnsError> {
        let (ours, theirs) = UnixStream::pair().map_err(NetnsError::Setup)?;
        // SAFETY: single-threaded; the child only makes syscalls and leaves with _exit.
        match unsafe { nix::unistd::fork() }.map_err(|e| NetnsError::Setup(e.into()))? {
            ForkResult::Child => {
                drop(ours);
                let mut theirs = theirs;
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                let errno =
                    match nix::sched::unshare(CloneFlags::CLONE_NEWNET).and_then(|_| lo_up()) {
                        Ok(()) => 0,
                        Err(err) => err as i32,
                    };
                let _ = theirs.write_all(&errno.to_le_bytes());
                // Hold the namespace until the helper closes its end (or dies).
                let mut rest = Vec::new();
                let _ = theirs.read_to_end(&mut rest);
                // SAFETY: leave the forked child without running the parent's destructors.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                let mut holder = NetnsHolder {
                    pid: child,
                    control: ours,
                };
                let mut status = [0u8; 4];
                holder
                    .control
                    .read_exact(&mut status)
                    .map_err(NetnsError::Setup)?;
                match i32::from_le_bytes(status) {
                    0 => Ok(holder),
                    errno => Err(NetnsError::Child { errno }),
                }
            }
        }
    }

    /// The namespace file for the runtime spec.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid))
    }
}

impl Drop for NetnsHolder {
    /// Lets the child exit and reaps it; the namespace stays alive while anything is in it.
    fn drop(&mut self) {
        let _ = self.control.shutdown(std::net::Shutdown::Both);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

fn lo_up() -> nix::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(nix::Error::last());
        }
        let sock = OwnedFd::from_raw_fd(sock);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(nix::Error::last());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(nix::Error::last());
        }
    }
    Ok(())
}
