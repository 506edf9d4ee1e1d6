//! The ResNet family (He et al. 2016, v1.5 as in torchvision and timm) with a choice of
//! normalization layer.

mod block;
mod config;
#[cfg(test)]
mod init_tests;
mod model;
mod norm;
mod weights;

pub use block::{Block, Downsample};
pub use config::{BlockKind, Norm, ResNetConfig, ResNetConfigError, StageGroups, Stem};
pub use model::ResNet;
pub use norm::NormLayer;
pub use weights::WeightsError;
