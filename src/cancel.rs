//! [`CancelToken`]: how a run tells its jobs to stop, and how a caller (a SIGINT handler thread)
//! tells a run to stop.
//!
//! Cancellation is cooperative: a job polls [`CancelToken::is_cancelled`], sleeps in
//! [`CancelToken::wait_timeout`], or registers a callback with [`CancelToken::on_cancel`] (the
//! compile job kills its sandbox from there, which makes the packaging script exit at once).
//!
//! The token also remembers whether the cancellation *reached* the job (it saw
//! `is_cancelled() == true`, a wait returned early, or one of its callbacks ran). The scheduler
//! uses that to tell a job that died because it was told to stop (reported `Cancelled`) from one
//! that failed on its own while a cancellation was racing towards it (reported `Failed` with its
//! own error): two packages failing at the same moment are both real failures.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Callback = Box<dyn FnOnce() + Send>;

/// A shared, clonable cancellation flag with callbacks; clones refer to the same token.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    /// The cancellation was delivered to the token's holder (see the module doc).
    observed: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    cancelled: bool,
    /// Set when the job owning the token returned: callbacks are dropped and never run later
    /// (a late "kill the sandbox" must not hit a pid that has been reused meanwhile).
    closed: bool,
    next_id: u64,
    callbacks: Vec<(u64, Callback)>,
}

/// Identifies a callback registered with [`CancelToken::on_cancel`], to remove it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackId(u64);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the token: wakes waiters, then runs the registered callbacks on the calling
    /// thread, outside any lock (so keep them short: send a signal, set a flag). Returns false if
    /// the token was already cancelled (callbacks run only once).
    pub fn cancel(&self) -> bool {
        let callbacks = {
            let mut state = self.lock();
            if state.cancelled {
                return false;
            }
            state.cancelled = true;
            self.inner.cancelled.store(true, Ordering::SeqCst);
            let callbacks = std::mem::take(&mut state.callbacks);
            if !callbacks.is_empty() {
                // Marked under the lock, before the callbacks run: a job whose sandbox is killed
                // by a callback must find its token "observed" when it returns.
                self.inner.observed.store(true, Ordering::SeqCst);
            }
            callbacks
        };
        self.inner.wake.notify_all();
        for (_, callback) in callbacks {
            callback();
        }
        true
    }

    /// Whether the token is cancelled. A `true` answer counts as the holder having seen the
    /// cancellation.
    pub fn is_cancelled(&self) -> bool {
        let cancelled = self.peek();
        if cancelled {
            self.inner.observed.store(true, Ordering::SeqCst);
        }
        cancelled
    }

    /// Registers `callback` to run when the token is cancelled. If it already is, the callback
    /// runs now, on this thread, and `None` is returned. Callbacks registered on a token whose
    /// job has already returned are dropped without running.
    pub fn on_cancel(&self, callback: impl FnOnce() + Send + 'static) -> Option<CallbackId> {
        let mut state = self.lock();
        if state.cancelled {
            drop(state);
            self.inner.observed.store(true, Ordering::SeqCst);
            callback();
            return None;
        }
        if state.closed {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.callbacks.push((id, Box::new(callback)));
        Some(CallbackId(id))
    }

    /// Removes a callback that has not run yet; returns whether it was still registered.
    pub fn remove_callback(&self, id: CallbackId) -> bool {
        let removed = {
            let mut state = self.lock();
            let position = state.callbacks.iter().position(|(other, _)| *other == id.0);
            position.map(|i| state.callbacks.remove(i))
        };
        removed.is_some()
    }

    /// Sleeps up to `timeout`, returning early (with `true`) as soon as the token is cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.cancelled {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = match self.inner.wake.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        self.inner.observed.store(true, Ordering::SeqCst);
        true
    }

    /// Blocks until the token is cancelled.
    pub fn wait(&self) {
        let mut state = self.lock();
        while !state.cancelled {
            state = self
                .inner
                .wake
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        self.inner.observed.store(true, Ordering::SeqCst);
    }

    /// The flag, without counting as an observation (for the scheduler's own checks).
    pub(super) fn peek(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Called when the job holding this token has returned: drops its callbacks and answers
    /// whether the cancellation had reached the job. Atomic with respect to [`Self::cancel`].
    pub(super) fn close(&self) -> bool {
        let dropped = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.callbacks)
        };
        // Dropped outside the lock: a captured value's destructor may touch the token.
        drop(dropped);
        self.inner.observed.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Callbacks never run under the lock, so poisoning can only come from a panic in this
        // file's short critical sections; the state stays consistent either way.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.peek())
            .finish_non_exhaustive()
    }
}
