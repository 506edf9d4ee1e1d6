//! The convolutions that dominate a CPU training step (docs/performance.md, "Where a training
//! step's time goes"): one 3x3 convolution (stride 1, padding 1, no bias) of the bar-sized job
//! (ResNet-18 at width 32, 32x32 images, batch 64), forward and forward + backward (gradients of
//! the input and of the weight, as in training), on every compiled backend. Nothing of this
//! crate runs here: it is burn's own `conv2d`, the minimal reproduction of the gap to PyTorch
//! (`tools/bench_torch_conv.py` times the same convolutions).
//!
//! `cargo bench --bench conv`; filter with criterion's argument, e.g. `-- flex/64x32x32x32`.

#[path = "../crates/gn-module/benches/common/mod.rs"]
mod common;

use std::time::Duration;

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use common::{devices, sync};
use criterion::{Criterion, SamplingMode, criterion_group};

/// (batch, channels, side): the first and third stages of the bar-sized job.
const SHAPES: [(usize, usize, usize); 2] = [(64, 32, 32), (64, 128, 8)];

fn bench(c: &mut Criterion) {
    for (backend, device) in devices() {
        let mut group = c.benchmark_group(format!("conv3x3/{backend}"));
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for (n, ch, side) in SHAPES {
            let name = format!("{n}x{ch}x{side}x{side}");
            let normal = Distribution::Normal(0.0, 1.0);
            let x = Tensor::<4>::random([n, ch, side, side], normal, &device);
            let w = Tensor::<4>::random([ch, ch, 3, 3], normal, &device);
            let options = || ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
            group.bench_function(format!("{name}/forward"), |b| {
                b.iter(|| {
                    let y = conv2d(x.clone(), w.clone(), None, options());
                    sync(&device);
                    y
                })
            });
            let ad = device.clone().autodiff();
            let (x, w) = (x.clone().autodiff(), w.clone().autodiff());
            let (x, w) = (x.require_grad(), w.require_grad());
            group.bench_function(format!("{name}/forward_backward"), |b| {
                b.iter(|| {
                    let grads = conv2d(x.clone(), w.clone(), None, options())
                        .sum()
                        .backward();
                    sync(&ad);
                    grads
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);

fn main() {
    gn_burn::alloc::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
