//! The forward in one launch for groups that fit in a cube's registers (a few vectors per
//! unit): one cube per group reads it once, reduces, and writes `y` from the registers.
//! Small and medium feature maps (CIFAR-sized, late ResNet stages at batch 1) are launch-bound
//! on a GPU, and this saves two launches and a read of `x`.

use cubecl::prelude::*;

use super::{
    activate, cube_welford, group_base, group_vector, lane_welford, rstd_of, welford_push,
};

/// Cube `CUBE_POS` normalizes group `CUBE_POS` (of `batch * num_groups`); unit `u` holds the
/// group's vectors `u, u + CUBE_DIM, ...` (`per_unit` of them at most). Writes `y`, `mean`
/// and `rstd`. Layouts and shift as in [`super::stats_partial_kernel`].
#[allow(clippy::too_many_arguments)]
#[cube(launch)]
pub fn single_pass_kernel<F: Float, P: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    gamma: &Tensor<P>,
    beta: &Tensor<P>,
    y: &mut Tensor<Vector<F, N>>,
    mean: &mut Tensor<f32>,
    rstd: &mut Tensor<f32>,
    batch: usize,
    channels: usize,
    spatial: usize,
    num_groups: usize,
    epsilon: f32,
    #[comptime] block: usize,
    #[comptime] per_unit: usize,
    #[comptime] channels_last: bool,
    #[comptime] act: u32,
    #[define(F, P)] _dtypes: [ElemType; 2],
) {
    let lanes = x.vector_size();
    let row = CUBE_POS;
    if row >= batch * num_groups {
        terminate!();
    }
    let g = row % num_groups;
    let cpg = channels / num_groups;
    let group_vecs = cpg * spatial / lanes;
    let spatial_vecs = spatial / lanes;
    let per_pos = cpg / lanes;
    let pos_stride = channels / lanes;
    let base = group_base(
        row,
        group_vecs,
        spatial,
        num_groups,
        per_pos,
        pos_stride,
        channels_last,
    );
    let shift = f32::cast_from(x[base].extract(0usize));
    let shift_v = Vector::<f32, N>::new(shift);

    // Read once: shifted values into registers, Welford per lane.
    let mut vals = Array::<Vector<f32, N>>::new(per_unit);
    let mut count = 0.0f32;
    let mut mu = Vector::<f32, N>::new(0.0f32);
    let mut m2 = Vector::<f32, N>::new(0.0f32);
    #[unroll]
    for k in 0..per_unit {
        let j = UNIT_POS as usize + k * CUBE_DIM as usize;
        let mut d = Vector::<f32, N>::new(0.0f32);
        if j < group_vecs {
            let i = group_vector(base, j, per_pos, pos_stride, channels_last);
            d = Vector::<f32, N>::cast_from(x[i]) - shift_v;
            count += 1.0f32;
            (mu, m2) = welford_push(d, count, mu, m2);
        }
        vals[k] = d;
    }
    let (un, umean, um2) = lane_welford(count, mu, m2);
    let (tn, mean_d, tm2) = cube_welford(un, umean, um2, block);
    let r = rstd_of(tm2, tn, epsilon);
    if UNIT_POS == 0 {
        mean[row] = shift + mean_d;
        rstd[row] = r;
    }

    // Write from the registers: y = act(d * a + b), a = rstd * gamma_c, b = beta_c - mean_d * a.
    #[unroll]
    for k in 0..per_unit {
        let j = UNIT_POS as usize + k * CUBE_DIM as usize;
        if j < group_vecs {
            let mut a = Vector::<f32, N>::new(0.0f32);
            let mut b = Vector::<f32, N>::new(0.0f32);
            let i = group_vector(base, j, per_pos, pos_stride, channels_last);
            if channels_last {
                // The lanes are consecutive channels.
                let c0 = g * cpg + (j % per_pos) * lanes;
                #[unroll]
                for l in 0..lanes {
                    let al = r * f32::cast_from(gamma[c0 + l]);
                    a.insert(l, al);
                    b.insert(l, f32::cast_from(beta[c0 + l]) - mean_d * al);
                }
            } else {
                let c = g * cpg + j / spatial_vecs;
                let al = r * f32::cast_from(gamma[c]);
                a = Vector::new(al);
                b = Vector::new(f32::cast_from(beta[c]) - mean_d * al);
            }
            y[i] = Vector::cast_from(activate(vals[k] * a + b, act));
        }
    }
}
