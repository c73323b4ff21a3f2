//! One GIL/scheduling sample: a light look taken hundreds of times a second by `gil` and `top`
//! (who holds the GIL, who waits, who runs Python, stop-the-world pauses, lock waits).

use super::{Frame, LockRef};

/// One observation of one thread.
#[derive(Debug, Clone, Default)]
pub struct ThreadSample {
    pub tid: i32,
    pub holds_gil: bool,
    pub waiting_gil: bool,
    /// Free-threaded builds: attached to the interpreter and on a CPU (running Python).
    pub running_python: bool,
    /// The thread's stack, only captured for the GIL holder.
    pub stack: Option<Vec<Frame>>,
    /// Free-threaded builds: detached and blocked acquiring this lock, seen from this frame.
    pub lock_wait: Option<(LockRef, Option<Frame>)>,
}

/// A stop-the-world pause in progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StwSample {
    /// The requesting thread (TID), when it can be told.
    pub requester: Option<i32>,
    /// The garbage collector was running.
    pub gc: bool,
    /// The requester's innermost Python frame.
    pub frame: Option<Frame>,
}

#[derive(Debug, Clone, Default)]
pub struct GilSample {
    pub gil_held: bool,
    pub switch_number: Option<u64>,
    pub threads: Vec<ThreadSample>,
    /// Free-threaded builds: a stop-the-world pause was in progress.
    pub stw: Option<StwSample>,
}
