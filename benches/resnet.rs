//! ResNet-50 throughput (images/s) with each normalization, on every compiled backend:
//! forward (inference) and one training step (forward, cross-entropy, backward, SGD with
//! momentum), at batch 8 of 224x224 and batch 32 of 32x32, 1000 classes, ImageNet stem, as timm
//! `resnet50_gn` in `tools/bench_torch_resnet.py`.
//!
//! The norms compared in one run: this crate's GroupNorm (`Norm::Group`, 32 groups, ReLU fused),
//! burn's built-in GroupNorm (`Norm::BurnGroup`), BatchNorm (`Norm::Batch`) and no norm at all
//! (`Norm::Identity`, the baseline that says what normalization costs).
//!
//! Run with `cargo bench --bench resnet`; filter with criterion's argument, e.g.
//! `cargo bench --bench resnet -- 8x224/group`.

// The devices and the sync are the GroupNorm bench's helpers, shared rather than copied.
#[path = "../crates/gn-module/benches/common/mod.rs"]
mod common;

use std::time::Duration;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use common::{devices, sync};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group};
use models::resnet::{Norm, ResNet, ResNetConfig, Stem};

const CLASSES: usize = 1000;
/// (batch, image size).
const CONFIGS: [(usize, usize); 2] = [(8, 224), (32, 32)];
const NORMS: [(&str, Norm); 4] = [
    ("group", Norm::Group { num_groups: 32 }),
    ("burn_group", Norm::BurnGroup),
    ("batch", Norm::Batch),
    ("none", Norm::Identity),
];

fn model(norm: Norm, device: &Device) -> ResNet {
    ResNetConfig::resnet50(CLASSES)
        .with_norm(norm)
        .with_stem(Stem::ImageNet)
        .init(device)
}

fn bench(c: &mut Criterion) {
    for (backend, device) in devices() {
        for (batch, size) in CONFIGS {
            let mut group = c.benchmark_group(format!("resnet50/{backend}/{batch}x{size}"));
            // A step takes up to seconds on a CPU: ten single-step samples, not criterion's
            // growing iteration counts.
            group
                .sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(1))
                .throughput(Throughput::Elements(batch as u64));

            let x = Tensor::<4>::random(
                [batch, 3, size, size],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let labels: Vec<i64> = (0..batch).map(|i| (i * 389 % CLASSES) as i64).collect();
            let labels = TensorData::new(labels, [batch]);
            for (name, norm) in NORMS {
                // Inference as users run it: the model on the plain device, BatchNorm in eval mode
                // (running statistics).
                let net = model(norm, &device);
                group.bench_function(format!("{name}/forward"), |b| {
                    b.iter(|| {
                        let logits = net.forward(x.clone());
                        sync(&device);
                        logits
                    })
                });
                drop(net);

                let ad = device.clone().autodiff();
                let mut net = Some(model(norm, &ad));
                let mut optimizer = SgdConfig::new()
                    .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
                    .init();
                let loss = CrossEntropyLossConfig::new().init(&ad);
                let x = x.clone().autodiff();
                let labels = Tensor::<1, Int>::from_data(labels.clone(), &ad);
                group.bench_function(format!("{name}/train_step"), |b| {
                    b.iter(|| {
                        let current = net.take().expect("the model is put back every step");
                        let logits = current.forward(x.clone());
                        let grads = loss.forward(logits, labels.clone()).backward();
                        let grads = GradientsParams::from_grads(grads, &current);
                        net = Some(optimizer.step(0.01, current, grads));
                        sync(&ad);
                    })
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    // The same allocator settings as tools/bench_torch_resnet.py (see gn_burn::alloc).
    gn_burn::alloc::keep_freed_memory();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
