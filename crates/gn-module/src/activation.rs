//! The activation that can be fused into the normalization pass.

use burn::config::Config;
use burn::tensor::Tensor;
use burn::tensor::activation;

/// Activation applied to the normalized output in the same pass as the normalization, forward
/// and backward: `y = act(gamma * x_hat + beta)`.
///
/// `Relu` is the GN + ReLU pair of every ResNet block; `Silu` is the GN + SiLU pair of diffusion
/// U-Nets. Fusing saves one full read and write of the activation each way.
#[derive(Config, Debug, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// No activation: plain group normalization.
    None,
    /// `max(z, 0)`. Its gradient at exactly 0 is taken as 0, as PyTorch does.
    Relu,
    /// `z * sigmoid(z)`.
    Silu,
}

// Written out: burn's `Config` derive rejects the `#[default]` variant attribute.
#[allow(clippy::derivable_impls)]
impl Default for Activation {
    fn default() -> Self {
        Activation::None
    }
}

impl Activation {
    /// The integer the backend ops take (0 none, 1 ReLU, 2 SiLU).
    pub fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::Silu => 2,
        }
    }

    /// The activation of a [`code`](Self::code), `None` for a code that names none.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Activation::None),
            1 => Some(Activation::Relu),
            2 => Some(Activation::Silu),
            _ => None,
        }
    }

    /// Applies the activation with ordinary tensor ops (the composite path).
    pub(crate) fn apply<const D: usize>(self, z: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::None => z,
            Activation::Relu => activation::relu(z),
            Activation::Silu => activation::silu(z),
        }
    }
}
