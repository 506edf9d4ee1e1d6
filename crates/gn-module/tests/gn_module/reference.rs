//! GroupNorm in f64, written from its formulas and independent of the library's code: the
//! forward `y = act(gamma_c * (x - mean_g) * rstd_g + beta_c)` and the backward of
//! `sum(y * dy)` for x, gamma and beta, with no activation, ReLU or SiLU; and the error bound
//! an f32, f16 or bf16 result is held to against it, element by element.
//!
//! # The bound
//!
//! The inputs are first rounded to the dtype under test ([`Problem::new`]), so the reference
//! is exact for the values the kernel reads and the only errors left are the kernel's own. A
//! kernel that computes in f32 and rounds each output once to its dtype `T` is within
//!
//! ```text
//! |got - ref| <= u_T * (|ref| + e) + e + floor_T,    e = f32_error + kink
//! ```
//!
//! - `u_T`, the unit roundoff of the output (half an ulp, relative): 2^-24 for f32, 2^-11 for
//!   f16 (11 significant bits), 2^-8 for bf16 (8 bits). Rounding to nearest moves a value by
//!   at most `u_T` of itself. For f16 and bf16 this term dominates: it is what a correct
//!   16-bit result shows, and a 1% error in a bf16 output is 2.56 of it.
//! - `f32_error`, the f32 arithmetic before that rounding ([`Problem::reference`] derives it
//!   per output), in units of `eps_len = (LAMBDA * sqrt(len) + K) * 2^-24` for the sums it
//!   depends on, `len` values each (a group for the statistics, `N * S` values for the
//!   parameter gradients' channel sums). A sum of `len` f32 terms, in any order, is within
//!   `LAMBDA * sqrt(len) * 2^-24` of the sum of the terms' absolute values with probability
//!   at least `1 - 2 exp(-LAMBDA^2 / 2)` = `1 - 3e-8` for `LAMBDA = 6` (Higham and Mary,
//!   "A new approach to probabilistic rounding error analysis", SISC 2019); the worst case,
//!   `len * 2^-24`, needs every rounding error to have the same sign, and would exceed a
//!   16-bit half ulp for the largest groups tested (73728 values: 4.4e-3). `K = 64` ulps
//!   cover the operations around the sums (the shift, products, `rsqrt`, `exp` for SiLU:
//!   WGSL allows `exp` 3 + 2|x| ulps). On the tests' data (groups of 3 to 73728 values) this
//!   is 1e-5 to 1.5e-4 of the largest `|y|` and up to 6e-4 of the largest `|dx|`,
//!   `|dgamma|`, `|dbeta|`: below bf16's half ulp (3.9e-3) everywhere, and below f16's
//!   (4.9e-4) but for the gradients of the largest groups.
//! - `kink` (ReLU only): where `|z|` lies within twice its own error bound of 0, the kernel
//!   may take either side of the kink, and that element's whole `dy` may or may not reach the
//!   gradients; the bound allows it, for that element's `dx` and, by that `dy`'s share, the
//!   rest of its group's `dx` and its channel's `dgamma` and `dbeta`. The tests' data has a
//!   few such elements (|z| of 1e-5 to 1e-4) in the problems of 5e4 values and more.
//! - `floor_T`, the smallest normal of `T` (2^-14 for f16): a device that flushes subnormals
//!   to zero returns 0 for anything smaller.

use burn::tensor::{DType, Device, Tensor, TensorData};
use gn_module::Activation;

use crate::common::randn;

/// The three activations the kernels fuse.
pub const ACTIVATIONS: [Activation; 3] = [Activation::None, Activation::Relu, Activation::Silu];

/// Probabilistic rounding-error bound's multiplier: failure probability 2 exp(-18) per sum.
const LAMBDA: f64 = 6.0;
/// Ulps for the per-element operations around the sums.
const K: f64 = 64.0;

/// The unit roundoff of `dtype`: half an ulp, relative.
pub fn unit_roundoff(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 2f64.powi(-53),
        DType::F32 => 2f64.powi(-24),
        DType::F16 => 2f64.powi(-11),
        DType::BF16 => 2f64.powi(-8),
        other => panic!("no unit roundoff for {other:?}"),
    }
}

/// The smallest positive normal value of `dtype`.
fn smallest_normal(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::MIN_POSITIVE,
        DType::F32 | DType::BF16 => f32::MIN_POSITIVE as f64,
        DType::F16 => 2f64.powi(-14),
        other => panic!("no smallest normal for {other:?}"),
    }
}

/// `value` rounded to nearest in `dtype`.
pub fn round_to(value: f64, dtype: DType) -> f64 {
    match dtype {
        DType::F64 => value,
        DType::F32 => value as f32 as f64,
        DType::F16 => burn::tensor::f16::from_f64(value).to_f64(),
        DType::BF16 => burn::tensor::bf16::from_f64(value).to_f64(),
        other => panic!("cannot round to {other:?}"),
    }
}

/// The unit roundoff of the arithmetic behind a `dtype` result: f64 for f64, f32 for the
/// others.
fn arithmetic_roundoff(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => unit_roundoff(DType::F64),
        _ => unit_roundoff(DType::F32),
    }
}

/// The four results of a forward and backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Y,
    Dx,
    Dgamma,
    Dbeta,
}

impl Output {
    pub const ALL: [Output; 4] = [Output::Y, Output::Dx, Output::Dgamma, Output::Dbeta];

    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        ["y", "dx", "dgamma", "dbeta"][self.index()]
    }
}

/// One GroupNorm forward and backward: `x` and `dy` of `shape` (`[N, C, *]`, values in
/// logical row-major order), `gamma` and `beta` of length `C`, all already representable in
/// the dtype they were made for.
#[derive(Clone, Debug)]
pub struct Problem {
    pub shape: Vec<usize>,
    pub groups: usize,
    pub epsilon: f64,
    pub activation: Activation,
    pub x: Vec<f64>,
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
    pub dy: Vec<f64>,
}

impl Problem {
    /// A problem with epsilon 1e-5 whose values are those given, rounded to `dtype`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shape: &[usize],
        groups: usize,
        activation: Activation,
        dtype: DType,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        dy: &[f64],
    ) -> Self {
        let numel: usize = shape.iter().product();
        assert_eq!(x.len(), numel, "x length");
        assert_eq!(dy.len(), numel, "dy length");
        assert_eq!(gamma.len(), shape[1], "gamma length");
        assert_eq!(beta.len(), shape[1], "beta length");
        let round = |v: &[f64]| v.iter().map(|&v| round_to(v, dtype)).collect();
        Self {
            shape: shape.to_vec(),
            groups,
            epsilon: 1e-5,
            activation,
            x: round(x),
            gamma: round(gamma),
            beta: round(beta),
            dy: round(dy),
        }
    }

    /// Pseudo-random values rounded to `dtype`: `x = 0.5 + 2 * randn` (an offset and a spread
    /// other than 1, so that every term of the formulas matters), `gamma = 1 + 0.3 * randn`,
    /// `beta = 0.2 * randn`, `dy = randn`, from seeds `seed` to `seed + 3`.
    pub fn random(
        shape: &[usize],
        groups: usize,
        activation: Activation,
        dtype: DType,
        seed: u64,
    ) -> Self {
        let numel: usize = shape.iter().product();
        let c = shape[1];
        let affine = |v: Vec<f64>, offset: f64, scale: f64| -> Vec<f64> {
            v.iter().map(|v| offset + scale * v).collect()
        };
        Self::new(
            shape,
            groups,
            activation,
            dtype,
            &affine(randn(numel, seed), 0.5, 2.0),
            &affine(randn(c, seed + 1), 1.0, 0.3),
            &affine(randn(c, seed + 2), 0.0, 0.2),
            &randn(numel, seed + 3),
        )
    }

    fn make<const D: usize>(
        &self,
        values: &[f64],
        shape: Vec<usize>,
        device: &Device,
        dtype: DType,
    ) -> Tensor<D> {
        Tensor::from_data(TensorData::new(values.to_vec(), shape), (device, dtype))
    }

    /// `x` as a contiguous tensor.
    pub fn x_tensor<const D: usize>(&self, device: &Device, dtype: DType) -> Tensor<D> {
        self.make(&self.x, self.shape.clone(), device, dtype)
    }

    /// `dy` as a contiguous tensor.
    pub fn dy_tensor<const D: usize>(&self, device: &Device, dtype: DType) -> Tensor<D> {
        self.make(&self.dy, self.shape.clone(), device, dtype)
    }

    pub fn gamma_tensor(&self, device: &Device, dtype: DType) -> Tensor<1> {
        self.make(&self.gamma, vec![self.gamma.len()], device, dtype)
    }

    pub fn beta_tensor(&self, device: &Device, dtype: DType) -> Tensor<1> {
        self.make(&self.beta, vec![self.beta.len()], device, dtype)
    }

    /// The f64 results and the error bound of an f32 evaluation of each, in ulps of the
    /// arithmetic (see the module documentation).
    ///
    /// The statistics' errors are common to a group: the kernel's `x_hat` is `x_hat + a +
    /// b x_hat` for the whole `(n, g)` group, `|a| <= eps_m C_g` (the mean's error times
    /// `rstd`; `C_g = rstd_g mean_j |x_j - x_first|`, since the kernels sum the group's values
    /// shifted by its first one) and `|b| <= eps_m` (`rstd`'s relative error), `eps_m` the
    /// bound of a sum of the group's `m` values; each element adds its own few roundings. With
    /// `X_i = C_g + |x_hat_i|` (the size of `x_hat_i`'s error over `eps_m`), `Z_i = |gamma_c|
    /// X_i + |beta_c|` (that of `z_i`) and `D_i = |dy_i| (|act'(z_i)| + |act''(z_i)| Z_i)`
    /// (the size of `dz_i = dy_i act'(z_i)` and of its error over `eps_m`; `act''` is 0
    /// but for SiLU), the bounds are:
    ///
    /// - `y_i`: `eps_m L Z_i`, `L` = 1.1 for SiLU (its largest slope), else 1;
    /// - `dx_i = rstd (g_i - mean(g) - x_hat_i mean(g x_hat))`, `g = gamma dz`, means over
    ///   the group: `eps_m rstd (2 |gamma| D_i + 3 mean(|gamma| D) + 5 X_i mean(|gamma| D X))`
    ///   (each term's own error, its means' sums, and `rstd`'s relative error on all);
    /// - `dbeta_c = sum dz` and `dgamma_c = sum dz x_hat` over the `N * S` values of channel
    ///   `c`: their sums' and elements' own errors, `eps_NS sum D` and `eps_NS sum D X`, plus
    ///   the statistics' common errors summed with their signs per `(n, c)` row (`a` and `b`
    ///   times the row's sums of `dz`'s and `x_hat`'s sensitivities), which stay small where
    ///   `dz` cancels, as the results do.
    pub fn reference(&self) -> Reference {
        let (n, c) = (self.shape[0], self.shape[1]);
        let s: usize = self.shape[2..].iter().product();
        let cpg = c / self.groups;
        let m = cpg * s;
        let numel = n * c * s;
        let channel_of = |i: usize| i / s % c;
        // In ulps: the bound of a sum over a group (eps_m), over a channel (eps_NS).
        let ulps = |len: usize| LAMBDA * (len as f64).sqrt() + K;
        let (e_m, e_ns) = (ulps(m), ulps(n * s));
        let z_error = e_m * unit_roundoff(DType::F32);

        let mut mean = vec![0.0; n * self.groups];
        let mut rstd = vec![0.0; n * self.groups];
        let mut spread = vec![0.0; n * self.groups];
        // Each value's deviation from its group's mean, computed from the group's values
        // shifted by its first one (exact for values of similar magnitude), never from the
        // mean itself: inputs with |mean| / std of 1e5 (PyTorch fixtures) keep f64 precision.
        let mut centered = vec![0.0; numel];
        for (row, group) in self.x.chunks_exact(m.max(1)).enumerate() {
            let shift = group[0];
            let shifted_mean = group.iter().map(|v| v - shift).sum::<f64>() / m as f64;
            let deviations = &mut centered[row * m..(row + 1) * m];
            for (d, v) in deviations.iter_mut().zip(group) {
                *d = (v - shift) - shifted_mean;
            }
            let var = deviations.iter().map(|d| d * d).sum::<f64>() / m as f64;
            mean[row] = shift + shifted_mean;
            rstd[row] = 1.0 / (var + self.epsilon).sqrt();
            spread[row] = group.iter().map(|v| (v - shift).abs()).sum::<f64>() / m as f64;
        }

        let zeros = || {
            [
                vec![0.0; numel],
                vec![0.0; numel],
                vec![0.0; c],
                vec![0.0; c],
            ]
        };
        let mut out = Reference {
            y: vec![0.0; numel],
            dx: vec![0.0; numel],
            dgamma: vec![0.0; c],
            dbeta: vec![0.0; c],
            err: zeros(),
            kink: zeros(),
            stats_ulps: e_m,
            mean,
            rstd,
            spread,
        };
        let slope = if self.activation == Activation::Silu {
            1.1
        } else {
            1.0
        };
        // Per element: x_hat, X, dz, D, and the kink weight w (|dy| where ReLU's side is open).
        let mut x_hat = vec![0.0; numel];
        let mut big_x = vec![0.0; numel];
        let mut dz = vec![0.0; numel];
        let mut big_d = vec![0.0; numel];
        let mut w = vec![0.0; numel];
        // Per (n, c) row, with q = dz + gamma dy act'' x_hat (dz x_hat's sensitivity to x_hat)
        // and t = gamma dy act'' (dz's): sum q, sum q x_hat, sum t, sum t x_hat.
        let mut row_sums = vec![[0.0f64; 4]; n * c];
        for i in 0..numel {
            let (ch, group) = (channel_of(i), i / m);
            let (g, b) = (self.gamma[ch], self.beta[ch]);
            x_hat[i] = centered[i] * out.rstd[group];
            big_x[i] = out.rstd[group] * out.spread[group] + x_hat[i].abs();
            let z = g * x_hat[i] + b;
            let big_z = g.abs() * big_x[i] + b.abs();
            let (y, first, second) = match self.activation {
                Activation::None => (z, 1.0, 0.0),
                Activation::Relu => {
                    if z.abs() <= 2.0 * z_error * big_z {
                        w[i] = self.dy[i].abs();
                    }
                    (z.max(0.0), if z > 0.0 { 1.0 } else { 0.0 }, 0.0)
                }
                Activation::Silu => {
                    let sig = 1.0 / (1.0 + (-z).exp());
                    let first = sig * (1.0 + z * (1.0 - sig));
                    let second = sig * (1.0 - sig) * (2.0 + z * (1.0 - 2.0 * sig));
                    (z * sig, first, second)
                }
            };
            out.y[i] = y;
            out.err[0][i] = e_m * slope * big_z;
            dz[i] = self.dy[i] * first;
            big_d[i] = self.dy[i].abs() * (first.abs() + second.abs() * big_z);
            out.dbeta[ch] += dz[i];
            out.dgamma[ch] += dz[i] * x_hat[i];
            out.err[3][ch] += e_ns * big_d[i];
            out.err[2][ch] += e_ns * big_d[i] * big_x[i];
            out.kink[3][ch] += w[i];
            out.kink[2][ch] += w[i] * x_hat[i].abs();
            let t = g * self.dy[i] * second;
            let q = dz[i] + t * x_hat[i];
            let sums = &mut row_sums[i / s];
            sums[0] += q;
            sums[1] += q * x_hat[i];
            sums[2] += t;
            sums[3] += t * x_hat[i];
        }
        for (row, [q, qx, t, tx]) in row_sums.iter().enumerate() {
            let (ch, group) = (row % c, row / c * self.groups + row % c / cpg);
            let cg = out.rstd[group] * out.spread[group];
            out.err[2][ch] += e_m * (cg * q.abs() + qx.abs());
            out.err[3][ch] += e_m * (cg * t.abs() + tx.abs());
        }
        for group in 0..n * self.groups {
            let range = group * m..(group + 1) * m;
            let gamma = |i: usize| self.gamma[channel_of(i)];
            let mean_of = |f: &dyn Fn(usize) -> f64| range.clone().map(f).sum::<f64>() / m as f64;
            let g_mean = mean_of(&|i| gamma(i) * dz[i]);
            let gx_mean = mean_of(&|i| gamma(i) * dz[i] * x_hat[i]);
            let d_mean = mean_of(&|i| gamma(i).abs() * big_d[i]);
            let dx_mean = mean_of(&|i| gamma(i).abs() * big_d[i] * big_x[i]);
            let w_mean = mean_of(&|i| gamma(i).abs() * w[i]);
            let wx_mean = mean_of(&|i| gamma(i).abs() * w[i] * x_hat[i].abs());
            let r = out.rstd[group];
            for i in range.clone() {
                out.dx[i] = r * (gamma(i) * dz[i] - g_mean - x_hat[i] * gx_mean);
                out.err[1][i] = e_m
                    * r
                    * (2.0 * gamma(i).abs() * big_d[i] + 3.0 * d_mean + 5.0 * big_x[i] * dx_mean);
                out.kink[1][i] = r * (gamma(i).abs() * w[i] + w_mean + x_hat[i].abs() * wx_mean);
            }
        }
        out
    }
}

/// The f64 results of a [`Problem`] and what each may be off by in a given dtype.
pub struct Reference {
    pub y: Vec<f64>,
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
    /// Per `(n, g)`: the group's mean and `1 / sqrt(var + epsilon)`.
    pub mean: Vec<f64>,
    pub rstd: Vec<f64>,
    /// Per `(n, g)`: `mean_j |x_j - x_first|`, the size of the shifted values summed.
    spread: Vec<f64>,
    /// Per output: each element's error bound in ulps of the arithmetic, and the ReLU kink
    /// allowance.
    err: [Vec<f64>; 4],
    kink: [Vec<f64>; 4],
    /// The bound of a sum over a group, in ulps.
    stats_ulps: f64,
}

impl Reference {
    pub fn values(&self, output: Output) -> &[f64] {
        match output {
            Output::Y => &self.y,
            Output::Dx => &self.dx,
            Output::Dgamma => &self.dgamma,
            Output::Dbeta => &self.dbeta,
        }
    }

    /// The error each element of `output` may have when computed as the module documentation
    /// describes and returned in `dtype`.
    pub fn bound(&self, output: Output, dtype: DType) -> Vec<f64> {
        let k = output.index();
        let (u, floor) = (unit_roundoff(dtype), smallest_normal(dtype));
        let ulp = arithmetic_roundoff(dtype);
        self.values(output)
            .iter()
            .zip(&self.err[k])
            .zip(&self.kink[k])
            .map(|((r, err), kink)| {
                let e = ulp * err + kink;
                u * (r.abs() + e) + e + floor
            })
            .collect()
    }

    /// Asserts that `got` (in `dtype`) is within [`bound`](Self::bound) of the reference.
    pub fn check(&self, what: &str, output: Output, dtype: DType, got: &[f64]) {
        assert_within(
            &format!("{} {what}", output.name()),
            got,
            self.values(output),
            &self.bound(output, dtype),
        );
    }

    /// [`check`](Self::check) of `[y, dx, dgamma, dbeta]`.
    pub fn check_all(&self, what: &str, dtype: DType, got: &[Vec<f64>; 4]) {
        for output in Output::ALL {
            self.check(what, output, dtype, &got[output.index()]);
        }
    }

    /// Asserts that the statistics of a forward (`[N, G]`, f32 for f32, f16 and bf16 inputs)
    /// are the groups' mean and `rstd`: the mean within `eps * mean|x - x_first|` (the shifted
    /// sum's error) and `rstd` within `eps * rstd`, plus the stored value's rounding.
    pub fn check_stats(&self, what: &str, dtype: DType, mean: &[f64], rstd: &[f64]) {
        let stats_dtype = if dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let u = unit_roundoff(stats_dtype);
        let eps = self.stats_ulps * arithmetic_roundoff(dtype);
        let mean_bound: Vec<f64> = (self.mean.iter().zip(&self.spread))
            .map(|(m, s)| eps * s + u * m.abs())
            .collect();
        let rstd_bound: Vec<f64> = self.rstd.iter().map(|r| (eps + u) * r).collect();
        assert_within(&format!("mean {what}"), mean, &self.mean, &mean_bound);
        assert_within(&format!("rstd {what}"), rstd, &self.rstd, &rstd_bound);
    }
}

/// The largest `|got - expected| / bound` and where it is (infinite where a value is NaN on
/// one side only, or where a bound of 0 is exceeded).
pub fn worst_ratio(got: &[f64], expected: &[f64], bound: &[f64]) -> (f64, usize) {
    assert_eq!(got.len(), expected.len(), "length mismatch");
    let mut worst = (0.0, 0);
    for (i, ((g, e), b)) in got.iter().zip(expected).zip(bound).enumerate() {
        let ratio = if g == e || (g.is_nan() && e.is_nan()) {
            0.0
        } else {
            let err = (g - e).abs();
            if err <= *b {
                if *b > 0.0 { err / b } else { 0.0 }
            } else if err.is_nan() || *b == 0.0 {
                f64::INFINITY
            } else {
                err / b
            }
        };
        if ratio > worst.0 {
            worst = (ratio, i);
        }
    }
    worst
}

/// Asserts every `|got_i - expected_i| <= bound_i`, naming the worst element otherwise.
pub fn assert_within(what: &str, got: &[f64], expected: &[f64], bound: &[f64]) {
    let (ratio, i) = worst_ratio(got, expected, bound);
    assert!(
        ratio <= 1.0,
        "{what}: element {i} is {} instead of {}: error {:.3e} is {ratio:.2} times its bound \
         {:.3e}",
        got[i],
        expected[i],
        (got[i] - expected[i]).abs(),
        bound[i]
    );
}
