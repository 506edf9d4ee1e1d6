#![warn(missing_docs)]
//! GroupNorm ResNets for burn 0.22: the torchvision / timm ResNet v1.5 family (18, 34, 50,
//! 101, 152) with Group Normalization from [`gn_module`], BatchNorm or burn's own GroupNorm,
//! and PyTorch-compatible weights.
//!
//! ```rust,no_run
//! use burn::tensor::{Device, Distribution, Tensor};
//! use models::resnet::{Norm, ResNetConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::flex();
//! let model = ResNetConfig::resnet50(1000)
//!     .with_norm(Norm::Group { num_groups: 32 })
//!     .try_init(&device)?;
//! let model = model.load_pytorch_weights("resnet50_gn.safetensors")?;
//! let images = Tensor::<4>::random([2, 3, 224, 224], Distribution::Default, &device);
//! let logits = model.forward(images); // [N, 3, H, W] -> [N, 1000]
//! # Ok(())
//! # }
//! ```

pub mod resnet;
