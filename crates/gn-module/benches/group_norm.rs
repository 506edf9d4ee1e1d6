//! GroupNorm speed: this crate's GroupNorm against `burn::nn::GroupNorm`, forward and
//! forward + backward, on every compiled backend, for the shapes of the issue (G = 32), in f32
//! and f16. Run with `cargo bench --workspace --bench group_norm` from the
//! repository (flex and ndarray, the root's default features; add `--features wgpu` for more
//! backends; `cargo bench -p gn-module --bench group_norm` builds gn-module alone, with its own
//! features); `tools/bench_torch_group_norm.py` times PyTorch on the same shapes.
//!
//! Criterion also reports each op's bandwidth: the least traffic it needs (forward: x read, y
//! written; forward + backward: x twice, y, dy and dx; the seed: one write), over its time. It
//! counts in GiB/s. Each sample queues its calls back to back and syncs once at the end
//! (`common::time_queued`): on a GPU that is the throughput of a stream of calls, the measure
//! of the bandwidth target, rather than each call's round trip; on the CPU it changes nothing.
//!
//! Forward + backward seeds the backward with ones (`y.backward()`; burn allocates the seed,
//! PyTorch's `y.backward(dy)` reuses a preallocated `dy`). `backward_seed_ones` times that
//! allocation alone, so that the kernels' share can be read off; the PyTorch script also
//! reports `y.backward(torch.ones_like(y))`, the same work as burn's `y.backward()`.
//!
//! `GN_BENCH_SHAPES=32x256x8x8,32x512x4x4` (a comma-separated list of NxCxHxW) times other
//! shapes instead, as `--shapes` does in the PyTorch script. `GN_BENCH_LAYOUT=channels_last`
//! times channels-last inputs (an NHWC tensor permuted to NCHW, what a channels-last model
//! passes; the names end in `_nhwc`), as `--channels-last` does in the PyTorch script.
//! `GN_BENCH_DTYPES=f32,f16,bf16` times those dtypes (default `f32,f16`), as `--dtypes` does.
//! `GN_BENCH_ACTIVATION=silu` (or `relu`) times GroupNorm followed by the activation: fused in
//! ours, burn's activation op after burn's GroupNorm (the names gain `_silu`), as
//! `--activation` does in the PyTorch script.
//!
//! As in the PyTorch script, where `x.grad` lives until the next iteration sets it to `None`,
//! each iteration's gradients are dropped at the start of the next one: allocation patterns
//! decide whether the allocator returns memory to the system between iterations, which costs
//! page faults on both sides.

mod common;

use burn::module::Param;
use burn::tensor::{DType, Device, Tensor};
use common::{devices, input, time_queued};
use criterion::{Criterion, Throughput, criterion_group};
use gn_module::Activation;

const SHAPES: [[usize; 4]; 4] = [
    [8, 256, 56, 56],
    [32, 64, 32, 32],
    [2, 2048, 7, 7],
    [1, 512, 64, 64],
];
const GROUPS: usize = 32;

/// The shapes of `GN_BENCH_SHAPES` when it is set, else [`SHAPES`].
fn shapes() -> Vec<[usize; 4]> {
    let Ok(list) = std::env::var("GN_BENCH_SHAPES") else {
        return SHAPES.to_vec();
    };
    list.split(',')
        .map(|item| {
            let dims: Option<Vec<usize>> = item.trim().split('x').map(|d| d.parse().ok()).collect();
            dims.and_then(|d| d.try_into().ok()).unwrap_or_else(|| {
                panic!("GN_BENCH_SHAPES: `{item}` is not NxCxHxW (e.g. 32x256x8x8)")
            })
        })
        .collect()
}

/// The dtypes of `GN_BENCH_DTYPES` when it is set, else f32 and f16.
fn dtypes() -> Vec<DType> {
    let Ok(list) = std::env::var("GN_BENCH_DTYPES") else {
        return vec![DType::F32, DType::F16];
    };
    list.split(',')
        .map(|item| match item.trim() {
            "f32" | "float32" => DType::F32,
            "f16" | "float16" => DType::F16,
            "bf16" | "bfloat16" => DType::BF16,
            other => panic!("GN_BENCH_DTYPES: `{other}` is not f32, f16 or bf16"),
        })
        .collect()
}

/// The activation of `GN_BENCH_ACTIVATION` (none when unset).
fn activation() -> Activation {
    match std::env::var("GN_BENCH_ACTIVATION").as_deref() {
        Err(_) | Ok("none") => Activation::None,
        Ok("relu") => Activation::Relu,
        Ok("silu") => Activation::Silu,
        Ok(other) => panic!("GN_BENCH_ACTIVATION: `{other}` is not none, relu or silu"),
    }
}

/// burn's GroupNorm followed by `activation` as a separate op.
fn burn_forward(layer: &burn::nn::GroupNorm, x: Tensor<4>, activation: Activation) -> Tensor<4> {
    let y = layer.forward(x);
    match activation {
        Activation::None => y,
        Activation::Relu => burn::tensor::activation::relu(y),
        Activation::Silu => burn::tensor::activation::silu(y),
    }
}

/// Whether `GN_BENCH_LAYOUT` asks for channels-last inputs.
fn channels_last() -> bool {
    match std::env::var("GN_BENCH_LAYOUT").as_deref() {
        Err(_) | Ok("contiguous") => false,
        Ok("channels_last") => true,
        Ok(other) => panic!("GN_BENCH_LAYOUT: `{other}` is not `contiguous` or `channels_last`"),
    }
}

/// Both layers with gamma and beta in `dtype`; ours with `activation` fused.
fn layers(
    c: usize,
    device: &Device,
    dtype: DType,
    activation: Activation,
) -> (gn_module::GroupNorm, burn::nn::GroupNorm) {
    let gamma = || Some(Param::from_tensor(Tensor::<1>::ones([c], (device, dtype))));
    let beta = || Some(Param::from_tensor(Tensor::<1>::zeros([c], (device, dtype))));
    let mut ours = gn_module::GroupNormConfig::new(GROUPS, c)
        .with_activation(activation)
        .init(device);
    (ours.gamma, ours.beta) = (gamma(), beta());
    let mut burns = burn::nn::GroupNormConfig::new(GROUPS, c).init(device);
    (burns.gamma, burns.beta) = (gamma(), beta());
    (ours, burns)
}

fn bench(c: &mut Criterion) {
    let (channels_last, activation) = (channels_last(), activation());
    let suffix = match activation {
        Activation::None => "",
        Activation::Relu => "_relu",
        Activation::Silu => "_silu",
    };
    for (backend, device) in devices() {
        for dtype in dtypes() {
            if !device.supports_dtype(dtype) || (backend == "ndarray" && dtype != DType::F32) {
                continue;
            }
            for shape in shapes() {
                let name = format!(
                    "group_norm/{backend}/{dtype:?}/{}{}{suffix}",
                    shape.map(|d| d.to_string()).join("x"),
                    if channels_last { "_nhwc" } else { "" }
                );
                let mut group = c.benchmark_group(name);
                group.sample_size(10);

                let x = input(shape, channels_last, &device, dtype);
                let (ours, burns) = layers(shape[1], &device, dtype, activation);
                // Criterion reports bandwidth from the least traffic each op needs: the forward
                // reads x and writes y; the backward reads x and dy and writes dx.
                let tensor_bytes = (shape.iter().product::<usize>() * dtype.size()) as u64;
                group.throughput(Throughput::Bytes(2 * tensor_bytes));
                group.bench_function("gn_module/forward", |b| {
                    b.iter_custom(|iters| time_queued(&device, iters, || ours.forward(x.clone())))
                });
                group.bench_function("burn_nn/forward", |b| {
                    b.iter_custom(|iters| {
                        time_queued(&device, iters, || {
                            burn_forward(&burns, x.clone(), activation)
                        })
                    })
                });

                let ad = device.clone().autodiff();
                let x = x.clone().autodiff().require_grad();
                let (ours, burns) = layers(shape[1], &ad, dtype, activation);
                let mut previous = None;
                group.throughput(Throughput::Bytes(5 * tensor_bytes));
                group.bench_function("gn_module/forward_backward", |b| {
                    b.iter_custom(|iters| {
                        time_queued(&ad, iters, || {
                            drop(previous.take());
                            previous = Some(ours.forward(x.clone()).backward());
                        })
                    })
                });
                group.bench_function("burn_nn/forward_backward", |b| {
                    b.iter_custom(|iters| {
                        time_queued(&ad, iters, || {
                            drop(previous.take());
                            let y = burn_forward(&burns, x.clone(), activation);
                            previous = Some(y.backward());
                        })
                    })
                });
                drop(previous);
                // What `y.backward()` allocates before any backward kernel runs: a tensor of
                // ones of y's shape (PyTorch's `y.backward(dy)` reuses a given dy instead).
                group.throughput(Throughput::Bytes(tensor_bytes));
                group.bench_function("backward_seed_ones", |b| {
                    b.iter_custom(|iters| {
                        time_queued(&device, iters, || {
                            Tensor::<4>::ones(shape, (&device, dtype))
                        })
                    })
                });
                group.finish();
            }
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    // The same allocator settings as tools/bench_torch_group_norm.py (see gn_module::alloc).
    gn_module::alloc::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
