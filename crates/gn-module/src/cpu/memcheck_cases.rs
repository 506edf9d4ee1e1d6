//! End-to-end cases of the CPU kernels small enough to run under valgrind (`.ci/memcheck.sh`
//! runs the kernel tests, these among them, on both dispatch paths): odd sizes, both memory
//! orders, padded views, f32, f64, f16 and bf16, every activation, in place and not, forward and
//! backward, each checked against the f64 formulas. The tests' names start with `memcheck_`.

use half::{bf16, f16};

use super::{CpuElem, Order, View, channels_first, channels_last, transpose};
use crate::activation::Activation;

const ACT_NONE: u32 = Activation::CODE_NONE;
const ACT_RELU: u32 = Activation::CODE_RELU;
const ACT_SILU: u32 = Activation::CODE_SILU;

/// An element type of the cases: conversions, and the error its rounding allows.
trait CaseElem: CpuElem + core::fmt::Debug {
    /// Relative error allowed on stored outputs (y, dx).
    const TOL: f64;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! case_elem {
    ($t:ty, $tol:expr, $from:expr, $to:expr) => {
        impl CaseElem for $t {
            const TOL: f64 = $tol;
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
            fn to_f64(self) -> f64 {
                $to(self)
            }
        }
    };
}

case_elem!(f32, 1e-4, |v| v as f32, |v| v as f64);
case_elem!(f64, 1e-10, |v| v, |v| v);
case_elem!(f16, 4e-3, f16::from_f64, f16::to_f64);
case_elem!(bf16, 3e-2, bf16::from_f64, bf16::to_f64);

const EPS: f64 = 1e-5;

/// `[N, C, S]` and the group count of a case.
#[derive(Clone, Copy, Debug)]
struct Shape {
    n: usize,
    c: usize,
    s: usize,
    groups: usize,
}

/// Rows shorter than a vector, with an overlapping tail, of one value ([N, C]), longer than a
/// block of sums (256), and position rows of 9 and 40 channels: `(n, c, s, groups)`.
const SHAPES: [(usize, usize, usize, usize); 6] = [
    (2, 6, 7, 3),
    (1, 12, 19, 4),
    (3, 10, 1, 5),
    (1, 4, 300, 2),
    (1, 9, 11, 3),
    (2, 40, 5, 4),
];

/// The f64 results of a case: forward `y`, per-group mean and rstd, backward `dx`, `dgamma`,
/// `dbeta`, all from the stored (rounded) inputs; values indexed `(n, c, s)` as `[N, C, S]`.
struct Reference {
    y: Vec<f64>,
    mean: Vec<f64>,
    rstd: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
}

fn act(z: f64, code: u32) -> f64 {
    match code {
        ACT_RELU => z.max(0.0),
        ACT_SILU => z / (1.0 + (-z).exp()),
        _ => z,
    }
}

fn act_grad(z: f64, code: u32) -> f64 {
    match code {
        ACT_RELU => f64::from(z > 0.0),
        ACT_SILU => {
            let sg = 1.0 / (1.0 + (-z).exp());
            sg * (1.0 + z * (1.0 - sg))
        }
        _ => 1.0,
    }
}

/// GroupNorm's forward and backward in f64: `x_hat = (x - mean) rstd`, `z = gamma x_hat +
/// beta`, `y = act(z)`; `dz = dy act'(z)`, `dbeta = Σ dz`, `dgamma = Σ dz x_hat`, and
/// `dx = rstd (gamma dz - mean_g(gamma dz) - x_hat mean_g(gamma dz x_hat))`.
fn reference(
    sh: Shape,
    x: &[f64],
    dy: &[f64],
    gamma: &[f64],
    beta: &[f64],
    code: u32,
) -> Reference {
    let Shape { n, c, s, groups } = sh;
    let cpg = c / groups;
    let at = |b: usize, ch: usize, p: usize| (b * c + ch) * s + p;
    let len = (cpg * s) as f64;
    let mut r = Reference {
        y: vec![0.0; x.len()],
        mean: vec![0.0; n * groups],
        rstd: vec![0.0; n * groups],
        dx: vec![0.0; x.len()],
        dgamma: vec![0.0; c],
        dbeta: vec![0.0; c],
    };
    for b in 0..n {
        for g in 0..groups {
            let idx: Vec<(usize, usize)> = (g * cpg..(g + 1) * cpg)
                .flat_map(|ch| (0..s).map(move |p| (ch, at(b, ch, p))))
                .collect();
            let mean = idx.iter().map(|&(_, i)| x[i]).sum::<f64>() / len;
            let var = idx.iter().map(|&(_, i)| (x[i] - mean).powi(2)).sum::<f64>() / len;
            let rstd = 1.0 / (var + EPS).sqrt();
            r.mean[b * groups + g] = mean;
            r.rstd[b * groups + g] = rstd;
            let (mut m1, mut m2) = (0.0, 0.0);
            for &(ch, i) in &idx {
                let xh = (x[i] - mean) * rstd;
                let z = gamma[ch] * xh + beta[ch];
                r.y[i] = act(z, code);
                let dz = dy[i] * act_grad(z, code);
                r.dbeta[ch] += dz;
                r.dgamma[ch] += dz * xh;
                m1 += gamma[ch] * dz / len;
                m2 += gamma[ch] * dz * xh / len;
            }
            for &(ch, i) in &idx {
                let xh = (x[i] - mean) * rstd;
                let dz = dy[i] * act_grad(gamma[ch] * xh + beta[ch], code);
                r.dx[i] = rstd * (gamma[ch] * dz - m1 - xh * m2);
            }
        }
    }
    r
}

/// Asserts `got` (stored as `E`) is `want` to within `E`'s rounding.
fn close<E: CaseElem>(got: E, want: f64, what: &dyn Fn() -> String) {
    let g = got.to_f64();
    assert!(
        (g - want).abs() <= E::TOL * (1.0 + want.abs()),
        "{}: {g} != {want}",
        what()
    );
}

/// Asserts the f64 outputs (statistics, parameter gradients) are `want` to within the error
/// of sums computed in `E`'s arithmetic type.
fn close_f64<E: CaseElem>(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let tol = if E::TOL < 1e-6 { 1e-9 } else { 1e-4 };
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} != {w}"
        );
    }
}

/// Storage of a view: `len` values, with the logical `[N, C, S]` values placed by `place`, the
/// rest NaN (read by mistake, they would show).
fn storage<E: CaseElem>(values: &[f64], len: usize, place: impl Fn(usize) -> usize) -> Vec<E> {
    let mut data = vec![E::from_f64(f64::NAN); len];
    for (i, &v) in values.iter().enumerate() {
        data[place(i)] = E::from_f64(v);
    }
    data
}

/// How a check names what it looks at.
type What<'a> = &'a dyn Fn(&str) -> String;

/// Which outputs a check reads: the forward's (`y`, mean, rstd) or the backward's (`dx`,
/// dgamma, dbeta).
#[derive(Clone, Copy, PartialEq)]
enum Outputs {
    Forward,
    Backward,
}

impl Reference {
    /// Asserts a pass's outputs: value `i` of `[N, C, S]` at `got[at(i)]`, then its two f64
    /// outputs.
    fn check<E: CaseElem>(
        &self,
        which: Outputs,
        got: &[E],
        at: &dyn Fn(usize) -> usize,
        f64s: [&[f64]; 2],
        what: What,
    ) {
        let (name, want, names, wants) = match which {
            Outputs::Forward => ("y", &self.y, ["mean", "rstd"], [&self.mean, &self.rstd]),
            Outputs::Backward => (
                "dx",
                &self.dx,
                ["dgamma", "dbeta"],
                [&self.dgamma, &self.dbeta],
            ),
        };
        for (i, &w) in want.iter().enumerate() {
            close(got[at(i)], w, &|| what(&format!("{name}[{i}]")));
        }
        for k in 0..2 {
            close_f64::<E>(f64s[k], wants[k], &what(names[k]));
        }
    }
}

/// Every path of the kernels on one case, checked against the f64 reference.
fn check_case<E: CaseElem>(sh: Shape, code: u32) {
    let Shape { n, c, s, groups } = sh;
    let numel = n * c * s;
    let case = format!("{:?} {sh:?} act {code}", core::any::type_name::<E>());
    // Inputs as stored, then read back: the reference sees the rounded values.
    let round = |v: f64| E::from_f64(v).to_f64();
    let x: Vec<f64> = (0..numel)
        .map(|i| round(((i * 7919) % 31) as f64 * 0.23 - 3.1))
        .collect();
    let dy: Vec<f64> = (0..numel)
        .map(|i| round(((i * 104_729) % 17) as f64 * 0.19 - 1.5))
        .collect();
    let gamma: Vec<f64> = (0..c).map(|j| 0.6 + 0.1 * (j % 7) as f64).collect();
    let beta: Vec<f64> = (0..c).map(|j| -0.2 + 0.07 * (j % 5) as f64).collect();
    let want = reference(sh, &x, &dy, &gamma, &beta, code);
    let ncs = |i: usize| (i / (c * s), i / s % c, i % s);
    let dense = |v: &[f64]| -> Vec<E> { v.iter().map(|&v| E::from_f64(v)).collect() };
    let same = |i: usize| i;
    let fwd_args = (groups, &gamma[..], &beta[..], EPS, code);
    let bwd_args = (groups, &want.rstd[..], &gamma[..], &beta[..], code);

    // Channels-first views: an offset, padded samples, and channel rows padded by `pad_c`
    // (which makes the kernels read row by row instead of whole runs).
    for pad_c in [0, 1] {
        let (sc, sn, offset) = (s + pad_c, c * (s + pad_c) + 2, 3);
        let len = offset + n * sn;
        let place = |i: usize| {
            let (b, ch, p) = ncs(i);
            offset + b * sn + ch * sc + p
        };
        let (xd, gd) = (storage::<E>(&x, len, place), storage::<E>(&dy, len, place));
        let view = |data| View {
            data,
            offset,
            n,
            c,
            s,
            sn,
            sc,
            ss: 1,
        };
        let (xv, gv) = (view(&xd[..]), view(&gd[..]));
        assert_eq!(xv.order(), Some(Order::ChannelsFirst));
        let what = |p: &str| format!("{case}, channels-first pad {pad_c}: {p}");

        let f = channels_first::forward(&xv, fwd_args, false);
        want.check(Outputs::Forward, &f.y, &same, [&f.mean, &f.rstd], &what);
        let b = channels_first::backward(&xv, &gv, bwd_args);
        want.check(
            Outputs::Backward,
            &b.dx,
            &same,
            [&b.dgamma, &b.dbeta],
            &what,
        );

        // In place, where the adapters would take it: dense tensors only.
        if pad_c == 0 {
            let what = |p: &str| what(&format!("in place: {p}"));
            let mut y = dense(&x);
            let (mean, rstd) = channels_first::forward_inplace(
                &mut y,
                [n, c, s],
                groups,
                &gamma,
                &beta,
                EPS,
                code,
            );
            want.check(Outputs::Forward, &y, &same, [&mean, &rstd], &what);
            let mut dx = dense(&dy);
            let (dgamma, dbeta) = channels_first::backward_inplace(
                &xv, &mut dx, groups, &want.rstd, &gamma, &beta, code,
            );
            want.check(Outputs::Backward, &dx, &same, [&dgamma, &dbeta], &what);
        }
    }

    if s == 1 {
        return; // one position: channels-last is channels-first
    }
    // Channels-last views: position rows of C values padded by `pad_s`, padded samples.
    for pad_s in [0, 3] {
        let (ss, offset) = (c + pad_s, 5);
        let sn = s * ss + 1;
        let len = offset + n * sn;
        let place = |i: usize| {
            let (b, ch, p) = ncs(i);
            offset + b * sn + p * ss + ch
        };
        let (xd, gd) = (storage::<E>(&x, len, place), storage::<E>(&dy, len, place));
        let view = |data| View {
            data,
            offset,
            n,
            c,
            s,
            sn,
            sc: 1,
            ss,
        };
        let (xv, gv) = (view(&xd[..]), view(&gd[..]));
        assert_eq!(xv.order(), Some(Order::ChannelsLast));
        let what = |p: &str| format!("{case}, channels-last pad {pad_s}: {p}");
        // Dense channels-last outputs are [N, S, C].
        let nsc = |i: usize| {
            let (b, ch, p) = ncs(i);
            (b * s + p) * c + ch
        };

        let f = channels_last::forward(&xv, fwd_args);
        want.check(Outputs::Forward, &f.y, &nsc, [&f.mean, &f.rstd], &what);
        for per_task in [1, 2] {
            let f = channels_last::forward_blocks(&xv, fwd_args, per_task);
            let what = |p: &str| what(&format!("blocks of {per_task}: {p}"));
            want.check(Outputs::Forward, &f.y, &nsc, [&f.mean, &f.rstd], &what);
        }
        let b = channels_last::backward(&xv, &gv, bwd_args);
        want.check(Outputs::Backward, &b.dx, &nsc, [&b.dgamma, &b.dbeta], &what);

        // x channels-last with dy channels-first: the adapters copy x to channels-first and
        // write dx over dy.
        let x_cf = transpose::channels_first_copy(&xv);
        for (i, &v) in x_cf.iter().enumerate() {
            assert_eq!(v.to_f64(), x[i], "{}", what(&format!("copy [{i}]")));
        }
        let strides = [c * s, s, 1].map(|v| v as isize);
        let xv = super::view(&x_cf, 0, &[n, c, s], &strides).expect("a dense view");
        let mut dx = dense(&dy);
        let (dgamma, dbeta) =
            channels_first::backward_inplace(&xv, &mut dx, groups, &want.rstd, &gamma, &beta, code);
        let what = |p: &str| what(&format!("over a copy: {p}"));
        want.check(Outputs::Backward, &dx, &same, [&dgamma, &dbeta], &what);
    }
}

fn check_all<E: CaseElem>() {
    for (n, c, s, groups) in SHAPES {
        let sh = Shape { n, c, s, groups };
        for code in [ACT_NONE, ACT_RELU, ACT_SILU] {
            check_case::<E>(sh, code);
        }
    }
}

#[test]
fn memcheck_f32_cases() {
    check_all::<f32>();
}

#[test]
fn memcheck_f64_cases() {
    check_all::<f64>();
}

#[test]
fn memcheck_f16_cases() {
    check_all::<f16>();
}

#[test]
fn memcheck_bf16_cases() {
    check_all::<bf16>();
}
