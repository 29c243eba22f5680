//! The CPU device's workers: threads that spin between launches, so that a model step's
//! back-to-back launches start on every core at once.
//!
//! A decode step is a few hundred launches of 2-40 µs each. Handing each one to a pool whose idle
//! workers have gone to sleep costs a wake-up (a futex and, in a VM, an interrupt to a halted
//! vCPU) that is a sizeable part of a 15 µs GEMV, and a worker that wakes late leaves its share
//! to the others. Here the `threads − 1` workers spin on one atomic word for [`SPIN`] after their
//! last job (then yield to other threads until [`IDLE`], then park on a condition variable), and
//! the thread that launches (the *leader*) takes part in the work itself.
//!
//! # Protocol
//!
//! `state` packs an epoch (high 32 bits) and the number of workers inside the current job (low 32
//! bits). An odd epoch means a job is open. The leader
//! 1. writes the job (each thread's block of ranges and a `&dyn Fn(range)`) while the epoch is
//!    even, which no worker can join (the epoch wraps from 2³² − 1 to 0, keeping its parity);
//! 2. opens it by making the epoch odd, and wakes parked workers if any;
//! 3. takes ranges like every worker, until none is left: the ranges are cut into one contiguous
//!    block per thread (so each streams its own part of a weight matrix in order); a thread runs
//!    its block from the front, then takes what is left of the others from their backs;
//! 4. closes the job by moving from (odd epoch, 0 inside) to the next even epoch, waiting for the
//!    workers inside to leave: after that, no worker reads the job or its closure again.
//!
//! A worker joins with a compare-and-swap from (odd epoch `e`, `a` inside) to (`e`, `a + 1`),
//! which fails once the leader closed `e`; inside, it takes ranges until none is left, then leaves
//! (`a − 1`). So the leader never waits for a worker that has not joined: a worker that wakes late
//! finds the job closed and goes back to waiting.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker spins (a `pause` per check) after its last job.
const SPIN: Duration = Duration::from_micros(200);
/// How long after its last job a worker keeps checking (yielding to other threads between
/// checks) before it parks.
const IDLE: Duration = Duration::from_millis(2);

/// The job the leader publishes (its ranges are in the blocks).
#[derive(Clone, Copy)]
struct Job {
    /// Lives on the leader's stack; valid while the job is open (see the module's protocol).
    run: *const (dyn Fn(i64) + Sync),
}

struct Shared {
    /// Epoch << 32 | workers inside the open job.
    state: AtomicU64,
    /// Written by the leader only while the epoch is even and no worker is inside.
    job: UnsafeCell<Job>,
    /// Each thread's block of ranges: the leader's first, then one per worker.
    blocks: Vec<Block>,
    /// Workers parked (or about to park) on `wake`.
    parked: AtomicUsize,
    park_lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
}

// SAFETY: `job` is written only by the leader while no worker can read it (even epoch, nobody
// inside), and read by workers only between a successful join and their leave, during which the
// leader neither writes it nor lets the closure it points to go out of scope.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// The low 32 bits of a packed word: workers inside the job in `state`, the back of a [`Block`].
const LOW: u64 = u32::MAX as u64;

fn epoch(state: u64) -> u64 {
    state >> 32
}

/// Whether `state` has a job open (an odd epoch).
fn is_open(state: u64) -> bool {
    !epoch(state).is_multiple_of(2)
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Runs ranges of the joined job until none is left: first its own block from the front,
    /// then the other blocks from the back.
    fn work(&self, me: usize, job: Job) {
        let n = self.blocks.len();
        for b in (0..n).map(|i| (me + i) % n) {
            let own = b == me;
            while let Some(r) = self.blocks[b].claim(own) {
                // SAFETY: the job is open and this thread is inside it (or is the leader), so
                // the closure is alive.
                unsafe { (*job.run)(r) };
            }
        }
    }

    fn worker(&self, me: usize) {
        let mut seen = epoch(self.state.load(SeqCst));
        let mut idle_since = Instant::now();
        let mut checks = 0u32;
        loop {
            let s = self.state.load(SeqCst);
            let e = epoch(s);
            if e != seen && is_open(s) {
                // Join, unless the leader closed the job meanwhile.
                if self.state.compare_exchange(s, s + 1, SeqCst, SeqCst).is_err() {
                    continue;
                }
                // SAFETY: inside an open job, the leader does not write `job`.
                let job = unsafe { *self.job.get() };
                self.work(me, job);
                self.state.fetch_sub(1, SeqCst);
                seen = e;
                idle_since = Instant::now();
                continue;
            }
            if self.shutdown.load(SeqCst) {
                return;
            }
            checks = checks.wrapping_add(1);
            if !checks.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let idle = idle_since.elapsed();
            if idle < SPIN {
                std::hint::spin_loop();
            } else if idle < IDLE {
                std::thread::yield_now();
            } else {
                let mut guard = lock(&self.park_lock);
                self.parked.fetch_add(1, SeqCst);
                // Checked after announcing the park: a leader that opened a job before seeing
                // `parked` rise has already moved the epoch, which this load sees.
                while {
                    let now = self.state.load(SeqCst);
                    !is_open(now) || epoch(now) == seen
                } {
                    if self.shutdown.load(SeqCst) {
                        break;
                    }
                    guard = self.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
                }
                self.parked.fetch_sub(1, SeqCst);
                drop(guard);
                idle_since = Instant::now();
            }
        }
    }
}

/// A contiguous block of a job's ranges, `front..back`, packed in one word: its thread takes
/// ranges from the front, a thread whose own block is done takes them from the back. Each block
/// sits on a cache line of its own.
#[derive(Default)]
#[repr(align(128))]
struct Block(AtomicU64);

impl Block {
    fn set(&self, front: i64, back: i64) {
        self.0.store(((front as u64) << 32) | back as u64, SeqCst);
    }

    /// Takes the front range (`own`) or the back one.
    fn claim(&self, own: bool) -> Option<i64> {
        let mut s = self.0.load(SeqCst);
        loop {
            let (front, back) = (s >> 32, s & LOW);
            if front >= back {
                return None;
            }
            let (next, r) = if own { (s + (1 << 32), front) } else { (s - 1, back - 1) };
            match self.0.compare_exchange_weak(s, next, SeqCst, SeqCst) {
                Ok(_) => return Some(r as i64),
                Err(now) => s = now,
            }
        }
    }
}

/// `threads − 1` spinning workers; the launching thread is the last one.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One leader at a time.
    leader: Mutex<()>,
}

impl Pool {
    /// A pool of `threads` (at least 1) with workers of `stack_bytes` stacks.
    pub(crate) fn new(threads: usize, stack_bytes: usize) -> std::io::Result<Pool> {
        let noop: &'static (dyn Fn(i64) + Sync) = &|_| {};
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            job: UnsafeCell::new(Job { run: noop }),
            blocks: (0..threads.max(1)).map(|_| Block::default()).collect(),
            parked: AtomicUsize::new(0),
            park_lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
        });
        let mut workers = Vec::new();
        for i in 1..threads.max(1) {
            let s = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-cpu-{i}"))
                .stack_size(stack_bytes)
                .spawn(move || s.worker(i));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    // Stop the workers already started before reporting.
                    drop(Pool { shared, workers, leader: Mutex::new(()) });
                    return Err(e);
                }
            }
        }
        Ok(Pool { shared, workers, leader: Mutex::new(()) })
    }

    /// The workers plus the leader.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `run(r)` for every `r` in `0..ranges`, on the calling thread and the workers; returns
    /// when all have run.
    pub(crate) fn run(&self, ranges: i64, run: &(dyn Fn(i64) + Sync)) {
        if self.workers.is_empty() || ranges <= 1 {
            (0..ranges).for_each(run);
            return;
        }
        let _leader = lock(&self.leader);
        let sh = &*self.shared;
        let s = sh.state.load(SeqCst);
        debug_assert!(!is_open(s) && s & LOW == 0);
        // SAFETY: even epoch and nobody inside: no worker reads `job` now. The lifetime is erased
        // for storage; the job is closed (below) before `run` goes out of scope.
        let job =
            Job { run: unsafe { std::mem::transmute::<&(dyn Fn(i64) + Sync), *const (dyn Fn(i64) + Sync)>(run) } };
        unsafe { *sh.job.get() = job };
        let n = sh.blocks.len() as i64;
        for (i, b) in sh.blocks.iter().enumerate() {
            let i = i as i64;
            b.set(i * ranges / n, (i + 1) * ranges / n);
        }
        let open = (epoch(s) + 1) << 32;
        sh.state.store(open, SeqCst);
        if sh.parked.load(SeqCst) > 0 {
            let _g = lock(&sh.park_lock);
            sh.wake.notify_all();
        }
        sh.work(0, job);
        // Close: wait for the workers inside to leave. Loads while someone is inside (a failed
        // compare-and-swap would take the line from a worker about to leave), then the swap.
        loop {
            if sh.state.load(SeqCst) == open
                && sh.state.compare_exchange(open, (epoch(s) + 2) << 32, SeqCst, SeqCst).is_ok()
            {
                break;
            }
            std::hint::spin_loop();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        {
            let _g = lock(&self.shared.park_lock);
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_range_runs_exactly_once_across_many_jobs() {
        let pool = Pool::new(3, 1 << 20).unwrap();
        for ranges in [0i64, 1, 2, 5, 64, 1000] {
            for _ in 0..50 {
                let hits: Vec<AtomicU32> = (0..ranges).map(|_| AtomicU32::new(0)).collect();
                pool.run(ranges, &|r| {
                    hits[r as usize].fetch_add(1, SeqCst);
                });
                assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "{ranges} ranges");
            }
        }
    }

    #[test]
    fn parked_workers_wake_for_the_next_job() {
        let pool = Pool::new(2, 1 << 20).unwrap();
        std::thread::sleep(IDLE + Duration::from_millis(20));
        assert_eq!(pool.shared.parked.load(SeqCst), 1, "the idle worker parks");
        let threads = Mutex::new(std::collections::HashSet::new());
        // Ranges long enough that the woken worker joins before the leader ran them all.
        pool.run(64, &|_| {
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(1));
        });
        assert_eq!(threads.lock().unwrap().len(), 2, "the parked worker took ranges");
    }

    #[test]
    fn a_slow_workers_block_is_taken_from_its_back() {
        let pool = Pool::new(2, 1 << 20).unwrap();
        let leader = std::thread::current().id();
        let by_leader: Vec<AtomicU32> = (0..64).map(|_| AtomicU32::new(0)).collect();
        pool.run(64, &|r| {
            if std::thread::current().id() == leader {
                by_leader[r as usize].store(1, SeqCst);
            } else {
                // The worker stalls on whatever range it takes first.
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let mine: Vec<usize> = (0..64).filter(|&r| by_leader[r].load(SeqCst) == 1).collect();
        assert!(mine.len() >= 62, "the leader ran {} of 64 ranges", mine.len());
        assert!((0..32).all(|r| mine.contains(&r)), "the leader runs its own block");
        assert!(mine.contains(&63), "and takes the worker's block from the back: {mine:?}");
    }

    #[test]
    fn leaders_from_several_threads_take_turns() {
        let pool = Pool::new(2, 1 << 20).unwrap();
        let total = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        pool.run(7, &|_| {
                            total.fetch_add(1, SeqCst);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(SeqCst), 4 * 200 * 7);
    }
}
