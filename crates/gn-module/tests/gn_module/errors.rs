//! Every invalid configuration and input gets a `GroupNormError` whose message names the
//! offending value and what was expected; `init` and `forward` panic with that message.

use burn::tensor::{Device, Tensor};
use gn_module::{GroupNormConfig, GroupNormError, group_norm, try_group_norm};

fn device() -> Device {
    Device::flex()
}

fn init_err(config: GroupNormConfig) -> GroupNormError {
    config
        .try_init(&device())
        .expect_err("the configuration is invalid")
}

#[test]
fn zero_groups() {
    let err = init_err(GroupNormConfig::new(0, 8));
    assert_eq!(err, GroupNormError::ZeroGroups);
    assert_eq!(err.to_string(), "num_groups must be at least 1, got 0");
}

#[test]
fn zero_channels() {
    let err = init_err(GroupNormConfig::new(4, 0));
    assert_eq!(err, GroupNormError::ZeroChannels);
    assert_eq!(err.to_string(), "num_channels must be at least 1, got 0");
}

#[test]
fn channels_not_divisible_by_groups() {
    let err = init_err(GroupNormConfig::new(32, 30));
    assert_eq!(
        err.to_string(),
        "num_channels (30) must be divisible by num_groups (32)"
    );
}

#[test]
fn channels_not_divisible_by_group_size() {
    let err = init_err(GroupNormConfig::from_group_size(16, 40));
    assert_eq!(
        err.to_string(),
        "num_channels (40) must be divisible by group_size (16)"
    );
    let err = init_err(GroupNormConfig::from_group_size(0, 40));
    assert_eq!(
        err.to_string(),
        "group_size (channels per group) must be at least 1, got 0"
    );
}

#[test]
fn group_size_gives_the_group_count() {
    let gn = GroupNormConfig::from_group_size(16, 256)
        .try_init(&device())
        .unwrap();
    assert_eq!(gn.num_groups, 16);
}

#[test]
fn invalid_epsilon() {
    for eps in [0.0, -1e-5, f64::NAN, f64::INFINITY] {
        let err = init_err(GroupNormConfig::new(2, 4).with_epsilon(eps));
        assert!(
            matches!(err, GroupNormError::InvalidEpsilon(v) if v.to_bits() == eps.to_bits()),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("epsilon must be finite and greater than 0, got "),
            "{err}"
        );
    }
}

#[test]
#[should_panic(
    expected = "invalid GroupNormConfig: num_channels (30) must be divisible by num_groups (32)"
)]
fn init_panics_with_the_message() {
    GroupNormConfig::new(32, 30).init(&device());
}

#[test]
fn rank_below_two() {
    let gn = GroupNormConfig::new(2, 4).init(&device());
    let x = Tensor::<1>::zeros([4], &device());
    let err = gn.try_forward(x).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GroupNorm expects an input of shape [batch, channels, *] with rank >= 2, got rank 1 (shape [4])"
    );
}

#[test]
fn channel_axis_mismatch() {
    let gn = GroupNormConfig::new(2, 4).init(&device());
    let x = Tensor::<4>::zeros([2, 6, 3, 3], &device());
    let err = gn.try_forward(x).unwrap_err();
    assert_eq!(
        err,
        GroupNormError::ChannelMismatch {
            expected: 4,
            got: 6,
            shape: vec![2, 6, 3, 3]
        }
    );
    assert_eq!(
        err.to_string(),
        "GroupNorm expects 4 channels on axis 1 of the input, got 6 (input shape [2, 6, 3, 3])"
    );
}

#[test]
#[should_panic(
    expected = "GroupNorm::forward: GroupNorm expects 4 channels on axis 1 of the input, got 6 (input shape [2, 6, 3, 3])"
)]
fn forward_panics_with_the_message() {
    let gn = GroupNormConfig::new(2, 4).init(&device());
    gn.forward(Tensor::<4>::zeros([2, 6, 3, 3], &device()));
}

#[test]
fn affine_of_the_wrong_length() {
    let x = Tensor::<3>::zeros([2, 4, 5], &device());
    let gamma = Tensor::<1>::ones([3], &device());
    let err = try_group_norm(x.clone(), 2, Some(gamma), None, 1e-5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "gamma must hold one value per channel: expected length 4, got 3"
    );
    let beta = Tensor::<1>::ones([5], &device());
    let err = try_group_norm(x, 2, None, Some(beta), 1e-5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "beta must hold one value per channel: expected length 4, got 5"
    );
}

#[test]
fn functional_checks_groups_and_epsilon() {
    let x = Tensor::<3>::zeros([2, 30, 5], &device());
    let err = try_group_norm(x.clone(), 32, None, None, 1e-5).unwrap_err();
    assert_eq!(
        err.to_string(),
        "num_channels (30) must be divisible by num_groups (32)"
    );
    let err = try_group_norm(x, 3, None, None, -1.0).unwrap_err();
    assert_eq!(err, GroupNormError::InvalidEpsilon(-1.0));
}

#[test]
#[should_panic(expected = "group_norm: num_groups must be at least 1, got 0")]
fn functional_panics_with_the_message() {
    group_norm(
        Tensor::<3>::zeros([2, 4, 5], &device()),
        0,
        None,
        None,
        1e-5,
    );
}

#[test]
fn errors_are_std_errors() {
    fn takes_error(_: &dyn std::error::Error) {}
    takes_error(&GroupNormError::ZeroGroups);
}
