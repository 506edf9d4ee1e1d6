//! Allocator settings for programs that move large tensors.
//!
//! glibc's `malloc` returns freed memory at the top of its heap to the system once more than
//! twice the largest recent large block is free, and serves blocks above its mmap threshold
//! with fresh mappings. A training step frees and allocates tensors of tens of megabytes every
//! iteration, so with the defaults it page-faults its memory back in (and the kernel zeroes
//! it) on every step: measured 12 000 page faults, most of the time, per GroupNorm forward +
//! backward of a [8, 256, 56, 56] tensor (docs/performance.md). Keeping the memory costs
//! nothing but resident size, which a training run reaches anyway.

/// Tells glibc's allocator to keep freed memory for reuse (no trimming, mmap only above
/// 32 MiB, its maximum). Does nothing on other platforms, or when the environment variable
/// `GN_BURN_DEFAULT_MALLOC` is set (to measure with the defaults).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("GN_BURN_DEFAULT_MALLOC").is_none() {
        // SAFETY: mallopt only changes allocator parameters; it is called before the program
        // allocates tensors and takes no pointers.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        }
    }
}
