//! [`GroupNormConfig`]: the configuration of a [`GroupNorm`] layer.

use burn::config::Config;
use burn::module::Param;
use burn::tensor::{Device, Tensor};

use crate::{Activation, GroupNorm, GroupNormError};

/// Configuration to create a [`GroupNorm`] layer with [`init`](GroupNormConfig::init) or
/// [`try_init`](GroupNormConfig::try_init).
///
/// Field for field the same as `burn::nn::GroupNormConfig`, plus an optional fused activation
/// and the group-size form of [`from_group_size`](GroupNormConfig::from_group_size).
///
/// ```rust
/// # use burn::tensor::Device;
/// # use gn_module::{GroupNormConfig, GroupNormError};
/// # fn main() -> Result<(), GroupNormError> {
/// # let device = Device::flex();
/// let gn = GroupNormConfig::new(32, 256).with_epsilon(1e-5).init(&device);
/// let gn = GroupNormConfig::from_group_size(16, 256).try_init(&device)?; // 16 groups
/// assert_eq!(gn.num_groups, 16);
/// assert!(GroupNormConfig::new(3, 256).try_init(&device).is_err()); // 256 % 3 != 0
/// # Ok(())
/// # }
/// ```
#[derive(Config, Debug)]
pub struct GroupNormConfig {
    /// The number of groups the channels are split into.
    pub num_groups: usize,
    /// The number of channels expected on axis 1 of the input.
    pub num_channels: usize,
    /// Added to the variance for numerical stability. Default: 1e-5 (as PyTorch).
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// When `true`, the layer has learnable per-channel `gamma` (initialized to ones) and
    /// `beta` (initialized to zeros). Default: `true`.
    #[config(default = true)]
    pub affine: bool,
    /// Activation applied to the normalized output in the same pass. Default: none.
    #[config(default = "Activation::None")]
    pub activation: Activation,
    /// Channels per group, when the configuration was made with
    /// [`from_group_size`](GroupNormConfig::from_group_size); `num_groups` is then derived from
    /// it and validation reports errors in its terms.
    pub group_size: Option<usize>,
}

impl GroupNormConfig {
    /// A configuration with `group_size` channels per group instead of a group count, as in the
    /// paper's "channels per group" experiments (Table 3): `num_groups = num_channels /
    /// group_size`.
    ///
    /// A `group_size` that does not divide `num_channels` is reported by
    /// [`try_init`](Self::try_init) (and makes [`init`](Self::init) panic).
    pub fn from_group_size(group_size: usize, num_channels: usize) -> Self {
        let num_groups = num_channels.checked_div(group_size).unwrap_or(0);
        Self::new(num_groups, num_channels).with_group_size(Some(group_size))
    }

    /// Checks the configuration without building a layer.
    ///
    /// # Errors
    ///
    /// A [`GroupNormError`] when `num_channels` is zero; when `group_size` is set and is zero,
    /// does not divide `num_channels`, or disagrees with `num_groups` (`num_groups *
    /// group_size != num_channels`, as a configuration deserialized or edited after
    /// [`from_group_size`](Self::from_group_size) can); when `num_groups` is zero or does not
    /// divide `num_channels`; when `epsilon` is not finite and positive.
    pub fn validate(&self) -> Result<(), GroupNormError> {
        if self.num_channels == 0 {
            return Err(GroupNormError::ZeroChannels);
        }
        if let Some(group_size) = self.group_size {
            if group_size == 0 {
                return Err(GroupNormError::ZeroGroupSize);
            }
            if !self.num_channels.is_multiple_of(group_size) {
                return Err(GroupNormError::ChannelsNotDivisibleByGroupSize {
                    num_channels: self.num_channels,
                    group_size,
                });
            }
            if self.num_groups.checked_mul(group_size) != Some(self.num_channels) {
                return Err(GroupNormError::GroupSizeMismatch {
                    group_size,
                    num_groups: self.num_groups,
                    num_channels: self.num_channels,
                });
            }
        }
        validate_groups(self.num_groups, self.num_channels)?;
        validate_epsilon(self.epsilon)
    }

    /// Builds the layer on `device`, or says why the configuration is invalid.
    ///
    /// # Errors
    ///
    /// Those of [`validate`](Self::validate).
    pub fn try_init(&self, device: &Device) -> Result<GroupNorm, GroupNormError> {
        self.validate()?;
        let (gamma, beta) = if self.affine {
            (
                Some(Param::from_tensor(Tensor::ones(
                    [self.num_channels],
                    device,
                ))),
                Some(Param::from_tensor(Tensor::zeros(
                    [self.num_channels],
                    device,
                ))),
            )
        } else {
            (None, None)
        };
        Ok(GroupNorm {
            gamma,
            beta,
            num_groups: self.num_groups,
            num_channels: self.num_channels,
            epsilon: self.epsilon,
            affine: self.affine,
            activation: self.activation,
        })
    }

    /// Builds the layer on `device`.
    ///
    /// # Panics
    ///
    /// Panics with the [`GroupNormError`] message if the configuration is invalid; use
    /// [`try_init`](Self::try_init) to handle it instead.
    pub fn init(&self, device: &Device) -> GroupNorm {
        self.try_init(device)
            .unwrap_or_else(|err| panic!("invalid GroupNormConfig: {err}"))
    }
}

pub(crate) fn validate_groups(
    num_groups: usize,
    num_channels: usize,
) -> Result<(), GroupNormError> {
    if num_groups == 0 {
        return Err(GroupNormError::ZeroGroups);
    }
    if num_channels == 0 {
        return Err(GroupNormError::ZeroChannels);
    }
    if !num_channels.is_multiple_of(num_groups) {
        return Err(GroupNormError::ChannelsNotDivisible {
            num_channels,
            num_groups,
        });
    }
    Ok(())
}

pub(crate) fn validate_epsilon(epsilon: f64) -> Result<(), GroupNormError> {
    if epsilon.is_finite() && epsilon > 0.0 {
        Ok(())
    } else {
        Err(GroupNormError::InvalidEpsilon(epsilon))
    }
}
