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
    /// The code of [`Activation::None`]: the integer the backend ops take, and the const
    /// generic (CPU) or comptime value (CubeCL) the kernels are compiled for. These three
    /// constants are the only definition of the codes.
    pub const CODE_NONE: u32 = 0;
    /// The code of [`Activation::Relu`].
    pub const CODE_RELU: u32 = 1;
    /// The code of [`Activation::Silu`].
    pub const CODE_SILU: u32 = 2;

    /// The integer the backend ops take ([`CODE_NONE`](Self::CODE_NONE), ...).
    pub fn code(self) -> u32 {
        match self {
            Activation::None => Self::CODE_NONE,
            Activation::Relu => Self::CODE_RELU,
            Activation::Silu => Self::CODE_SILU,
        }
    }

    /// The activation of a [`code`](Self::code), `None` for a code that names none.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            Self::CODE_NONE => Some(Activation::None),
            Self::CODE_RELU => Some(Activation::Relu),
            Self::CODE_SILU => Some(Activation::Silu),
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
