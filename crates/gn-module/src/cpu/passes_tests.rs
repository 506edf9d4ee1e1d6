//! The passes of `passes.rs` on rows of every length around the vector widths, at every
//! instruction set this CPU has and macerator's scalar backend, against f64 formulas.

use half::{bf16, f16};
use macerator::{Scalar, Simd, WithSimd};

use super::{BackwardApply, Normalize, backward_sums, map, map_stream, sums, tail_lanes};
use crate::activation::Activation;
use crate::cpu::simd::tests::archs;
use crate::cpu::simd::{Elem, Real, iota};
use crate::cpu::with_activation;

/// The row passes at one instruction set, on rows of `n` values stored as `E`:
/// `[y, dx, [Σ d, Σ d², Σ dz d, Σ dz, Σ d]]` as f64.
struct Passes<'a, E> {
    x: &'a [E],
    dy: &'a [E],
    act: u32,
}

/// The passes in place, on the test's own copies.
#[inline(always)]
fn run<S: Simd, E: Elem, const ACT: u32>(x: &[E], dy: &[E]) -> [Vec<f64>; 3] {
    let n = x.len();
    let [k, a, b, cx, c0] = [0.5, 1.3, -0.2, 0.07, -0.01].map(|v| E::R::from_f64(v).splat::<S>());
    let kr = E::R::from_f64(0.5);
    let (mut y, mut dx) = (x.to_vec(), dy.to_vec());
    let tail = tail_lanes::<S, E>(n, iota::<S, E::R>());
    let (xp, gp) = (x.as_ptr(), dy.as_ptr());
    // SAFETY: all of n values; y and dx are the test's own, written in place.
    let sums = unsafe {
        let [s1, s2] = sums::<S, E>(xp, n, kr, tail);
        let y = y.as_mut_ptr();
        map::<S, _>(n, &Normalize::<E, _, ACT> { x: y, y, k, a, b });
        let dx = dx.as_mut_ptr();
        map::<S, _>(
            n,
            &BackwardApply::<E, _, ACT> {
                x: xp,
                dy: dx,
                dx,
                coefs: [k, a, b, cx, c0],
            },
        );
        let [p, q, t] = backward_sums::<S, E, ACT>(xp, gp, n, [k, a, b], tail);
        vec![s1, s2, p, q, t]
    };
    let f = |v: Vec<E>| v.into_iter().map(|e| e.to_r().to_f64()).collect();
    [f(y), f(dx), sums]
}

impl<E: Elem> WithSimd for Passes<'_, E> {
    type Output = [Vec<f64>; 3];
    #[inline(always)]
    fn with_simd<S: Simd>(self) -> Self::Output {
        with_activation!(self.act, run::<S, E>(self.x, self.dy))
    }
}

fn check<E: Elem>(to: fn(f64) -> E, tol: f64) {
    for n in (1..=40).chain([49, 64, 255, 256, 257, 300, 1031]) {
        let x: Vec<E> = (0..n)
            .map(|i| to(((i * 7919) % 23) as f64 * 0.37 - 4.0))
            .collect();
        let dy: Vec<E> = (0..n)
            .map(|i| to(((i * 104_729) % 17) as f64 * 0.21 - 1.7))
            .collect();
        for act in [0, 1, 2] {
            let mut results = Vec::new();
            for arch in archs() {
                // SAFETY: archs() lists what this CPU supports and the scalar backend.
                let got = unsafe {
                    arch.dispatch(Passes {
                        x: &x,
                        dy: &dy,
                        act,
                    })
                };
                results.push((arch, got));
            }
            // The reference: f64 formulas on the stored values.
            let (k, a, b, cx, c0) = (0.5, 1.3, -0.2, 0.07, -0.01);
            let xs: Vec<f64> = x.iter().map(|v| v.to_r().to_f64()).collect();
            let gs: Vec<f64> = dy.iter().map(|v| v.to_r().to_f64()).collect();
            let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
            let mut want = [vec![], vec![], vec![0.0; 5]];
            for (&xv, &g) in xs.iter().zip(&gs) {
                let (d, z) = (xv - k, (xv - k) * a + b);
                let (y, dz) = match act {
                    1 => (z.max(0.0), if z > 0.0 { g } else { 0.0 }),
                    2 => (z * sig(z), g * sig(z) * (1.0 + z * (1.0 - sig(z)))),
                    _ => (z, g),
                };
                want[0].push(y);
                want[1].push(a * dz + cx * d + c0);
                let t = if act == 0 { d } else { 0.0 };
                for (w, v) in want[2].iter_mut().zip([d, d * d, dz * d, dz, t]) {
                    *w += v;
                }
            }
            for (arch, got) in &results {
                for (what, (g, w)) in ["y", "dx", "sums"].iter().zip(got.iter().zip(&want)) {
                    let t = if *what == "sums" { 1e-4 } else { tol };
                    for (i, (g, w)) in g.iter().zip(w).enumerate() {
                        let ok = (g - w).abs() <= t * (1.0 + w.abs());
                        assert!(ok, "{arch:?} {what}[{i}], n {n}, act {act}: {g} != {w}");
                    }
                }
            }
        }
    }
}

/// On every instruction set here, at every row length around the vector widths (whole
/// vectors, overlapping tails, partial vectors, several blocks), the row passes in place
/// give the f64 formulas' values for each element type and activation.
#[test]
fn row_passes_match_the_formulas_on_every_instruction_set() {
    check::<f32>(|v| v as f32, 2e-5);
    check::<f64>(|v| v, 1e-12);
    check::<f16>(f16::from_f64, 2e-3);
    check::<bf16>(bf16::from_f64, 1.6e-2);
}

/// [`map_stream`] (stores around the cache, the unaligned head and tail as whole overlapping
/// vectors; two vectors a step with SiLU, one without) at one instruction set: the streamed
/// output, in a buffer of NaNs from `out_offset`, and [`map`]'s output of the same pass.
struct Stream<'a> {
    x: &'a [f32],
    out_offset: usize,
    act: u32,
}

#[inline(always)]
fn stream<S: Simd, const ACT: u32>(x: &[f32], out_offset: usize) -> [Vec<f32>; 2] {
    let n = x.len();
    let [k, a, b] = [0.5f32, 1.3, -0.2].map(|v| v.splat::<S>());
    let mut streamed = vec![f32::NAN; out_offset + n + 1];
    let mut plain = vec![0f32; n];
    let x = x.as_ptr();
    // SAFETY: x holds n values, each output n values from its start, disjoint from x.
    unsafe {
        let y = streamed.as_mut_ptr().add(out_offset);
        map_stream::<S, _>(n, &Normalize::<f32, _, ACT> { x, y, k, a, b }, &[]);
        super::isa::store_fence();
        let y = plain.as_mut_ptr();
        map::<S, _>(n, &Normalize::<f32, _, ACT> { x, y, k, a, b });
    }
    [streamed, plain]
}

impl WithSimd for Stream<'_> {
    type Output = [Vec<f32>; 2];
    #[inline(always)]
    fn with_simd<S: Simd>(self) -> Self::Output {
        with_activation!(self.act, stream::<S>(self.x, self.out_offset))
    }
}

/// Streamed outputs hold exactly what the plain pass writes, at every alignment of the output
/// and every length around the vector widths, with and without SiLU (two vectors a step, or
/// one), and nothing is written outside them.
#[test]
fn streamed_outputs_match_plain_ones_at_every_alignment() {
    const SILU: u32 = Activation::CODE_SILU;
    const NONE: u32 = Activation::CODE_NONE;
    for n in (1..=40).chain([63, 64, 65, 1031]) {
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 23) as f32 * 0.37 - 4.0)
            .collect();
        for (out_offset, act) in (0..16).flat_map(|o| [SILU, NONE].map(|act| (o, act))) {
            for arch in archs() {
                let run = Stream {
                    x: &x,
                    out_offset,
                    act,
                };
                // SAFETY: archs() are the instruction sets this CPU has.
                let [streamed, plain] = unsafe { arch.dispatch(run) };
                let got = &streamed[out_offset..out_offset + n];
                let same = got
                    .iter()
                    .zip(&plain)
                    .all(|(g, p)| g.to_bits() == p.to_bits());
                assert!(
                    same,
                    "{arch:?}, n {n}, offset {out_offset}, act {act}: {got:?} != {plain:?}"
                );
                let outside = streamed[..out_offset]
                    .iter()
                    .chain(&streamed[out_offset + n..]);
                assert!(
                    outside.clone().all(|v| v.is_nan()),
                    "{arch:?}, n {n}, offset {out_offset}: written outside the output"
                );
            }
        }
    }
}
