//! The container's network namespace, made by the helper rather than by libcontainer, so that
//! its loopback interface can be brought up before the command starts: a fresh netns has `lo`
//! down, and the container keeps no CAP_NET_ADMIN to raise it.
//!
//! The helper is a process of its own per container, so it moves *itself* to the new namespace
//! and the container inherits it (its runtime spec lists no network namespace, see
//! [`super::runtime_spec::inherit_network_namespace`]). That needs no holder process and no
//! path to join, which matters once libcontainer has made the helper non-dumpable: rootless,
//! nothing could open its `/proc/<pid>/ns/net` then.
//!
//! Making a netns keeps the kernel busy for about half a millisecond (`setup_net`). It used to
//! run in a side job beside the rest of the set-up; on compiles both cores are busy anyway and
//! that bought nothing measurable (docs/DECISIONS.md, "The helper makes the network
//! namespace"), so it is a plain call now.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sched::CloneFlags;

#[derive(thiserror::Error, Debug)]
pub enum NetnsError {
    #[error("failed to create a network namespace (unshare CLONE_NEWNET)")]
    Unshare(#[source] nix::Error),
    #[error("failed to bring the loopback interface up in the new network namespace")]
    Loopback(#[source] nix::Error),
}

/// Moves the calling process into a new network namespace with `lo` up. Must be called while
/// single-threaded (the namespace applies to the calling thread only).
pub fn make_and_enter() -> Result<(), NetnsError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
    loopback_up().map_err(NetnsError::Loopback)
}

/// Sets `lo` up (and running) in the calling thread's network namespace.
fn loopback_up() -> nix::Result<()> {
    // SAFETY: socket(2) takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    nix::errno::Errno::result(fd)?;
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is a valid (empty) request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS takes an ifreq naming the interface and fills in its flags; `req`
    // outlives the call. The request's integer type differs between C libraries: `as _`.
    let got = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) };
    nix::errno::Errno::result(got)?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS takes the same ifreq, with the flags to set.
    let set = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut req) };
    nix::errno::Errno::result(set).map(drop)
}
