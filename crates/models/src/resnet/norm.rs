//! [`NormLayer`]: the normalization after a convolution, whichever [`Norm`] was chosen.

use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig, Identity};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use gn_module::{Activation, GroupNorm, GroupNormConfig};

use super::Norm;

/// A normalization layer over `[N, C, H, W]`.
///
/// The variants hold layers whose parameter names (`gamma`, `beta`, and for BatchNorm
/// `running_mean`, `running_var`) map to PyTorch's `weight`, `bias`, `running_mean`,
/// `running_var` through burn-store's PyTorch adapter.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum NormLayer {
    /// `gn_module`'s GroupNorm, possibly with the following ReLU fused in.
    Group(GroupNorm),
    /// burn's BatchNorm.
    Batch(BatchNorm),
    /// burn's own GroupNorm.
    BurnGroup(burn::nn::GroupNorm),
    /// No normalization ([`Norm::Identity`]).
    Identity(Identity),
}

impl NormLayer {
    /// The layer for `channels` channels. `relu` says a ReLU follows it: `gn_module`'s GroupNorm
    /// then applies it in the same pass. `zero_gamma` starts the scale at zero.
    ///
    /// # Panics
    ///
    /// Panics if `norm` cannot split `channels` ([`Norm::groups_for`] is `None`), or if
    /// `epsilon` is not positive and finite for `gn_module`'s GroupNorm or BatchNorm;
    /// [`ResNetConfig::try_init`](super::ResNetConfig::try_init) checks both for every layer
    /// before building any.
    pub fn new(
        norm: &Norm,
        channels: usize,
        epsilon: f64,
        relu: bool,
        zero_gamma: bool,
        device: &Device,
    ) -> Self {
        let groups = || {
            norm.groups_for(channels).unwrap_or_else(|| {
                panic!("NormLayer::new: {norm:?} cannot split {channels} channels into groups")
            })
        };
        let mut layer = match norm {
            Norm::Group { .. } | Norm::GroupSize(_) => {
                let activation = if relu {
                    Activation::Relu
                } else {
                    Activation::None
                };
                NormLayer::Group(
                    GroupNormConfig::new(groups(), channels)
                        .with_epsilon(epsilon)
                        .with_activation(activation)
                        .init(device),
                )
            }
            Norm::Batch => NormLayer::Batch(
                BatchNormConfig::new(channels)
                    .with_epsilon(epsilon)
                    .init(device),
            ),
            Norm::BurnGroup => NormLayer::BurnGroup(
                burn::nn::GroupNormConfig::new(groups(), channels)
                    .with_epsilon(epsilon)
                    .init(device),
            ),
            Norm::Identity => NormLayer::Identity(Identity::new()),
        };
        if zero_gamma {
            layer.zero_gamma(channels, device);
        }
        layer
    }

    fn zero_gamma(&mut self, channels: usize, device: &Device) {
        let zeros = || Param::from_tensor(Tensor::zeros([channels], device));
        match self {
            NormLayer::Group(gn) => gn.gamma = Some(zeros()),
            NormLayer::Batch(bn) => bn.gamma = zeros(),
            NormLayer::BurnGroup(gn) => gn.gamma = Some(zeros()),
            NormLayer::Identity(_) => {}
        }
    }

    /// Normalizes `x` (no activation).
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            NormLayer::Group(gn) => gn.forward(x),
            NormLayer::Batch(bn) => bn.forward(x),
            NormLayer::BurnGroup(gn) => gn.forward(x),
            NormLayer::Identity(id) => id.forward(x),
        }
    }

    /// Normalizes `x` and applies a ReLU (fused for `gn_module`'s GroupNorm built with `relu`).
    pub fn forward_relu(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            NormLayer::Group(gn) if gn.activation == Activation::Relu => gn.forward(x),
            _ => relu(self.forward(x)),
        }
    }
}
