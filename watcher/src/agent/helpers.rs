//! The match stage's helper threads, kept from chunk to chunk of a source.
//!
//! A big chunk (a backlog, a replay, a flood) is matched by the source's
//! reader and helpers that claim its blocks. Spawned per chunk, a helper
//! began about 80 µs after the reader asked for it (measured with `perf
//! sched` on a 2-vCPU machine: a thread's creation and its first wait for
//! the CPU), 430 times per 1,000,000 lines, and the reader matched twice
//! the helper's share. Kept threads wait for the next chunk, spinning
//! briefly first: during a backlog the next chunk comes within that time,
//! and the helper takes its first block at once.
use std::{
    any::Any,
    panic::{AssertUnwindSafe, catch_unwind, resume_unwind},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How long a helper looks for the next chunk before it sleeps: a little
/// more than a reader needs to read and prefilter the next 256 KiB.
const SPIN: Duration = Duration::from_micros(500);

/// Threads that run a work function beside the reader.
#[derive(Default)]
pub struct Helpers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Helpers wait here for a job (or the stop).
    wake: Condvar,
    /// The caller waits here for the helpers still in its job.
    done: Condvar,
    /// The number of the newest job, read without the lock while spinning.
    published: AtomicU64,
}

#[derive(Default)]
struct State {
    job: Option<Job>,
    /// The number of the job in `job` (or of the last one).
    number: u64,
    /// Helpers that may still take the job.
    open: usize,
    /// Helpers that took it and have not returned.
    running: usize,
    panic: Option<Box<dyn Any + Send>>,
    stop: bool,
}

/// The caller's work function with its lifetime erased: valid while the
/// caller is inside [`Helpers::run`], which returns only once no helper
/// runs it and none can take it any more.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn() + Sync));

// SAFETY: the function is Sync (callable from several threads at once),
// and `run` keeps it alive while any helper may call it.
unsafe impl Send for Job {}

impl Helpers {
    /// Runs `theirs` on up to `helpers` helper threads while this thread
    /// runs `mine`, and returns when every call has returned (a panic in
    /// any of them is raised here, after the others are done). Helpers are
    /// started when first needed; one that cannot be started is done
    /// without. A helper that wakes only after `mine` returned does not
    /// run `theirs`: `mine` is expected to leave nothing undone.
    pub fn run(&mut self, helpers: usize, theirs: &(dyn Fn() + Sync), mine: impl FnOnce()) {
        while self.threads.len() < helpers {
            let shared = Arc::clone(&self.shared);
            match std::thread::Builder::new()
                .name("match".into())
                .spawn(move || serve(&shared))
            {
                Ok(h) => self.threads.push(h),
                Err(_) => break,
            }
        }
        let helpers = helpers.min(self.threads.len());
        if helpers > 0 {
            // SAFETY: only the lifetime is erased; the job is withdrawn and
            // every helper that took it has returned before this function
            // returns or unwinds (below).
            let job = Job(unsafe {
                std::mem::transmute::<*const (dyn Fn() + Sync + '_), *const (dyn Fn() + Sync)>(
                    theirs as *const _,
                )
            });
            let mut st = self.lock();
            st.number += 1;
            st.job = Some(job);
            st.open = helpers;
            self.shared.published.store(st.number, Ordering::Release);
            drop(st);
            self.shared.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(mine));
        let mut st = self.lock();
        // Helpers that did not take the job by now are not needed: the
        // blocks are all claimed.
        st.job = None;
        st.open = 0;
        while st.running > 0 {
            st = self
                .shared
                .done
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let theirs = st.panic.take();
        drop(st);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if let Some(p) = theirs {
            resume_unwind(p);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }
}

impl Shared {
    /// The state, also after a panic elsewhere: every panic is caught and
    /// raised in `run`, so the state is never left half-changed.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.lock().stop = true;
        self.shared.wake.notify_all();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

/// A helper's life: take each job once, until the stop.
fn serve(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        // Spin for the next job before sleeping, giving the CPU to others
        // (the jails' thread) in between.
        let since = Instant::now();
        while shared.published.load(Ordering::Acquire) == seen && since.elapsed() < SPIN {
            std::thread::yield_now();
        }
        let mut st = shared.lock();
        let job = loop {
            if st.stop {
                return;
            }
            if st.number != seen {
                seen = st.number;
                if let Some(job) = st.job.filter(|_| st.open > 0) {
                    st.open -= 1;
                    st.running += 1;
                    break Some(job);
                }
                break None;
            }
            st = shared
                .wake
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        };
        drop(st);
        let Some(job) = job else { continue };
        // SAFETY: the job was taken while open, and its caller waits in
        // `run` until `running` is back to zero, after this call.
        let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)() }));
        let mut st = shared.lock();
        if let Err(p) = outcome {
            st.panic.get_or_insert(p);
        }
        st.running -= 1;
        if st.running == 0 {
            shared.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Every block of every job is done once, by the caller and helpers
    /// together, and the borrowed counters are not touched after `run`.
    #[test]
    fn jobs_share_their_blocks() {
        let mut h = Helpers::default();
        for round in 0..200 {
            let next = AtomicUsize::new(0);
            let hits: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
            let work = || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(c) = hits.get(i) else { return };
                    c.fetch_add(1, Ordering::Relaxed);
                }
            };
            h.run(1 + round % 3, &work, work);
            assert!(hits.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        }
        assert_eq!(h.threads.len(), 3);
    }

    /// A helper's panic reaches the caller, and the helpers go on serving.
    #[test]
    fn a_helpers_panic_is_raised_by_run() {
        let mut h = Helpers::default();
        let got = catch_unwind(AssertUnwindSafe(|| {
            // Only the helper panics; the caller is busy long enough for
            // it to take the job.
            h.run(1, &|| panic!("helper"), || {
                std::thread::sleep(Duration::from_millis(50));
            });
        }));
        assert!(got.is_err());
        let n = AtomicUsize::new(0);
        let add = || {
            n.fetch_add(1, Ordering::Relaxed);
        };
        h.run(2, &add, add);
        assert!(n.load(Ordering::Relaxed) >= 1);
    }
}
