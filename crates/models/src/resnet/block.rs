//! The residual blocks: [`Block`] (basic or bottleneck) and its [`Downsample`] shortcut.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use super::{BlockKind, NormLayer, ResNetConfig};

/// A convolution without bias (a norm follows), Kaiming-normal initialized for the ReLU that
/// follows (fan-out mode, as torchvision and timm).
pub(crate) fn conv(channels: [usize; 2], kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: 2f64.sqrt(),
            fan_out_only: true,
        })
        .init(device)
}

/// The projection shortcut: 1x1 convolution (with the block's stride) and a norm. Its
/// parameters are `downsample.0.*` and `downsample.1.*` in PyTorch.
#[derive(Module, Debug)]
pub struct Downsample {
    /// 1x1 convolution.
    pub conv: Conv2d,
    /// Its norm.
    pub norm: NormLayer,
}

/// A residual block. Basic: `conv1` 3x3 (stride), `conv2` 3x3. Bottleneck: `conv1` 1x1,
/// `conv2` 3x3 (stride, as in v1.5), `conv3` 1x1 to 4x the width. Each convolution is followed
/// by its norm; the ReLUs follow the inner norms and the sum with the shortcut.
#[derive(Module, Debug)]
pub struct Block {
    /// First convolution.
    pub conv1: Conv2d,
    /// Its norm (ReLU follows).
    pub bn1: NormLayer,
    /// Second convolution.
    pub conv2: Conv2d,
    /// Its norm (ReLU follows in bottlenecks).
    pub bn2: NormLayer,
    /// Third convolution (bottlenecks only).
    pub conv3: Option<Conv2d>,
    /// Its norm (bottlenecks only).
    pub bn3: Option<NormLayer>,
    /// Projection shortcut, when the block changes the shape.
    pub downsample: Option<Downsample>,
}

impl Block {
    /// A block from `in_channels` with stage width `width` and `stride`.
    pub(crate) fn new(
        config: &ResNetConfig,
        in_channels: usize,
        width: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let out_channels = width * config.block.expansion();
        let norm = |channels, relu, last| {
            NormLayer::new(
                &config.norm,
                channels,
                config.norm_epsilon,
                relu,
                last && config.zero_init_last,
                device,
            )
        };
        let downsample = (stride != 1 || in_channels != out_channels).then(|| Downsample {
            conv: conv([in_channels, out_channels], 1, stride, device),
            norm: norm(out_channels, false, false),
        });
        match config.block {
            BlockKind::Basic => Self {
                conv1: conv([in_channels, width], 3, stride, device),
                bn1: norm(width, true, false),
                conv2: conv([width, width], 3, 1, device),
                bn2: norm(width, false, true),
                conv3: None,
                bn3: None,
                downsample,
            },
            BlockKind::Bottleneck => Self {
                conv1: conv([in_channels, width], 1, 1, device),
                bn1: norm(width, true, false),
                conv2: conv([width, width], 3, stride, device),
                bn2: norm(width, true, false),
                conv3: Some(conv([width, out_channels], 1, 1, device)),
                bn3: Some(norm(out_channels, false, true)),
                downsample,
            },
        }
    }

    /// `relu(branch(x) + shortcut(x))`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.downsample {
            Some(ds) => ds.norm.forward(ds.conv.forward(x.clone())),
            None => x.clone(),
        };
        let out = self.bn1.forward_relu(self.conv1.forward(x));
        let out = match (&self.conv3, &self.bn3) {
            (Some(conv3), Some(bn3)) => {
                let out = self.bn2.forward_relu(self.conv2.forward(out));
                bn3.forward(conv3.forward(out))
            }
            _ => self.bn2.forward(self.conv2.forward(out)),
        };
        relu(out + shortcut)
    }
}
