//! Errors reported by [`GroupNormConfig::try_init`](crate::GroupNormConfig::try_init),
//! [`GroupNorm::try_forward`](crate::GroupNorm::try_forward) and
//! [`try_group_norm`](crate::try_group_norm).

use core::fmt;

/// Why a group normalization could not be built or applied.
///
/// Every message names the offending value and what was expected, so that it can be shown to a
/// user as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupNormError {
    /// `num_groups` is zero.
    ZeroGroups,
    /// `num_channels` is zero.
    ZeroChannels,
    /// `group_size` (channels per group, see
    /// [`GroupNormConfig::from_group_size`](crate::GroupNormConfig::from_group_size)) is zero.
    ZeroGroupSize,
    /// `num_channels` is not a multiple of `num_groups`.
    ChannelsNotDivisible {
        /// The number of channels.
        num_channels: usize,
        /// The number of groups.
        num_groups: usize,
    },
    /// `num_channels` is not a multiple of the requested channels per group.
    ChannelsNotDivisibleByGroupSize {
        /// The number of channels.
        num_channels: usize,
        /// The requested channels per group.
        group_size: usize,
    },
    /// `epsilon` is NaN, infinite, zero or negative.
    InvalidEpsilon(f64),
    /// The input has fewer than two dimensions.
    RankTooLow {
        /// The input shape.
        shape: Vec<usize>,
    },
    /// The input's channel axis (axis 1) does not have the expected size.
    ChannelMismatch {
        /// The expected number of channels.
        expected: usize,
        /// The size of axis 1 of the input.
        got: usize,
        /// The input shape.
        shape: Vec<usize>,
    },
    /// `gamma` or `beta` does not hold one value per channel.
    AffineLength {
        /// `"gamma"` or `"beta"`.
        name: &'static str,
        /// The number of channels.
        expected: usize,
        /// The length of the tensor given.
        got: usize,
    },
}

impl fmt::Display for GroupNormError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroGroups => write!(f, "num_groups must be at least 1, got 0"),
            Self::ZeroChannels => write!(f, "num_channels must be at least 1, got 0"),
            Self::ZeroGroupSize => {
                write!(
                    f,
                    "group_size (channels per group) must be at least 1, got 0"
                )
            }
            Self::ChannelsNotDivisible {
                num_channels,
                num_groups,
            } => write!(
                f,
                "num_channels ({num_channels}) must be divisible by num_groups ({num_groups})"
            ),
            Self::ChannelsNotDivisibleByGroupSize {
                num_channels,
                group_size,
            } => write!(
                f,
                "num_channels ({num_channels}) must be divisible by group_size ({group_size})"
            ),
            Self::InvalidEpsilon(eps) => {
                write!(f, "epsilon must be finite and greater than 0, got {eps}")
            }
            Self::RankTooLow { shape } => write!(
                f,
                "GroupNorm expects an input of shape [batch, channels, *] with rank >= 2, \
                 got rank {} (shape {shape:?})",
                shape.len()
            ),
            Self::ChannelMismatch {
                expected,
                got,
                shape,
            } => write!(
                f,
                "GroupNorm expects {expected} channels on axis 1 of the input, got {got} \
                 (input shape {shape:?})"
            ),
            Self::AffineLength {
                name,
                expected,
                got,
            } => write!(
                f,
                "{name} must hold one value per channel: expected length {expected}, got {got}"
            ),
        }
    }
}

impl std::error::Error for GroupNormError {}
