//! [`ResNet`]: the network.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};

use super::block::conv;
use super::{Block, NormLayer, ResNetConfig, Stem};

/// A ResNet (v1.5, as torchvision and timm) for image classification.
///
/// Module paths match PyTorch state-dict keys: `conv1`, `bn1`, `layer1.0.conv1`,
/// `layer1.0.bn1`, ..., `layer1.0.downsample.{conv,norm}` (PyTorch's `downsample.0/.1`), `fc`.
///
/// # Initialization
///
/// As the GroupNorm paper's code (Detectron / pycls) and torchvision's `resnet*` do it:
/// - convolutions: He et al. 2015's normal for ReLU networks in fan-out mode, `N(0, 2 / fan_out)`
///   with `fan_out = out_channels * kh * kw` (torchvision's
///   `kaiming_normal_(mode="fan_out", nonlinearity="relu")`); no bias (a norm follows);
/// - norms: scale (gamma) 1 and shift (beta) 0, BatchNorm's running mean 0 and variance 1;
///   with [`ResNetConfig::zero_init_last`] (the default) the last norm of each residual branch
///   (`bn2` of a basic block, `bn3` of a bottleneck) starts with gamma 0, so that each block
///   starts as the identity (Goyal et al. 2017, as the paper trains);
/// - the classifier `fc`: PyTorch's `nn.Linear` default, which torchvision leaves in place:
///   weight and bias uniform in `+-1/sqrt(in_features)` (burn's `LinearConfig` default draws
///   the same distribution).
///
/// `init_tests.rs` checks the statistics of every layer of a freshly built model against these
/// distributions.
#[derive(Module, Debug)]
pub struct ResNet {
    /// Stem convolution (7x7 stride 2, or 3x3 stride 1 for the CIFAR stem).
    pub conv1: Conv2d,
    /// Stem norm (ReLU follows).
    pub bn1: NormLayer,
    /// Stem max pool (ImageNet stem only).
    pub maxpool: Option<MaxPool2d>,
    /// Stage 1 (stride 1).
    pub layer1: Vec<Block>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<Block>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<Block>,
    /// Stage 4 (stride 2).
    pub layer4: Vec<Block>,
    /// Global average pool.
    pub avgpool: AdaptiveAvgPool2d,
    /// Classifier.
    pub fc: Linear,
}

impl ResNet {
    pub(crate) fn new(config: &ResNetConfig, device: &Device) -> Self {
        let width = config.base_width;
        let (conv1, maxpool) = match config.stem {
            Stem::ImageNet => (
                conv([3, width], 7, 2, device),
                Some(
                    MaxPool2dConfig::new([3, 3])
                        .with_strides([2, 2])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(),
                ),
            ),
            Stem::Cifar => (conv([3, width], 3, 1, device), None),
        };
        let bn1 = NormLayer::new(
            &config.norm,
            width,
            config.norm_epsilon,
            true,
            false,
            device,
        );
        let mut in_channels = width;
        let mut stage = |index: usize, stride: usize| {
            let stage_width = width << index;
            (0..config.layers[index])
                .map(|i| {
                    let block = Block::new(
                        config,
                        in_channels,
                        stage_width,
                        if i == 0 { stride } else { 1 },
                        device,
                    );
                    in_channels = stage_width * config.block.expansion();
                    block
                })
                .collect::<Vec<_>>()
        };
        let (layer1, layer2, layer3, layer4) = (stage(0, 1), stage(1, 2), stage(2, 2), stage(3, 2));
        Self {
            conv1,
            bn1,
            maxpool,
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc: LinearConfig::new(config.feature_channels(), config.num_classes).init(device),
        }
    }

    /// The pooled features before the classifier.
    ///
    /// # Shapes
    ///
    /// - images: `[N, 3, H, W]`
    /// - output: `[N, feature_channels]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.bn1.forward_relu(self.conv1.forward(images));
        if let Some(pool) = &self.maxpool {
            x = pool.forward(x);
        }
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        self.avgpool.forward(x).flatten(1, 3)
    }

    /// Class logits.
    ///
    /// # Shapes
    ///
    /// - images: `[N, 3, H, W]` (H, W >= 32 with the ImageNet stem)
    /// - output: `[N, num_classes]`
    ///
    /// # Panics
    ///
    /// Panics if the images do not have 3 channels.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let [_, channels, _, _] = images.dims();
        assert_eq!(
            channels,
            3,
            "ResNet::forward expects images of shape [N, 3, H, W], got {channels} channels ({:?})",
            images.dims()
        );
        self.fc.forward(self.features(images))
    }

    /// The model with a new classifier of `num_classes` outputs (fine-tuning on a new dataset).
    pub fn with_num_classes(mut self, num_classes: usize) -> Self {
        let [in_features, _] = self.fc.weight.dims();
        let device = self.fc.weight.device();
        self.fc = LinearConfig::new(in_features, num_classes).init(&device);
        self
    }
}
