//! Errors reported by [`GroupNormConfig::try_init`](crate::GroupNormConfig::try_init),
//! [`GroupNorm::try_forward`](crate::GroupNorm::try_forward),
//! [`try_group_norm`](crate::try_group_norm), [`fused::forward_with_stats`](crate::fused::forward_with_stats)
//! and the argument checks of the backend ops ([`check_forward_args`](crate::backend::check_forward_args),
//! [`check_backward_args`](crate::backend::check_backward_args)).

use core::fmt;

use burn::tensor::DType;

/// Why a group normalization could not be built or applied.
///
/// Every message names the offending value and what was expected, so that it can be shown to a
/// user as it is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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
    /// A configuration's `group_size` disagrees with its `num_groups` and `num_channels`
    /// (`num_groups * group_size` must be `num_channels`), as a deserialized or edited
    /// configuration can.
    GroupSizeMismatch {
        /// The channels per group.
        group_size: usize,
        /// The number of groups.
        num_groups: usize,
        /// The number of channels.
        num_channels: usize,
    },
    /// A tensor argument of a backend op does not have the shape the others imply.
    ShapeMismatch {
        /// The argument: `"gamma"`, `"beta"`, `"grad"`, `"mean"` or `"rstd"`.
        name: &'static str,
        /// The shape it must have.
        expected: Vec<usize>,
        /// The shape it has.
        got: Vec<usize>,
    },
    /// A tensor argument does not have the dtype the input implies: `gamma`, `beta` and `grad`
    /// that of `x`, `mean` and `rstd` [`stats_dtype`](crate::backend::stats_dtype) of it.
    DTypeMismatch {
        /// The argument: `"gamma"`, `"beta"`, `"grad"`, `"mean"` or `"rstd"`.
        name: &'static str,
        /// The dtype it must have.
        expected: DType,
        /// The dtype it has.
        got: DType,
    },
    /// The input is not a floating-point tensor.
    UnsupportedDType {
        /// The input's dtype.
        dtype: DType,
    },
    /// An activation code passed to a backend op is not one of
    /// [`Activation::code`](crate::Activation::code)'s.
    UnknownActivation(u32),
    /// The fused backend ops were given an input with no elements (the functional and module
    /// forms return such an input unchanged without calling them).
    EmptyInput {
        /// The input shape.
        shape: Vec<usize>,
    },
    /// [`fused::forward_with_stats`](crate::fused::forward_with_stats) was called on a device
    /// whose backend has no fused kernel in this build.
    NoFusedKernel {
        /// The backend, as burn's dispatch device names it (`"NdArray"`, `"Cube(Wgpu)"`, ...).
        backend: String,
        /// The gn-module feature that compiles a fused kernel for it, if gn-module has one.
        feature: Option<&'static str>,
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
            Self::GroupSizeMismatch {
                group_size,
                num_groups,
                num_channels,
            } => write!(
                f,
                "group_size ({group_size}) disagrees with num_groups ({num_groups}) for \
                 {num_channels} channels: expected num_groups = num_channels / group_size = {}",
                num_channels.checked_div(*group_size).unwrap_or(0)
            ),
            Self::ShapeMismatch {
                name,
                expected,
                got,
            } => write!(f, "{name} must have shape {expected:?}, got {got:?}"),
            Self::DTypeMismatch {
                name,
                expected,
                got,
            } => write!(f, "{name} must have dtype {expected:?}, got {got:?}"),
            Self::UnsupportedDType { dtype } => write!(
                f,
                "GroupNorm expects a floating-point input (F64, F32, F16 or BF16), got {dtype:?}"
            ),
            Self::UnknownActivation(code) => write!(
                f,
                "unknown activation code {code}: expected 0 (none), 1 (ReLU) or 2 (SiLU)"
            ),
            Self::EmptyInput { shape } => write!(
                f,
                "the fused GroupNorm ops expect an input with at least one element, got shape \
                 {shape:?} (group_norm and GroupNorm::forward return empty inputs unchanged)"
            ),
            Self::NoFusedKernel { backend, feature } => match feature {
                Some(feature) => write!(
                    f,
                    "no fused GroupNorm kernel for the {backend} backend in this build: enable \
                     gn-module's `{feature}` feature"
                ),
                None => write!(
                    f,
                    "gn-module has no fused GroupNorm kernel for the {backend} backend (use \
                     group_norm, which falls back to the composite)"
                ),
            },
        }
    }
}

impl std::error::Error for GroupNormError {}
