#![warn(missing_docs)]
//! gn-burn: Group Normalization for burn 0.22 and the GroupNorm ResNets that use it. This
//! crate is the facade of the workspace's three crates:
//!
//! - [`gn_module`]: the `GroupNorm` module (a drop-in for `burn::nn::GroupNorm`) with fused
//!   CPU and CubeCL kernels;
//! - [`models`]: the ResNet family with GroupNorm, BatchNorm or burn's GroupNorm, and
//!   PyTorch-compatible weights;
//! - [`training`]: the engine of the `train`, `infer` and `batch_size_study` examples, with its
//!   [`data`], [`study`] and [`plot`] modules re-exported here at their old paths;
//! - [`alloc`]: gn-module's allocator settings for programs that move large tensors, which the
//!   examples and benchmarks call.

pub use gn_module;
pub use models;
pub use training;
pub use training::{data, plot, study};

pub use gn_module::alloc;

// The README's Rust examples are compiled (and run, unless marked `no_run`) as doc tests, so
// what users copy from it keeps working.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
