//! The CPU kernels shared by the Flex and NdArray backends: plain slices in, plain vectors out.
//! `README.md` in this folder tells which function runs for which input.
//!
//! Each backend adapter describes its input as a [`View`] (a strided `[N, C, S]` window on its
//! storage, `S` being the spatial axes collapsed) and wraps the dense outputs back into its own
//! tensor type. [`plan`] chooses the kernel from the view; [`forward`] and [`backward`] run it.
//!
//! Numerics: every group is shifted by its first element before summing (exact in floating
//! point for values of similar magnitude), sums are blocked in the element's arithmetic type and
//! accumulated in f64, so inputs with `|mean| / std` of 1e5 keep full precision. f16 and bf16 are
//! computed in f32; f64 in f64.
//!
//! Instruction sets: every kernel body is written once over macerator's `Simd` vectors
//! ([`simd`]) and compiled by macerator for each instruction set it knows (x86-64 v2, v3 with
//! AVX2, v4 with AVX-512, NEON, SIMD128, scalar); [`arch`] picks one per process, and every
//! parallel task enters its body through one dispatch on it ([`Dispatch`]). Setting the
//! environment variable `GN_BURN_CPU_BASELINE=1` makes it macerator's scalar backend whatever
//! the CPU: to compare, or to test the portable path on a machine with vector units. The
//! variable is read at the first kernel call of the process; later changes have no effect.

// Every unsafe block of the kernels states why it is sound (the backend adapters, flex.rs and
// ndarray.rs, are not held to the lint yet).
#[warn(clippy::undocumented_unsafe_blocks)]
mod activation;
#[warn(clippy::undocumented_unsafe_blocks)]
mod channels_first;
#[warn(clippy::undocumented_unsafe_blocks)]
mod channels_last;
#[warn(clippy::undocumented_unsafe_blocks)]
mod columns;
#[warn(clippy::undocumented_unsafe_blocks)]
mod isa;
#[cfg(test)]
#[warn(clippy::undocumented_unsafe_blocks)]
mod memcheck_cases;
#[warn(clippy::undocumented_unsafe_blocks)]
mod passes;
#[warn(clippy::undocumented_unsafe_blocks)]
pub(crate) mod simd;
#[warn(clippy::undocumented_unsafe_blocks)]
mod tasks;
#[warn(clippy::undocumented_unsafe_blocks)]
mod transpose;

pub(crate) use channels_first::{backward_inplace, forward_inplace};
pub(crate) use simd::Elem as CpuElem;
pub(crate) use transpose::channels_first_copy;

use macerator::{Arch, WithSimd};

/// The environment variable that forces the portable kernels (see the module docs).
pub(crate) const BASELINE_VAR: &str = "GN_BURN_CPU_BASELINE";

/// The instruction set of every kernel of this process: the best macerator detects on this
/// CPU, or its scalar backend where `GN_BURN_CPU_BASELINE` is `1`. Decided at the first call.
pub(crate) fn arch() -> Arch {
    static ARCH: std::sync::OnceLock<Arch> = std::sync::OnceLock::new();
    *ARCH.get_or_init(|| {
        if std::env::var_os(BASELINE_VAR).is_some_and(|v| v == "1") {
            Arch::Scalar
        } else {
            Arch::detect()
        }
    })
}

/// Whether the kernels run macerator's scalar backend (forced, or a CPU without a vector unit
/// it knows) rather than one of its vector instruction sets.
pub(crate) fn is_baseline() -> bool {
    matches!(arch(), Arch::Scalar)
}

/// Kernel entries on the vector instruction sets (`[1]`) and the scalar backend (`[0]`), test
/// builds only: lets tests check which path ran.
#[cfg(test)]
pub(crate) static DISPATCHED: [std::sync::atomic::AtomicUsize; 2] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; 2];

/// The dispatch of the kernels' `#[macerator::with_simd(dispatch(arch = Dispatch))]` entries: runs the
/// body compiled for [`arch`].
pub(crate) struct Dispatch;

impl Dispatch {
    #[inline(always)]
    pub(crate) fn dispatch<Op: WithSimd>(self, op: Op) -> Op::Output {
        #[cfg(test)]
        DISPATCHED[usize::from(!is_baseline())].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: arch() is what macerator detected on this CPU, or its scalar backend, which
        // needs nothing.
        unsafe { arch().dispatch(op) }
    }
}

/// Calls `$f::<.., ACT>(args)` with the activation code turned into a const generic.
macro_rules! with_activation {
    ($act:expr, $f:ident::<$($t:ty),*>($($arg:expr),* $(,)?)) => {
        match $act {
            Activation::CODE_NONE => $f::<$($t,)* { Activation::CODE_NONE }>($($arg),*),
            Activation::CODE_RELU => $f::<$($t,)* { Activation::CODE_RELU }>($($arg),*),
            Activation::CODE_SILU => $f::<$($t,)* { Activation::CODE_SILU }>($($arg),*),
            other => panic!("unknown GroupNorm activation code {other}"),
        }
    };
}
pub(crate) use with_activation;

/// The kernel [`forward`] and [`backward`] run for an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Channels-first `x` (`S` contiguous values per channel): one task per `(n, g)` group,
    /// its rows read for the statistics and again from cache to normalize
    /// ([`channels_first`]). `stream`: the output is large, written around the cache.
    Groups { stream: bool },
    /// Channels-last `x`, forward, few positions: tasks of `per_task` whole groups of one
    /// sample, read once from memory ([`channels_last::forward_blocks`]).
    ColumnBlocks { per_task: usize },
    /// Channels-last `x`: tasks of blocks of positions with per-channel accumulators, whole
    /// passes over memory in order ([`channels_last`]).
    Positions,
}

/// Outputs from this size on are written around the cache (they would not stay in it).
const STREAM_MIN_BYTES: usize = 16 << 20;

/// The one place that chooses a kernel, from the input's view: its memory order, then its
/// size. (Row length, element type and activation are compile-time parameters of the kernel
/// bodies: rows shorter than a vector take partial vectors, f16 and bf16 are converted in
/// registers, the activation is a const generic.)
pub(crate) fn plan<E: CpuElem>(x: &View<'_, E>, num_groups: usize, backward: bool) -> Plan {
    let bytes = x.n * x.c * x.s * size_of::<E>();
    match x.order().expect("the adapter passes readable views only") {
        // f32 and f64 outputs only: f16 and bf16 ones are converted, not streamed.
        Order::ChannelsFirst => Plan::Groups {
            stream: !backward && bytes >= STREAM_MIN_BYTES && size_of::<E>() >= 4,
        },
        Order::ChannelsLast if backward => Plan::Positions,
        Order::ChannelsLast => match channels_last::groups_per_task(x, num_groups) {
            Some(per_task) => Plan::ColumnBlocks { per_task },
            None => Plan::Positions,
        },
    }
}

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
    let args = (num_groups, gamma, beta, epsilon, activation);
    match plan(x, num_groups, false) {
        Plan::Groups { stream } => channels_first::forward(x, args, stream),
        Plan::ColumnBlocks { per_task } => channels_last::forward_blocks(x, args, per_task),
        Plan::Positions => channels_last::forward(x, args),
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
    assert_eq!(dy.order(), x.order(), "x and dy must share a memory order");
    let args = (num_groups, rstd, gamma, beta, activation);
    match plan(x, num_groups, true) {
        Plan::Groups { .. } => channels_first::backward(x, dy, args),
        _ => channels_last::backward(x, dy, args),
    }
}

/// The arguments of a forward pass after `x`: `num_groups, gamma, beta, epsilon, activation`.
pub(crate) type ForwardArgs<'a> = (usize, &'a [f64], &'a [f64], f64, u32);
/// The arguments of a backward pass after `x` and `dy`: `num_groups, rstd, gamma, beta,
/// activation`.
pub(crate) type BackwardArgs<'a> = (usize, &'a [f64], &'a [f64], &'a [f64], u32);

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

/// Pushes `a = rstd γ_c` and `b = β_c - mean_d a` of the channels `gamma` and `beta` hold (one
/// group's) to `ab`: the coefficients of `y = (x - k) a + b` for a group whose values, shifted
/// by `k`, have mean `mean_d`.
#[inline(always)]
pub(crate) fn push_affine<R: simd::Real>(
    ab: [&mut Vec<R>; 2],
    [gamma, beta]: [&[f64]; 2],
    mean_d: f64,
    rstd: f64,
) {
    // Two `extend`s over slices: no capacity test per value (a group's table is refilled for
    // each group, which can be 64 rows of 49 values).
    let [va, vb] = ab;
    va.extend(gamma.iter().map(|&g| R::from_f64(rstd * g)));
    let b = gamma.iter().zip(beta);
    vb.extend(b.map(|(&g, &b)| R::from_f64(b - mean_d * (rstd * g))));
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
    use crate::activation::Activation;

    /// The dispatch follows the CPU and `GN_BURN_CPU_BASELINE`: the kernels run on macerator's
    /// best instruction set here, or on its scalar backend when the variable is `1`, and no
    /// test of this process has run a kernel on the other path. (Tests cannot set the
    /// variable: it is read once, by whichever test calls a kernel first, so
    /// `.ci/memcheck.sh` runs the tests with and without it.)
    #[test]
    fn dispatch_follows_the_cpu_and_the_baseline_switch() {
        let forced = std::env::var(BASELINE_VAR).as_deref() == Ok("1");
        let want = if forced { Arch::Scalar } else { Arch::detect() };
        assert_eq!(format!("{:?}", arch()), format!("{want:?}"));
        // For .ci/memcheck.sh, which checks that valgrind let the AVX2 path run.
        println!("CPU kernels dispatch to {:?}", arch());
        let (level, other) = (usize::from(!is_baseline()), usize::from(is_baseline()));
        let runs = |l: usize| DISPATCHED[l].load(Ordering::Relaxed);
        let before = runs(level);
        let data: Vec<f32> = (0..2 * 4 * 9).map(|i| (i % 7) as f32).collect();
        let x = view(&data, 0, &[2, 4, 9], &[36, 9, 1]).expect("a channels-first view");
        let out = forward(&x, 2, &[1.0; 4], &[0.0; 4], 1e-5, Activation::CODE_NONE);
        assert_eq!(out.y.len(), data.len());
        let path = |l: usize| ["scalar", "vector"][l];
        assert!(
            runs(level) > before,
            "the forward ran on the {} path",
            path(level)
        );
        assert_eq!(runs(other), 0, "nothing ran on the {} path", path(other));
    }

    /// The plan: channels-first inputs go by groups (streamed when large and f32), channels-last
    /// forwards with few positions by blocks of groups, the other channels-last passes by
    /// positions.
    #[test]
    fn the_plan_follows_order_and_size() {
        let dense = |n: usize, c: usize, s: usize, last: bool| {
            let strides = if last { [c * s, 1, c] } else { [c * s, s, 1] };
            (
                vec![0f32; n * c * s],
                [n, c, s],
                strides.map(|v| v as isize),
            )
        };
        let (d, shape, st) = dense(2, 64, 49, false);
        let x = view(&d, 0, &shape, &st).unwrap();
        assert_eq!(plan(&x, 32, false), Plan::Groups { stream: false });
        let (d, shape, st) = dense(8, 256, 56 * 56, false);
        let x = view(&d, 0, &shape, &st).unwrap();
        assert_eq!(plan(&x, 32, false), Plan::Groups { stream: true });
        assert_eq!(plan(&x, 32, true), Plan::Groups { stream: false });
        let (d, shape, st) = dense(8, 512, 49, true);
        let x = view(&d, 0, &shape, &st).unwrap();
        assert!(matches!(plan(&x, 32, false), Plan::ColumnBlocks { .. }));
        assert_eq!(plan(&x, 32, true), Plan::Positions);
        let (d, shape, st) = dense(1, 64, 64 * 64, true);
        let x = view(&d, 0, &shape, &st).unwrap();
        assert_eq!(plan(&x, 32, false), Plan::Positions);
    }
}

#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "ndarray")]
mod ndarray;
