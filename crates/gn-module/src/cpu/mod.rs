//! The CPU kernels shared by the Flex and NdArray backends: plain slices in, plain vectors out.
//!
//! Each backend adapter describes its input as a [`View`] (a strided `[N, C, S]` window on its
//! storage, `S` being the spatial axes collapsed) and wraps the dense outputs back into its own
//! tensor type. Two memory orders are handled without a copy:
//! - channels-first rows (`ss == 1`: each channel's spatial values are contiguous, as in NCHW),
//!   processed one `(n, g)` group per task ([`channels_first`]);
//! - channels-last rows (`sc == 1`: each position's channels are contiguous, as in NHWC),
//!   processed in blocks of positions per task with per-channel accumulators ([`channels_last`]).
//!
//! Anything else is copied to a contiguous tensor by the adapter first.
//!
//! Numerics: every group is shifted by its first element before summing (exact in floating
//! point for values of similar magnitude), sums are blocked in the element's arithmetic type and
//! accumulated in f64, so inputs with `|mean| / std` of 1e5 keep full precision. f16 and bf16 are
//! computed in f32; f64 in f64.
//!
//! CPU features: on x86-64 with AVX2, FMA and F16C the kernels run code compiled for those
//! instructions (hand-written in [`simd`] and [`simd_rows`], and the `multiversion!` functions);
//! elsewhere, portable code compiled for the baseline target. [`simd_level`] detects the
//! features once per process and every dispatch asks it. Setting the environment variable
//! `GN_BURN_CPU_BASELINE=1` makes it answer [`SimdLevel::Baseline`] whatever the CPU, so that
//! every kernel takes the portable path: to compare the two paths, or to test the portable one
//! on a machine with AVX2. The variable is read at the first kernel call of the process; later
//! changes have no effect.

// Every unsafe block of the kernels states why it is sound (the backend adapters, flex.rs and
// ndarray.rs, are not held to the lint yet).
#[warn(clippy::undocumented_unsafe_blocks)]
mod channels_first;
#[warn(clippy::undocumented_unsafe_blocks)]
mod channels_last;
#[warn(clippy::undocumented_unsafe_blocks)]
mod channels_last_blocks;
#[warn(clippy::undocumented_unsafe_blocks)]
pub(crate) mod elem;
#[warn(clippy::undocumented_unsafe_blocks)]
mod group_rows;
#[cfg(test)]
#[warn(clippy::undocumented_unsafe_blocks)]
mod memcheck_cases;
#[warn(clippy::undocumented_unsafe_blocks)]
mod rows;
#[cfg(target_arch = "x86_64")]
#[warn(clippy::undocumented_unsafe_blocks)]
mod simd;
#[cfg(target_arch = "x86_64")]
#[warn(clippy::undocumented_unsafe_blocks)]
mod simd_rows;
#[warn(clippy::undocumented_unsafe_blocks)]
mod tasks;
#[warn(clippy::undocumented_unsafe_blocks)]
mod transpose;

pub(crate) use channels_first::{backward_inplace, forward_inplace, inplace_supported};
pub(crate) use elem::CpuElem;
pub(crate) use transpose::channels_first_copy;

/// The environment variable that forces the portable kernels (see the module docs).
pub(crate) const BASELINE_VAR: &str = "GN_BURN_CPU_BASELINE";

/// The instruction set the kernels' runtime dispatches choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SimdLevel {
    /// Portable code compiled for the baseline target.
    Baseline,
    /// x86-64 code compiled for AVX2, FMA and F16C.
    Avx2,
}

/// The instruction set of every runtime dispatch in the kernels: [`SimdLevel::Avx2`] on an
/// x86-64 CPU with AVX2, FMA and F16C unless `GN_BURN_CPU_BASELINE` is `1`, else
/// [`SimdLevel::Baseline`]. Decided once per process, at the first call.
///
/// The kernels' `unsafe` calls into `#[target_feature]` code rely on this: it answers `Avx2`
/// only where all three features were detected.
#[inline]
pub(crate) fn simd_level() -> SimdLevel {
    static LEVEL: std::sync::OnceLock<SimdLevel> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let forced = std::env::var_os(BASELINE_VAR).is_some_and(|v| v == "1");
        #[cfg(target_arch = "x86_64")]
        if !forced
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            return SimdLevel::Avx2;
        }
        let _ = forced;
        SimdLevel::Baseline
    })
}

/// `multiversion!` functions run per [`SimdLevel`] (test builds only): lets tests check which
/// path ran.
#[cfg(test)]
pub(crate) static DISPATCHED: [std::sync::atomic::AtomicUsize; 2] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 2];

/// Counts a `multiversion!` call on `level`'s path in test builds; nothing otherwise.
#[inline(always)]
pub(crate) fn note_dispatch(level: SimdLevel) {
    #[cfg(test)]
    DISPATCHED[level as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = level;
}

/// Generates a function that runs its body compiled for AVX2, FMA and F16C when
/// [`simd_level`] says so, and for the baseline target otherwise.
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        fn $name:ident<E: CpuElem, const ACT: u32>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        $body:block
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        fn $name<E: CpuElem, const ACT: u32>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<E: CpuElem, const ACT: u32>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c")]
                #[allow(clippy::too_many_arguments)]
                fn avx2<E: CpuElem, const ACT: u32>($($arg: $ty),*) $(-> $ret)? {
                    body::<E, ACT>($($arg),*)
                }
                if $crate::cpu::simd_level() == $crate::cpu::SimdLevel::Avx2 {
                    $crate::cpu::note_dispatch($crate::cpu::SimdLevel::Avx2);
                    // SAFETY: simd_level() answers Avx2 only on CPUs with AVX2, FMA and F16C.
                    return unsafe { avx2::<E, ACT>($($arg),*) };
                }
            }
            $crate::cpu::note_dispatch($crate::cpu::SimdLevel::Baseline);
            body::<E, ACT>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Calls `$f::<E, ACT>(args)` with the activation code turned into a const generic.
macro_rules! with_activation {
    ($act:expr, $f:ident::<$e:ty>($($arg:expr),* $(,)?)) => {
        match $act {
            rows::ACT_NONE => $f::<$e, { rows::ACT_NONE }>($($arg),*),
            rows::ACT_RELU => $f::<$e, { rows::ACT_RELU }>($($arg),*),
            rows::ACT_SILU => $f::<$e, { rows::ACT_SILU }>($($arg),*),
            other => panic!("unknown GroupNorm activation code {other}"),
        }
    };
}
pub(crate) use with_activation;

/// A strided, read-only `[N, C, S]` window on a tensor's storage.
///
/// Element `(n, c, s)` is at `data[offset + n * sn + c * sc + s * ss]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a, E> {
    pub data: &'a [E],
    pub offset: usize,
    pub n: usize,
    pub c: usize,
    pub s: usize,
    pub sn: usize,
    pub sc: usize,
    pub ss: usize,
}

/// Which memory order a [`View`] has, and so which kernel reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Order {
    /// `ss == 1`: channel rows of `S` contiguous values. Dense outputs are `[N, C, S]`.
    ChannelsFirst,
    /// `sc == 1`: position rows of `C` contiguous values. Dense outputs are `[N, S, C]`.
    ChannelsLast,
}

impl<'a, E> View<'a, E> {
    /// The `S` values of channel `c` of sample `n` (channels-first views).
    #[inline(always)]
    pub fn channel(&self, n: usize, c: usize) -> &'a [E] {
        let start = self.index(n, c, 0);
        &self.data[start..start + self.s]
    }

    /// The `cpg` channels from `c0` of sample `n` as one slice of `cpg * S` values, when they
    /// are adjacent (channels-first views whose channel stride is `S`).
    #[inline(always)]
    pub fn channel_run(&self, n: usize, c0: usize, cpg: usize) -> Option<&'a [E]> {
        (self.sc == self.s && (self.ss == 1 || self.s == 1)).then(|| {
            let start = self.index(n, c0, 0);
            &self.data[start..start + cpg * self.s]
        })
    }

    /// The `C` values at position `s` of sample `n` (channels-last views).
    #[inline(always)]
    pub fn position(&self, n: usize, s: usize) -> &'a [E] {
        let start = self.index(n, 0, s);
        &self.data[start..start + self.c]
    }

    #[inline(always)]
    pub fn index(&self, n: usize, c: usize, s: usize) -> usize {
        self.offset + n * self.sn + c * self.sc + s * self.ss
    }

    /// [`index`](Self::index) without overflow, `None` where it would overflow: for code that
    /// bounds raw-pointer accesses by it (`index` wraps in release builds).
    pub fn checked_index(&self, n: usize, c: usize, s: usize) -> Option<usize> {
        let steps = [(n, self.sn), (c, self.sc), (s, self.ss)];
        steps.into_iter().try_fold(self.offset, |acc, (i, stride)| {
            acc.checked_add(i.checked_mul(stride)?)
        })
    }

    /// The order this view can be read in without a copy, if any.
    pub fn order(&self) -> Option<Order> {
        if self.ss == 1 || self.s == 1 {
            // With one position ([N, C], 1x1 maps) a group is C / G adjacent values when the
            // channels are contiguous: one run, which the channels-first kernels read as such.
            Some(Order::ChannelsFirst)
        } else if (self.sc == 1 || self.c == 1) && self.ss >= self.c {
            Some(Order::ChannelsLast)
        } else {
            None
        }
    }
}

/// Describes a tensor of `shape` and element `strides` (starting at `offset`) as an
/// `[N, C, S]` [`View`], if its spatial axes can be collapsed into one stride and all strides
/// are non-negative; `None` means the adapter has to make the tensor contiguous first.
pub(crate) fn view<'a, E>(
    data: &'a [E],
    offset: usize,
    shape: &[usize],
    strides: &[isize],
) -> Option<View<'a, E>> {
    if shape.len() < 2 || strides.iter().any(|&st| st < 0) {
        return None;
    }
    let stride = |i: usize| strides[i] as usize;
    // Spatial axes of size 1 do not constrain anything; the rest must nest exactly.
    let spatial: Vec<usize> = (2..shape.len()).filter(|&i| shape[i] != 1).collect();
    for pair in spatial.windows(2) {
        if stride(pair[0]) != stride(pair[1]) * shape[pair[1]] {
            return None;
        }
    }
    let ss = spatial.last().map_or(1, |&i| stride(i));
    let view = View {
        data,
        offset,
        n: shape[0],
        c: shape[1],
        s: shape[2..].iter().product(),
        sn: stride(0),
        sc: stride(1),
        ss,
    };
    view.order().map(|_| view)
}

/// Panics unless `num_groups` divides `c` and `gamma` and `beta` hold `c` values: the
/// kernels' tasks then cover every value of the outputs they allocate uninitialized, which
/// their `assume_init` relies on.
pub(crate) fn assert_groups(c: usize, num_groups: usize, gamma: &[f64], beta: &[f64]) {
    assert!(
        num_groups > 0 && c.is_multiple_of(num_groups),
        "{num_groups} groups do not divide {c} channels"
    );
    assert!(
        gamma.len() == c && beta.len() == c,
        "gamma and beta must hold the {c} channels' values"
    );
}

/// Outputs of the forward kernel.
pub(crate) struct Forward<E> {
    /// Dense output in `order`: `[N, C, S]` or `[N, S, C]`.
    pub y: Vec<E>,
    /// Per `(n, g)` mean, `[N, G]`.
    pub mean: Vec<f64>,
    /// Per `(n, g)` reciprocal standard deviation `1 / sqrt(var + eps)`, `[N, G]`.
    pub rstd: Vec<f64>,
    pub order: Order,
}

impl<E> Forward<E> {
    /// The outputs from `y` and the per-`(n, g)` `[mean, rstd]` pairs.
    fn from_group_stats(y: Vec<E>, stats: Vec<[f64; 2]>, order: Order) -> Self {
        let (mean, rstd) = stats.into_iter().map(|[m, r]| (m, r)).unzip();
        Self {
            y,
            mean,
            rstd,
            order,
        }
    }
}

/// Outputs of the backward kernel.
pub(crate) struct Backward<E> {
    /// Dense input gradient in `order`.
    pub dx: Vec<E>,
    /// `[C]`.
    pub dgamma: Vec<f64>,
    /// `[C]`.
    pub dbeta: Vec<f64>,
    pub order: Order,
}

/// The forward pass: `y = act(gamma * (x - mean) * rstd + beta)`, with the statistics.
///
/// `x` must have an [`order`](View::order); `gamma` and `beta` hold `C` values.
pub(crate) fn forward<E: CpuElem>(
    x: &View<'_, E>,
    num_groups: usize,
    gamma: &[f64],
    beta: &[f64],
    epsilon: f64,
    activation: u32,
) -> Forward<E> {
    match x.order().expect("the adapter passes readable views only") {
        Order::ChannelsFirst => {
            channels_first::forward(x, num_groups, gamma, beta, epsilon, activation)
        }
        Order::ChannelsLast => match channels_last_blocks::groups_per_task(x, num_groups) {
            Some(per_task) => channels_last_blocks::forward(
                x, num_groups, per_task, gamma, beta, epsilon, activation,
            ),
            None => channels_last::forward(x, num_groups, gamma, beta, epsilon, activation),
        },
    }
}

/// The backward pass: `dx`, `dgamma` and `dbeta` from the output gradient `dy`.
///
/// `x` and `dy` must share an [`order`](View::order) (the adapter copies one otherwise).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<E: CpuElem>(
    x: &View<'_, E>,
    dy: &View<'_, E>,
    num_groups: usize,
    rstd: &[f64],
    gamma: &[f64],
    beta: &[f64],
    activation: u32,
) -> Backward<E> {
    let order = x.order().expect("the adapter passes readable views only");
    assert_eq!(
        dy.order(),
        Some(order),
        "x and dy must share a memory order"
    );
    match order {
        Order::ChannelsFirst => {
            channels_first::backward(x, dy, num_groups, rstd, gamma, beta, activation)
        }
        Order::ChannelsLast => {
            channels_last::backward(x, dy, num_groups, rstd, gamma, beta, activation)
        }
    }
}

/// Per-group coefficients of the backward pass, from the per-channel sums of one `(n, g)`.
///
/// With `d = x - k`, `mean_d = mean - k`, `x_hat = (d - mean_d) * rstd` and `M` the group size:
/// `h_c = Σ dz x_hat = rstd (Σ dz d - mean_d Σ dz)`, `db = Σ_c gamma_c Σ dz`,
/// `dsh = Σ_c gamma_c h_c`, and
/// `dx = rstd gamma_c dz - rstd db / M - rstd x_hat dsh / M = a_c dz + cx d + c0`.
pub(crate) struct BackwardCoefs {
    pub cx: f64,
    pub c0: f64,
}

impl BackwardCoefs {
    /// `sums[j] = [Σ dz d, Σ dz]` for the group's channels; they become `[h_c, Σ dz]`.
    pub fn from_sums(
        sums: &mut [[f64; 2]],
        gamma: &[f64],
        mean_d: f64,
        rstd: f64,
        group_len: f64,
    ) -> Self {
        let (mut db, mut dsh) = (0.0, 0.0);
        for (pq, &g) in sums.iter_mut().zip(gamma) {
            let h = rstd * (pq[0] - mean_d * pq[1]);
            pq[0] = h;
            db += g * pq[1];
            dsh += g * h;
        }
        let cx = -rstd * rstd * dsh / group_len;
        let c0 = -rstd * db / group_len - cx * mean_d;
        Self { cx, c0 }
    }
}

/// `rstd` from the shifted sums of a group of `len` values.
#[inline]
pub(crate) fn group_stats(s1: f64, s2: f64, len: f64, epsilon: f64) -> (f64, f64) {
    let mean_d = s1 / len;
    let var = s2 / len - mean_d * mean_d;
    // Rounding can leave a tiny negative; NaN must stay NaN so the group stays poisoned.
    let var = if var < 0.0 { 0.0 } else { var };
    (mean_d, 1.0 / (var + epsilon).sqrt())
}

/// Sums the per-sample `[h_c, Σ dz]` rows (`[N, C]`) into `dgamma` and `dbeta`.
pub(crate) fn reduce_affine_grads(sums: &[[f64; 2]], c: usize) -> (Vec<f64>, Vec<f64>) {
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for row in sums.chunks(c) {
        for ((dg, db), pq) in dgamma.iter_mut().zip(&mut dbeta).zip(row) {
            *dg += pq[0];
            *db += pq[1];
        }
    }
    (dgamma, dbeta)
}

/// Shape `[N, C, S]` of a tensor of rank >= 2 (`S`: the spatial axes collapsed).
pub(crate) fn ncs(shape: &[usize]) -> [usize; 3] {
    [shape[0], shape[1], shape[2..].iter().product()]
}

/// Rayon's minimum number of tasks per split so each holds about `TARGET` elements.
pub(crate) fn min_tasks(task_len: usize) -> usize {
    const TARGET: usize = 1 << 14;
    (TARGET / task_len.max(1)).max(1)
}

/// Element strides of a dense output of `shape` (`[N, C, *]`) written in `order`.
pub(crate) fn dense_strides(shape: &[usize], order: Order) -> Vec<usize> {
    let rank = shape.len();
    let mut strides = vec![0; rank];
    match order {
        Order::ChannelsFirst => {
            let mut acc = 1;
            for i in (0..rank).rev() {
                strides[i] = acc;
                acc *= shape[i];
            }
        }
        Order::ChannelsLast => {
            // Axes from fastest to slowest: C, the spatial axes right to left, N.
            let mut acc = 1;
            for i in core::iter::once(1)
                .chain((2..rank).rev())
                .chain(core::iter::once(0))
            {
                strides[i] = acc;
                acc *= shape[i];
            }
        }
    }
    strides
}

#[cfg(test)]
mod dispatch_tests {
    use std::sync::atomic::Ordering;

    use super::*;

    /// The level this process must run at: what the CPU has, unless the variable forces the
    /// baseline. (Tests cannot set the variable: it is read once, by whichever test calls a
    /// kernel first, so `.ci/memcheck.sh` runs the tests with and without it.)
    fn expected_level() -> SimdLevel {
        let forced = std::env::var(BASELINE_VAR).as_deref() == Ok("1");
        #[cfg(target_arch = "x86_64")]
        let cpu = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c");
        #[cfg(not(target_arch = "x86_64"))]
        let cpu = false;
        if cpu && !forced {
            SimdLevel::Avx2
        } else {
            SimdLevel::Baseline
        }
    }

    /// The dispatch follows the CPU and `GN_BURN_CPU_BASELINE`: a kernel call runs its
    /// `multiversion!` functions on the expected path, no test of this process has run one on
    /// the other, and the hand-written SIMD kernels apply exactly when the level is AVX2.
    #[test]
    fn dispatch_follows_the_cpu_and_the_baseline_switch() {
        let level = expected_level();
        assert_eq!(simd_level(), level);
        // For .ci/memcheck.sh, which checks that valgrind let the AVX2 path run.
        println!("CPU kernels dispatch to {level:?}");
        let other = match level {
            SimdLevel::Avx2 => SimdLevel::Baseline,
            SimdLevel::Baseline => SimdLevel::Avx2,
        };
        let runs = |l: SimdLevel| DISPATCHED[l as usize].load(Ordering::Relaxed);
        let before = runs(level);
        let data: Vec<f32> = (0..2 * 4 * 9).map(|i| (i % 7) as f32).collect();
        let x = view(&data, 0, &[2, 4, 9], &[36, 9, 1]).expect("a channels-first view");
        let out = forward(&x, 2, &[1.0; 4], &[0.0; 4], 1e-5, rows::ACT_NONE);
        assert_eq!(out.y.len(), data.len());
        assert!(
            runs(level) > before,
            "the forward ran on the {level:?} path"
        );
        assert_eq!(runs(other), 0, "nothing ran on the {other:?} path");
        #[cfg(target_arch = "x86_64")]
        {
            let simd = level == SimdLevel::Avx2;
            assert_eq!(simd::lanes_apply::<f32>(), simd);
            assert_eq!(simd::lanes_apply::<half::bf16>(), simd);
            assert!(!simd::lanes_apply::<f64>());
        }
    }
}

#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "ndarray")]
mod ndarray;
