//! Set-up work a child task does while the helper goes on with the rest.
//!
//! Two steps of a run wait on the kernel rather than on us: making a network namespace
//! (`setup_net`) and clearing the overlay work dir an earlier run left (on a filesystem that
//! discards freed blocks synchronously, every removed dir waits for the device). With a second
//! core, a child does them while the helper builds the spec, bundle and cgroups; the helper
//! waits for it right before the container is built (see docs/DECISIONS.md, "A side job for
//! the network namespace and the work dir").
//!
//! The child is a `clone` with `CLONE_VM`, on a stack of its own: it shares the helper's
//! memory, so neither its start nor its exit copies or tears down an address space, as a fork
//! of the helper did (see docs/DECISIONS.md, "The side job shares the helper's memory"). It
//! runs on another CPU than the helper's when there is one. Sharing memory, it
//! shares glibc's thread state too, `errno` and malloc's unlocked single-thread arena among it:
//! a job must therefore make system calls only through [`sys`] (which never touches `errno`),
//! with everything it needs (paths as C strings) built before the clone, and must not
//! allocate, panic or drop anything that owns memory. Its results are `i32`s, by convention
//! `-errno` on failure.
//!
//! A job has two parts: what the helper waits for, whose results it reports as soon as they
//! are in, and a tail (removing what the first part moved aside) that runs on while the helper
//! goes on; the helper reaps the child at its end.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::unistd::Pid;

/// What a result slot holds until the job has written it: a job that died early.
const NOT_REPORTED: i32 = i32::MIN;

/// The child's stack. Its work is a few system calls deep.
const STACK_SIZE: usize = 64 * 1024;
/// An inaccessible page below the stack, so an overflow faults instead of writing our memory.
const GUARD_SIZE: usize = 4096;

/// A running side job with `N` results; [`Self::wait`] gives them. Dropped unwaited, it is
/// waited for (an fd it opened then stays open until we exit). `'a` is what the job borrows.
pub struct SideJob<'a, const N: usize> {
    child: Option<Pid>,
    /// A `Box<Shared<F, N>>`, freed by `free_shared`.
    shared: *mut u8,
    results: *const [AtomicI32; N],
    reported: *const AtomicI32,
    /// The child has been reaped (or never ran): `shared` and the stack are ours alone.
    free_shared: unsafe fn(*mut u8),
    stack: *mut libc::c_void,
    _borrows: PhantomData<&'a ()>,
}

/// What parent and child share: the job and its results.
struct Shared<F, G, const N: usize> {
    job: F,
    tail: G,
    results: [AtomicI32; N],
    /// 1 once the results are in; the child wakes a futex waiter on it.
    reported: AtomicI32,
}

unsafe fn free_shared<F, G, const N: usize>(shared: *mut u8) {
    // SAFETY: `shared` came from `Box::into_raw` of this type and is freed once.
    drop(unsafe { Box::from_raw(shared.cast::<Shared<F, G, N>>()) });
}

/// Runs `job` and then `tail` in a child sharing our memory (and, with `share_fds`, our fd
/// table, so an fd it opens and reports is ours). See the module doc for what they may do;
/// being `Copy`, they own nothing that calling them could free.
pub fn start<'a, F, G, const N: usize>(
    share_fds: bool,
    job: F,
    tail: G,
) -> nix::Result<SideJob<'a, N>>
where
    F: FnOnce() -> [i32; N] + Copy + 'a,
    G: FnOnce() + Copy + 'a,
{
    let shared = Box::into_raw(Box::new(Shared {
        job,
        tail,
        results: std::array::from_fn(|_| AtomicI32::new(NOT_REPORTED)),
        reported: AtomicI32::new(0),
    }));
    // SAFETY: `shared` is live; only addresses are taken.
    let (results, reported) = unsafe {
        (
            std::ptr::addr_of!((*shared).results),
            std::ptr::addr_of!((*shared).reported),
        )
    };
    let mut side_job = SideJob {
        child: None,
        shared: shared.cast(),
        results,
        reported,
        free_shared: free_shared::<F, G, N>,
        stack: std::ptr::null_mut(),
        _borrows: PhantomData,
    };
    // SAFETY: a fresh private anonymous mapping, ours alone.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            GUARD_SIZE + STACK_SIZE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(nix::Error::last());
    }
    side_job.stack = stack;
    // SAFETY: the mapping is GUARD_SIZE + STACK_SIZE long; the part above the guard page
    // becomes the stack.
    let top = unsafe { stack.cast::<u8>().add(GUARD_SIZE + STACK_SIZE) };
    // SAFETY: as above.
    let usable = unsafe {
        libc::mprotect(
            stack.cast::<u8>().add(GUARD_SIZE).cast(),
            STACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    if usable != 0 {
        return Err(nix::Error::last());
    }
    let mut flags = libc::CLONE_VM | libc::SIGCHLD;
    if share_fds {
        flags |= libc::CLONE_FILES;
    }
    // SAFETY: the child runs `run_job::<F, G, N>` on its own stack (stacks grow down: the top
    // is passed) and leaves with exit(2); `shared` and the stack outlive it (both are released
    // only after it is reaped).
    let pid = unsafe { libc::clone(run_job::<F, G, N>, top.cast(), flags, shared.cast()) };
    if pid < 0 {
        return Err(nix::Error::last());
    }
    side_job.child = Some(Pid::from_raw(pid));
    run_elsewhere(Pid::from_raw(pid));
    Ok(side_job)
}

/// Moves the new child off our CPU before it first runs. Left to itself, the scheduler mostly
/// put it on the helper's own CPU, where it waited for the helper to block and then ran
/// serially: the overlap the side job exists for did not happen (see docs/DECISIONS.md, "The
/// side job runs on another CPU"). Best effort: with one allowed CPU, or on any error, the
/// child stays where it is.
fn run_elsewhere(child: Pid) {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    // SAFETY: sched_getcpu(3) has no preconditions.
    let here = unsafe { libc::sched_getcpu() };
    let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
        return;
    };
    let mut elsewhere = CpuSet::new();
    let mut any = false;
    for cpu in 0..CpuSet::count() {
        if cpu as i32 != here && allowed.is_set(cpu).unwrap_or(false) {
            let _ = elsewhere.set(cpu);
            any = true;
        }
    }
    if any {
        let _ = sched_setaffinity(child, &elsewhere);
    }
}

/// The child's entry point.
extern "C" fn run_job<F, G, const N: usize>(shared: *mut libc::c_void) -> libc::c_int
where
    F: FnOnce() -> [i32; N] + Copy,
    G: FnOnce() + Copy,
{
    // SAFETY: the parent passed a live `Shared<F, G, N>`, reads the results only once they
    // are reported and frees nothing before it has reaped us; the closures are only read
    // (copied), never moved out.
    let shared = unsafe { &*shared.cast::<Shared<F, G, N>>() };
    let results = (shared.job)();
    for (slot, result) in shared.results.iter().zip(results) {
        slot.store(result, Ordering::Relaxed);
    }
    shared.reported.store(1, Ordering::Release);
    // SAFETY: FUTEX_WAKE of a live aligned i32.
    unsafe {
        sys::call(
            libc::SYS_futex,
            [
                shared.reported.as_ptr() as usize,
                (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize,
                1,
                0,
            ],
        );
    }
    (shared.tail)();
    0
}

impl<const N: usize> SideJob<'_, N> {
    /// Waits for the child's results; its tail may still be running.
    pub fn results(&mut self) -> nix::Result<[i32; N]> {
        // SAFETY: `shared` lives until drop.
        let reported = unsafe { &*self.reported };
        while reported.load(Ordering::Acquire) == 0 {
            let Some(child) = self.child else {
                return Err(nix::Error::ECHILD);
            };
            // A child that dies before reporting never wakes us: look at it now and then.
            let timeout = libc::timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            // SAFETY: FUTEX_WAIT on a live aligned i32 with a valid timeout.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    reported.as_ptr(),
                    libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                    0,
                    &timeout,
                );
            }
            if reported.load(Ordering::Acquire) == 0 {
                let flags = nix::sys::wait::WaitPidFlag::WNOHANG;
                match nix::sys::wait::waitpid(child, Some(flags)) {
                    Ok(nix::sys::wait::WaitStatus::StillAlive) | Err(nix::Error::EINTR) => {}
                    _ => self.child = None,
                }
            }
        }
        // SAFETY: reported: the child no longer writes them.
        let slots = unsafe { &*self.results };
        let results: [i32; N] = std::array::from_fn(|i| slots[i].load(Ordering::Relaxed));
        if results.contains(&NOT_REPORTED) {
            return Err(nix::Error::ECHILD);
        }
        Ok(results)
    }

    /// Waits for the results, then for the child to end (the tests' way to read a job).
    #[cfg(test)]
    pub fn wait(mut self) -> nix::Result<[i32; N]> {
        let results = self.results();
        self.reap();
        results
    }

    fn reap(&mut self) {
        if let Some(child) = self.child.take() {
            while let Err(nix::Error::EINTR) = nix::sys::wait::waitpid(child, None) {}
        }
    }
}

impl<const N: usize> Drop for SideJob<'_, N> {
    fn drop(&mut self) {
        self.reap();
        // SAFETY: the child (if there was one) is reaped: nothing uses these any more.
        unsafe {
            if !self.stack.is_null() {
                libc::munmap(self.stack, GUARD_SIZE + STACK_SIZE);
            }
            (self.free_shared)(self.shared);
        }
    }
}

/// System calls for a side job: they return `-errno` on failure and never write `errno`,
/// which the child shares with the helper.
pub mod sys {
    use std::ffi::CStr;

    /// One system call with up to five arguments, as the kernel returns it.
    ///
    /// # Safety
    /// The arguments must be valid for system call `number`.
    pub unsafe fn call<const A: usize>(number: libc::c_long, args: [usize; A]) -> isize {
        let args: [usize; 5] = std::array::from_fn(|i| args.get(i).copied().unwrap_or(0));
        // SAFETY: passed on from the caller.
        unsafe { raw(number, args) }
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn raw(number: libc::c_long, args: [usize; 5]) -> isize {
        let ret: isize;
        // SAFETY: the caller vouches for the arguments; `syscall` clobbers rcx and r11.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") number as isize => ret,
                in("rdi") args[0],
                in("rsi") args[1],
                in("rdx") args[2],
                in("r10") args[3],
                in("r8") args[4],
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(target_arch = "aarch64")]
    unsafe fn raw(number: libc::c_long, args: [usize; 5]) -> isize {
        let ret: isize;
        // SAFETY: the caller vouches for the arguments.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") number,
                inlateout("x0") args[0] as isize => ret,
                in("x1") args[1],
                in("x2") args[2],
                in("x3") args[3],
                in("x4") args[4],
                options(nostack),
            );
        }
        ret
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    compile_error!(
        "side_job::sys makes system calls for x86_64 and aarch64 only: add this architecture's"
    );

    fn result(ret: isize) -> i32 {
        ret as i32
    }

    pub fn unshare(flags: libc::c_int) -> i32 {
        // SAFETY: unshare(2) takes flags only.
        result(unsafe { call(libc::SYS_unshare, [flags as usize]) })
    }

    pub fn open(path: &CStr, flags: libc::c_int) -> i32 {
        // SAFETY: a NUL-terminated path that outlives the call.
        result(unsafe {
            call(
                libc::SYS_openat,
                [
                    libc::AT_FDCWD as usize,
                    path.as_ptr() as usize,
                    flags as usize,
                    0,
                ],
            )
        })
    }

    pub fn close(fd: i32) -> i32 {
        // SAFETY: close(2) of an fd the job opened.
        result(unsafe { call(libc::SYS_close, [fd as usize]) })
    }

    pub fn socket(domain: libc::c_int, kind: libc::c_int) -> i32 {
        // SAFETY: socket(2) takes integers only.
        result(unsafe { call(libc::SYS_socket, [domain as usize, kind as usize, 0]) })
    }

    /// # Safety
    /// `arg` must be what `request` expects.
    pub unsafe fn ioctl(fd: i32, request: libc::c_ulong, arg: *mut libc::c_void) -> i32 {
        // SAFETY: the caller vouches for `arg`.
        result(unsafe {
            call(
                libc::SYS_ioctl,
                [fd as usize, request as usize, arg as usize, 0],
            )
        })
    }

    pub fn rename(from: &CStr, to: &CStr) -> i32 {
        let here = libc::AT_FDCWD as usize;
        // SAFETY: NUL-terminated paths that outlive the call; no flags.
        result(unsafe {
            call(
                libc::SYS_renameat2,
                [here, from.as_ptr() as usize, here, to.as_ptr() as usize, 0],
            )
        })
    }

    pub fn mkdir(path: &CStr, mode: libc::mode_t) -> i32 {
        // SAFETY: a NUL-terminated path that outlives the call.
        result(unsafe {
            call(
                libc::SYS_mkdirat,
                [
                    libc::AT_FDCWD as usize,
                    path.as_ptr() as usize,
                    mode as usize,
                ],
            )
        })
    }

    /// unlink(2), or rmdir(2) with `dir`.
    pub fn remove(path: &CStr, dir: bool) -> i32 {
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: a NUL-terminated path that outlives the call.
        result(unsafe {
            call(
                libc::SYS_unlinkat,
                [
                    libc::AT_FDCWD as usize,
                    path.as_ptr() as usize,
                    flags as usize,
                    0,
                ],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    #[test]
    fn the_results_of_the_job_come_back() {
        let job = start(false, || [42, -2], || {}).unwrap();
        assert_eq!(job.wait().unwrap(), [42, -2]);
    }

    /// A job reporting `[result]` whose tail blocks until the returned closure is called.
    fn job_with_held_tail(result: i32) -> (SideJob<'static, 1>, impl FnOnce()) {
        let (gate, gate_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let gate_fd = gate.as_raw_fd();
        let job = start(
            false,
            move || [result],
            move || {
                let mut byte = 0u8;
                // SAFETY: read(2) of one byte into a local.
                unsafe {
                    sys::call(
                        libc::SYS_read,
                        [gate_fd as usize, &mut byte as *mut u8 as usize, 1],
                    )
                };
            },
        )
        .unwrap();
        let release = move || {
            nix::unistd::write(&gate_tx, b"x").unwrap();
            drop(gate);
        };
        (job, release)
    }

    #[test]
    fn results_come_before_the_tail_is_done() {
        let (mut job, release) = job_with_held_tail(7);
        assert_eq!(job.results().unwrap(), [7]);
        release();
        drop(job);
    }

    #[test]
    fn the_child_is_kept_off_our_cpu_when_there_is_another() {
        use nix::sched::{sched_getaffinity, CpuSet};
        let count = |set: &CpuSet| {
            (0..CpuSet::count())
                .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                .count()
        };
        let ours = count(&sched_getaffinity(Pid::from_raw(0)).unwrap());
        let (mut job, release) = job_with_held_tail(0);
        job.results().unwrap();
        let child = count(&sched_getaffinity(job.child.unwrap()).unwrap());
        release();
        drop(job);
        if ours > 1 {
            assert_eq!(child, ours - 1);
        } else {
            assert_eq!(child, ours, "a single CPU is left as it is");
        }
    }

    #[test]
    fn a_job_reads_what_it_borrows_and_leaves_errno_alone() {
        let path = std::ffi::CString::new("/nonexistent/side-job").unwrap();
        nix::errno::Errno::set_raw(0);
        let job = start(false, || [sys::open(&path, libc::O_RDONLY)], || {}).unwrap();
        assert_eq!(job.wait().unwrap(), [-libc::ENOENT]);
        assert_eq!(nix::errno::Errno::last_raw(), 0);
    }

    #[test]
    fn an_fd_opened_by_a_job_sharing_fds_is_ours() {
        let path = c"/proc/version";
        let opened = || [sys::open(path, libc::O_RDONLY | libc::O_CLOEXEC)];
        let job = start(true, opened, || {}).unwrap();
        let [fd] = job.wait().unwrap();
        assert!(fd >= 0);
        // SAFETY: the child opened it in our fd table and is gone.
        let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        assert!(std::io::read_to_string(file).unwrap().starts_with("Linux"));
    }

    #[test]
    fn a_child_killed_before_reporting_is_an_error_not_a_hang() {
        let die = || {
            // SAFETY: kill(2) of the calling task with a signal that ends it.
            unsafe {
                let pid = sys::call(libc::SYS_getpid, [0; 0]);
                sys::call(libc::SYS_kill, [pid as usize, libc::SIGKILL as usize]);
            }
            [0]
        };
        let job = start(false, die, || {}).unwrap();
        assert!(job.wait().is_err());
    }
}
