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
//! Making a netns keeps the kernel busy for a while (`setup_net`: loopback, sysctl tables; see
//! docs/DECISIONS.md, "A side job for the network namespace and the work dir"), so the helper
//! has a [`side_job`] sharing its fd table run [`make_in_side_job`] while it prepares the rest,
//! and then joins the namespace with [`enter_made`].

use std::ffi::CStr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use nix::sched::CloneFlags;

use super::side_job;

#[derive(thiserror::Error, Debug)]
#[error("failed to create a network namespace with loopback up")]
pub struct NetnsError(#[source] pub nix::Error);

const OWN_NETNS: &CStr = c"/proc/thread-self/ns/net";

/// Side-job part (through [`side_job::sys`] only): moves the calling task to a new network
/// namespace with `lo` up and returns an fd of it, or `-errno`.
pub fn make_in_side_job() -> i32 {
    let unshared = side_job::sys::unshare(libc::CLONE_NEWNET);
    if unshared < 0 {
        return unshared;
    }
    let up = lo_up();
    if up < 0 {
        return up;
    }
    side_job::sys::open(OWN_NETNS, libc::O_RDONLY | libc::O_CLOEXEC)
}

/// Moves the calling process into the namespace [`make_in_side_job`] made, given what it
/// returned in a side job that shared our fd table. Must be called while single-threaded
/// (setns of a namespace applies to the calling thread only).
pub fn enter_made(made: i32) -> Result<(), NetnsError> {
    if made < 0 {
        return Err(NetnsError(nix::Error::from_raw(-made)));
    }
    // SAFETY: the side job opened this fd in our shared table for us alone and is gone.
    let ns = unsafe { OwnedFd::from_raw_fd(made) };
    nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(NetnsError)
}

/// Sets `lo` up in the calling thread's network namespace, through [`side_job::sys`]: 0 or
/// `-errno`.
fn lo_up() -> i32 {
    let sock = side_job::sys::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC);
    if sock < 0 {
        return sock;
    }
    // SAFETY: an all-zero ifreq is a valid (empty) request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS take an ifreq naming the interface.
    let mut result = unsafe {
        side_job::sys::ioctl(sock, libc::SIOCGIFFLAGS, std::ptr::addr_of_mut!(req).cast())
    };
    if result >= 0 {
        // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
        unsafe {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: as above.
        result = unsafe {
            side_job::sys::ioctl(sock, libc::SIOCSIFFLAGS, std::ptr::addr_of_mut!(req).cast())
        };
    }
    side_job::sys::close(sock);
    result.min(0)
}
