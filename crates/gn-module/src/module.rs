//! [`GroupNorm`]: the layer.

use burn::module::{Content, DisplaySettings, Module, ModuleDisplay, Param};
use burn::tensor::Tensor;

use crate::{Activation, GroupNormError, functional};

/// Group Normalization (Wu & He, ECCV 2018) over a batch of inputs of shape `[N, C, *]`.
///
/// The `C` channels are split into `num_groups` groups; each sample's group is normalized by its
/// own mean and (population) variance, then scaled and shifted per channel:
///
/// `y = act(gamma_c * (x - mean_{n,g}) / sqrt(var_{n,g} + epsilon) + beta_c)`
///
/// The same math as PyTorch `nn.GroupNorm` and ONNX `GroupNormalization` (opset 21). A drop-in
/// replacement for `burn::nn::GroupNorm` (same config, fields and `forward`), backed by fused
/// kernels on Flex, NdArray and the CubeCL backends and by a composite of tensor ops elsewhere.
///
/// Create it with [`GroupNormConfig`](crate::GroupNormConfig).
#[derive(Module, Debug)]
#[module(custom_display)]
pub struct GroupNorm {
    /// The learnable per-channel scale, `[num_channels]`, initialized to ones (`None` when
    /// `affine` is false).
    pub gamma: Option<Param<Tensor<1>>>,
    /// The learnable per-channel shift, `[num_channels]`, initialized to zeros (`None` when
    /// `affine` is false).
    pub beta: Option<Param<Tensor<1>>>,
    /// The number of groups the channels are split into.
    pub num_groups: usize,
    /// The number of channels expected on axis 1 of the input.
    pub num_channels: usize,
    /// Added to the variance for numerical stability.
    pub epsilon: f64,
    /// Whether the layer has learnable `gamma` and `beta`.
    pub affine: bool,
    /// The activation fused after the normalization.
    #[module(skip)]
    pub activation: Activation,
}

impl ModuleDisplay for GroupNorm {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new()
            .with_new_line_after_attribute(false)
            .optional()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        content
            .add("num_groups", &self.num_groups)
            .add("num_channels", &self.num_channels)
            .add("epsilon", &self.epsilon)
            .add("affine", &self.affine)
            .add("activation", &format!("{:?}", self.activation))
            .optional()
    }
}

impl GroupNorm {
    /// Applies group normalization (and the fused activation, if any) to `input`.
    ///
    /// # Shapes
    ///
    /// - input: `[batch_size, num_channels, *]` of any rank >= 2 (rank 2 is `[batch_size,
    ///   num_channels]`; the axes after the channels are taken together), in the dtype of the
    ///   layer's parameters
    /// - output: same as the input
    ///
    /// # Panics
    ///
    /// Panics with a [`GroupNormError`] message where [`try_forward`](Self::try_forward)
    /// returns an error.
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        self.try_forward(input)
            .unwrap_or_else(|err| panic!("GroupNorm::forward: {err}"))
    }

    /// Like [`forward`](Self::forward), but returns invalid inputs as errors instead of
    /// panicking.
    ///
    /// # Errors
    ///
    /// A [`GroupNormError`] when the input's rank is below 2, its axis 1 is not
    /// `num_channels` or it is not a float tensor, when `gamma` or `beta` does not hold
    /// `num_channels` values of the input's dtype, or when the layer's fields are invalid
    /// (`num_groups` zero or not dividing `num_channels`, `epsilon` not finite and positive:
    /// possible when they were set by hand).
    pub fn try_forward<const D: usize>(
        &self,
        input: Tensor<D>,
    ) -> Result<Tensor<D>, GroupNormError> {
        functional::check_input(&input.shape(), self.num_channels)?;
        functional::try_group_norm_with_activation(
            input,
            self.num_groups,
            self.gamma.as_ref().map(Param::val),
            self.beta.as_ref().map(Param::val),
            self.epsilon,
            self.activation,
        )
    }
}
