#![warn(missing_docs)]
//! Group Normalization (Wu & He, ECCV 2018) for burn 0.22: an exact, validated
//! [`GroupNorm`] module with fused CPU (Flex, NdArray) and CubeCL (wgpu, Vulkan, Metal, CUDA)
//! kernels, forward and backward.
//!
//! A drop-in replacement for `burn::nn::GroupNorm`: change the `use` line.
//!
//! ```rust
//! use burn::tensor::{Device, Distribution, Tensor};
//! use gn_module::{GroupNorm, GroupNormConfig};
//!
//! let device = Device::flex();
//! let x = Tensor::<4>::random([2, 256, 7, 7], Distribution::Default, &device);
//! let gn: GroupNorm = GroupNormConfig::new(32, 256).init(&device);
//! let y = gn.forward(x); // x: [N, 256, *], any rank >= 2
//! assert_eq!(y.dims(), [2, 256, 7, 7]);
//! ```
//!
//! Every public entry checks its arguments in O(rank) before any kernel runs: the `try_*` forms
//! ([`try_group_norm`], [`GroupNorm::try_forward`], [`GroupNormConfig::try_init`],
//! [`fused::forward_with_stats`]) return a [`GroupNormError`] naming what was wrong and what
//! was expected, the others panic with its message, and so do the
//! [backend ops](backend::GroupNormBackend) on every backend.
//!
//! Inputs with a large mean relative to their spread keep full precision (each group is shifted
//! by one of its own values before any sum), f16 and bf16 inputs accumulate in f32, and a
//! NaN or infinity in a group only affects that group's output.

mod activation;
pub mod alloc;
mod autodiff;
pub mod backend;
pub mod composite;
mod config;
#[cfg(any(feature = "flex", feature = "ndarray"))]
mod cpu;
#[cfg(feature = "cube")]
mod cube;
mod error;
mod functional;
pub mod fused;
mod module;
#[doc(hidden)]
pub mod probe;

pub use activation::Activation;
pub use config::GroupNormConfig;
pub use error::GroupNormError;
pub use functional::{
    group_norm, group_norm_with_activation, try_group_norm, try_group_norm_with_activation,
};
pub use module::GroupNorm;
