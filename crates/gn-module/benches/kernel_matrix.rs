//! The CPU kernels' speed over the whole matrix of issue 17, as one TSV of medians: shapes
//! (the four standard ones and the short-row ones of docs/performance.md), f32/f16/bf16 on flex
//! and f32 on ndarray, none/ReLU/SiLU, NCHW and channels-last, forward and forward+backward.
//! Built from the public API only, so that the same file times any revision of the crate.
//!
//! ```text
//! cargo build --release --workspace --bench kernel_matrix   # prints the binary's path with -v
//! GLIBC_TUNABLES=glibc.malloc.trim_threshold=1073741824:glibc.malloc.mmap_threshold=33554432 \
//!     target/release/deps/kernel_matrix-<hash> > round.tsv
//! ```
//! (the tunables are the allocator settings of `gn_burn::alloc::keep_freed_memory`).
//! `GN_MATRIX_BUDGET_MS` (default 300) bounds each row's timing; `GN_MATRIX_FILTER` keeps the
//! rows whose name contains it.

use std::hint::black_box;
use std::time::{Duration, Instant};

#[allow(dead_code)] // this program uses only the inputs of the shared bench helpers
mod common;

use burn::module::Param;
use burn::tensor::{DType, Device, Tensor};
use common::input;
use gn_module::{Activation, GroupNormConfig};

const SHAPES: [[usize; 4]; 8] = [
    [8, 256, 56, 56],
    [32, 64, 32, 32],
    [2, 2048, 7, 7],
    [1, 512, 64, 64],
    [32, 128, 16, 16],
    [32, 256, 8, 8],
    [32, 512, 4, 4],
    [8, 2048, 7, 7],
];

/// The median and the least time of `f`, µs: 2 warm-up calls, then at least 5 and up to the
/// budget.
fn median_us(device: &Device, budget: Duration, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..2 {
        f();
    }
    device.sync().expect("sync");
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || (start.elapsed() < budget && times.len() < 200) {
        let t = Instant::now();
        f();
        device.sync().expect("sync");
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

/// G = 32 over `c` channels, gamma and beta in `dtype`.
fn layer(c: usize, act: Activation, device: &Device, dtype: DType) -> gn_module::GroupNorm {
    let mut gn = GroupNormConfig::new(32, c)
        .with_activation(act)
        .init(device);
    gn.gamma = Some(Param::from_tensor(Tensor::<1>::ones([c], (device, dtype))));
    gn.beta = Some(Param::from_tensor(Tensor::<1>::zeros([c], (device, dtype))));
    gn
}

fn main() {
    let budget = Duration::from_millis(
        std::env::var("GN_MATRIX_BUDGET_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let filter = std::env::var("GN_MATRIX_FILTER").unwrap_or_default();
    #[allow(deprecated)]
    let backends = [("flex", Device::flex()), ("ndarray", Device::ndarray())];
    println!("backend\tdtype\tshape\tlayout\tact\tpass\tmedian_us\tmin_us");
    for (backend, device) in backends {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            if backend == "ndarray" && dtype != DType::F32 {
                continue;
            }
            for shape in SHAPES {
                for channels_last in [false, true] {
                    for act in [Activation::None, Activation::Relu, Activation::Silu] {
                        let name = format!(
                            "{backend}\t{dtype:?}\t{}\t{}\t{act:?}",
                            shape.map(|d| d.to_string()).join("x"),
                            if channels_last { "nhwc" } else { "nchw" },
                        );
                        if !name.contains(&filter) {
                            continue;
                        }
                        let x = input(shape, channels_last, &device, dtype);
                        let gn = layer(shape[1], act, &device, dtype);
                        let (fwd, least) = median_us(&device, budget, || {
                            black_box(gn.forward(x.clone()));
                        });
                        println!("{name}\tforward\t{fwd:.1}\t{least:.1}");
                        let ad = device.clone().autodiff();
                        let xa = x.clone().autodiff().require_grad();
                        let gn = layer(shape[1], act, &ad, dtype);
                        let mut previous = None;
                        let (both, least) = median_us(&ad, budget, || {
                            drop(previous.take());
                            previous = Some(gn.forward(xa.clone()).backward());
                        });
                        println!("{name}\tforward_backward\t{both:.1}\t{least:.1}");
                    }
                }
            }
        }
    }
}
