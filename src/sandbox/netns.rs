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
//! Making a netns takes the kernel about half a millisecond (`setup_net`: loopback, sysctl
//! tables), so the helper has a [`side_job`] sharing its fd table run [`make_in_side_job`]
//! while it prepares the rest, and then joins the namespace with [`enter_made`].

use std::ffi::CStr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use nix::sched::CloneFlags;

use super::side_job;

#[derive(thiserror::Error, Debug)]
#[error("failed to create a network namespace with loopback up")]
pub struct NetnsError(#[source] pub nix::Error);

const OWN_NETNS: &CStr = c"/proc/thread-self/ns/net";

/// Side-job part (raw system calls only): moves the calling process to a new network namespace
/// with `lo` up and returns an fd of it, or `-errno`.
pub fn make_in_side_job() -> i32 {
    // SAFETY: raw system calls on a static C string.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return side_job::last_errno();
        }
        if let Err(err) = lo_up() {
            return -(err as i32);
        }
        let fd = libc::open(OWN_NETNS.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return side_job::last_errno();
        }
        fd
    }
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

/// Sets `lo` up in the calling thread's network namespace, with raw system calls only.
fn lo_up() -> Result<(), nix::Error> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(nix::Error::last());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(nix::Error::last());
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                result = Err(nix::Error::last());
            }
        }
        libc::close(sock);
        result
    }
}
