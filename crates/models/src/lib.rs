#![warn(missing_docs)]
//! GroupNorm ResNets for burn 0.22: the torchvision / timm ResNet v1.5 family (18, 34, 50,
//! 101, 152) with Group Normalization from [`gn_module`], BatchNorm or burn's own GroupNorm,
//! and PyTorch-compatible weights.
//!
//! ```rust,ignore
//! use models::resnet::{Norm, ResNetConfig};
//!
//! let model = ResNetConfig::resnet50(1000)
//!     .with_norm(Norm::Group { num_groups: 32 })
//!     .init(&device);
//! let model = model.load_pytorch_weights("resnet50_gn.safetensors")?;
//! let logits = model.forward(images); // [N, 3, H, W] -> [N, 1000]
//! ```

pub mod resnet;
