//! Running the kernels' tasks in parallel.
//!
//! A parallel iterator called from outside rayon's pool (the usual case: a model's forward on
//! the main thread) hands all its work to the pool's threads and puts the caller to sleep until
//! they are done, so every call pays a wake-up and a hand-back on top of the work. On small
//! tensors that is a large share: the [2,2048,7,7] f32 forward (0.8 MB) measured 48-57 µs that
//! way and 38-44 µs with the caller taking tasks too. On large tensors the caller working
//! beside the pool's threads oversubscribes the cores (the pool has one thread per core) and
//! measured up to 14% slower on [8,256,56,56], so those keep rayon's own scheduling.

use std::sync::Mutex;

use rayon::prelude::*;

/// Below this many bytes of input, the calling thread works on the tasks itself.
const CALLER_WORKS_BELOW: usize = 2 << 20;

/// Calls `f(index, task)` for every task of `tasks`, in parallel, at least `min_block`
/// consecutive tasks to a thread at a time; `bytes` is the size of the input the tasks read.
/// Returns when every task is done; a panic in `f` is propagated.
pub(crate) fn for_each_task<T: Send>(
    tasks: Vec<T>,
    min_block: usize,
    bytes: usize,
    f: impl Fn(usize, T) + Sync,
) {
    if bytes >= CALLER_WORKS_BELOW {
        tasks
            .into_par_iter()
            .enumerate()
            .with_min_len(min_block.max(1))
            .for_each(|(index, task)| f(index, task));
        return;
    }
    with_caller(tasks, min_block, f);
}

/// The calling thread and up to `rayon::current_num_threads() - 1` helpers spawned on rayon's
/// pool take blocks of consecutive tasks (at least `min_block`, and a quarter of a thread's
/// share) from a shared queue until it is empty.
fn with_caller<T: Send>(tasks: Vec<T>, min_block: usize, f: impl Fn(usize, T) + Sync) {
    let threads = rayon::current_num_threads().max(1);
    let block = min_block.max(tasks.len().div_ceil(4 * threads)).max(1);
    let helpers = threads.min(tasks.len().div_ceil(block)).saturating_sub(1);
    let queue = Mutex::new(tasks.into_iter().enumerate());
    let work = || {
        loop {
            // The lock is held only while taking a block, never while running one.
            let batch: Vec<(usize, T)> = queue
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .by_ref()
                .take(block)
                .collect();
            if batch.is_empty() {
                break;
            }
            for (index, task) in batch {
                f(index, task);
            }
        }
    };
    if helpers == 0 {
        return work();
    }
    rayon::in_place_scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(|_| work());
        }
        work();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every task runs exactly once with its own index, on both paths, for block sizes that do
    /// and do not divide the task count, and with no tasks at all.
    #[test]
    fn every_task_runs_once_with_its_index() {
        for bytes in [0, CALLER_WORKS_BELOW] {
            for (n, block) in [(0, 1), (1, 4), (7, 1), (100, 3), (257, 16), (64, 100)] {
                let mut out = vec![usize::MAX; n];
                let calls = AtomicUsize::new(0);
                let tasks: Vec<&mut usize> = out.iter_mut().collect();
                for_each_task(tasks, block, bytes, |i, slot| {
                    *slot = i;
                    calls.fetch_add(1, Ordering::Relaxed);
                });
                assert_eq!(calls.load(Ordering::Relaxed), n);
                assert_eq!(
                    out,
                    (0..n).collect::<Vec<_>>(),
                    "{n} tasks, blocks of {block}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "task 5 failed")]
    fn a_panicking_task_panics_the_caller() {
        for_each_task((0..10).collect(), 2, 0, |i, _: i32| {
            assert!(i != 5, "task {i} failed");
        });
    }
}
