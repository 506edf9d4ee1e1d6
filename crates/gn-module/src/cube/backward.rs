//! Host side of the backward.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::Shape;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::forward::statistics;
use super::kernels::*;
use super::layout::{empty_like, standard_pair};
use super::{
    block_size, chunks_per_row, cubes, elementwise, f32_buffer, fitted_block, vector_size,
};

/// The backward kernels: `(dx, dgamma, dbeta)`.
pub(super) fn backward(
    grad: CubeTensor,
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    rstd: CubeTensor,
    num_groups: usize,
    activation: u32,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let (x, grad, view, channels_last) = standard_pair(x, grad);
    let (gamma, beta, rstd) = (
        into_contiguous(gamma),
        into_contiguous(beta),
        into_contiguous(rstd),
    );
    let client = x.client.clone();
    let [n, c, s] = view.shape;
    let block = block_size(&client);
    let vs = vector_size(&x, if channels_last { c / num_groups } else { s });
    let x_dtype = dtype_to_storage_type(x.dtype);
    let p_dtype = dtype_to_storage_type(gamma.dtype);
    let plane = n * c;

    // With an activation, its derivative needs the pre-activation output and so the exact
    // group mean before the sums: recompute the statistics (one more read of x). Without one,
    // the sums carry what the mean needs. (The epsilon does not matter: only the shift and
    // the mean are read.)
    let row_stats = if activation != 0 {
        let (_, _, row_stats) = statistics(
            &x,
            &view,
            channels_last,
            vs,
            &gamma,
            &beta,
            None,
            num_groups,
            1.0,
        );
        row_stats
    } else {
        f32_buffer(&x, 1)
    };

    let coefs = f32_buffer(&x, 5 * plane);
    let (count, dim) = elementwise(&client, plane);
    backward_coef_kernel::launch(
        &client,
        count,
        dim,
        view.bind(&x).into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        beta.into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        row_stats.into_tensor_arg(),
        coefs.clone().into_tensor_arg(),
        num_groups,
        activation,
        [x_dtype, p_dtype],
    );

    let x3 = view.bind(&x);
    let dy3 = view.bind(&grad);
    let chunks;
    let partials;
    if channels_last {
        // Enough units to fill a device, at least 16 positions each.
        let columns = n * c / vs;
        chunks = 65536usize.div_ceil(columns).min(s / 16).max(1);
        partials = f32_buffer(&x, plane * chunks * 3);
        let (count, dim) = elementwise(&client, columns * chunks);
        backward_partial_cl_kernel::launch(
            &client,
            count,
            dim,
            vs,
            dy3.clone().into_tensor_arg(),
            x3.clone().into_tensor_arg(),
            coefs.clone().into_tensor_arg(),
            partials.clone().into_tensor_arg(),
            n,
            c / vs,
            s,
            chunks,
            activation,
            x_dtype,
        );
    } else {
        // Short channels get small cubes (a cube's units share one channel).
        chunks = chunks_per_row(plane, s / vs, block as usize);
        let block = fitted_block((s / vs).div_ceil(chunks * 4), block);
        partials = f32_buffer(&x, plane * chunks * 3);
        backward_partial_cf_kernel::launch(
            &client,
            cubes(&client, plane * chunks, block),
            CubeDim::new_1d(block),
            vs,
            dy3.clone().into_tensor_arg(),
            x3.clone().into_tensor_arg(),
            coefs.clone().into_tensor_arg(),
            partials.clone().into_tensor_arg(),
            plane,
            s / vs,
            chunks,
            block as usize,
            activation,
            x_dtype,
        );
    }

    let sums = f32_buffer(&x, plane * 2);
    let group_block = fitted_block(c / num_groups, block);
    backward_group_kernel::launch(
        &client,
        cubes(&client, n * num_groups, group_block),
        CubeDim::new_1d(group_block),
        partials.into_tensor_arg(),
        gamma.clone().into_tensor_arg(),
        rstd.into_tensor_arg(),
        sums.clone().into_tensor_arg(),
        coefs.clone().into_tensor_arg(),
        c,
        num_groups,
        chunks,
        (c / num_groups * s) as f32,
        group_block as usize,
        p_dtype,
    );

    let param = || {
        empty_device_contiguous_dtype(
            client.clone(),
            x.device.clone(),
            Shape::new([c]),
            gamma.dtype,
        )
    };
    let (dgamma, dbeta) = (param(), param());
    let (count, dim) = elementwise(&client, c);
    backward_param_kernel::launch(
        &client,
        count,
        dim,
        sums.into_tensor_arg(),
        dgamma.clone().into_tensor_arg(),
        dbeta.clone().into_tensor_arg(),
        n,
        p_dtype,
    );

    let dx = empty_like(&x);
    let num_vecs = view.numel() / vs;
    let (count, dim) = elementwise(&client, num_vecs);
    let dx3 = view.bind(&dx);
    if channels_last {
        backward_dx_cl_kernel::launch(
            &client,
            count,
            dim,
            vs,
            dy3.into_tensor_arg(),
            x3.into_tensor_arg(),
            coefs.into_tensor_arg(),
            dx3.into_tensor_arg(),
            num_vecs,
            c / vs,
            s * c / vs,
            plane / vs,
            activation,
            x_dtype,
        );
    } else {
        backward_dx_cf_kernel::launch(
            &client,
            count,
            dim,
            vs,
            dy3.into_tensor_arg(),
            x3.into_tensor_arg(),
            coefs.into_tensor_arg(),
            dx3.into_tensor_arg(),
            num_vecs,
            s / vs,
            plane,
            activation,
            x_dtype,
        );
    }
    (dx, dgamma, dbeta)
}
