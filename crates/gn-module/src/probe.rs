//! Counters of the fused backend ops' calls, for the tests that check that the fused kernels
//! (and their in-place paths) run where they are compiled in rather than the composite.
//!
//! Each op call adds one to a process-wide relaxed atomic counter and to a counter of the
//! calling thread (the CPU backends and autodiff run the op on the caller's thread, so a test
//! can read its own calls exactly while other tests run in parallel). Not a stable API.

use core::cell::Cell;
use core::sync::atomic::{AtomicU64, Ordering};

/// The backend implementation that ran an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// The Flex adapter of the CPU kernels.
    Flex,
    /// The NdArray adapter of the CPU kernels.
    NdArray,
    /// The CubeCL kernels (wgpu, Vulkan, Metal, CUDA, ...).
    Cube,
}

/// Which op, and whether it wrote its output over its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Path {
    /// Every call of the forward op.
    Forward,
    /// Every call of the backward op.
    Backward,
    /// The forward calls that wrote `y` over `x` (counted in [`Path::Forward`] too).
    ForwardInPlace,
    /// The backward calls that wrote `dx` over `grad` (counted in [`Path::Backward`] too).
    BackwardInPlace,
}

const PATHS: usize = 4;
const SLOTS: usize = 3 * PATHS;

static COUNTS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

thread_local! {
    static THREAD_COUNTS: [Cell<u64>; SLOTS] = const { [const { Cell::new(0) }; SLOTS] };
}

fn slot(kernel: Kernel, path: Path) -> usize {
    kernel as usize * PATHS + path as usize
}

/// Counts one call of `path` on `kernel`.
#[inline]
#[cfg_attr(
    not(any(feature = "flex", feature = "ndarray", feature = "cube")),
    allow(dead_code)
)]
pub(crate) fn hit(kernel: Kernel, path: Path) {
    let i = slot(kernel, path);
    COUNTS[i].fetch_add(1, Ordering::Relaxed);
    THREAD_COUNTS.with(|counts| counts[i].set(counts[i].get() + 1));
}

/// The calls of `path` on `kernel` in this process so far.
pub fn count(kernel: Kernel, path: Path) -> u64 {
    COUNTS[slot(kernel, path)].load(Ordering::Relaxed)
}

/// The calls of `path` on `kernel` made on the calling thread so far.
pub fn thread_count(kernel: Kernel, path: Path) -> u64 {
    THREAD_COUNTS.with(|counts| counts[slot(kernel, path)].get())
}
