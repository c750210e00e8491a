//! The container's network namespace, made by the helper rather than by libcontainer, so that
//! its loopback interface can be brought up before the command starts: a fresh netns has `lo`
//! down, and the container keeps no CAP_NET_ADMIN to raise it.
//!
//! The helper is a process of its own per container, so it moves *itself* to the new namespace
//! and the container inherits it (its runtime spec lists no network namespace, see
//! [`super::runtime_spec::inherit_network_namespace`]). That needs no holder process and no
//! path to join, which matters once libcontainer has made the helper non-dumpable: rootless,
//! nothing could open its `/proc/<pid>/ns/net` then.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sched::CloneFlags;

#[derive(thiserror::Error, Debug)]
#[error("failed to create a network namespace with loopback up")]
pub struct NetnsError(#[source] pub nix::Error);

/// Moves the calling process to a new network namespace with `lo` up. Must be called while
/// single-threaded (unshare of a namespace applies to the calling thread only).
pub fn enter_new() -> Result<(), NetnsError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .and_then(|_| lo_up())
        .map_err(NetnsError)
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
