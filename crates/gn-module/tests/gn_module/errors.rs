//! Every invalid configuration and input gets a `GroupNormError` whose message names the
//! offending value and what was expected, through every public door: the configuration, the
//! module, the functions, `fused::forward_with_stats`, the check functions, and the backend
//! trait's ops on every CPU backend (plain and autodiff), which panic with that message.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::backend::Dispatch;
use burn::config::{Config, config_to_json};
use burn::module::Param;
use burn::tensor::{DType, Device, Tensor};
use gn_module::backend::{ArgSpec, GroupNormBackend, check_backward_args, check_forward_args};
use gn_module::{
    Activation, GroupNormConfig, GroupNormError, fused, group_norm, try_group_norm,
    try_group_norm_with_activation,
};

use crate::common::f64_devices;

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

// ---- The configuration: group_size must agree with num_groups. ----

#[test]
fn group_size_disagreeing_with_num_groups() {
    let config = GroupNormConfig::new(3, 64).with_group_size(Some(16));
    let expected = GroupNormError::GroupSizeMismatch {
        group_size: 16,
        num_groups: 3,
        num_channels: 64,
    };
    assert_eq!(config.validate().unwrap_err(), expected);
    assert_eq!(init_err(config), expected);
    assert_eq!(
        expected.to_string(),
        "group_size (16) disagrees with num_groups (3) for 64 channels: expected num_groups = \
         num_channels / group_size = 4"
    );
}

#[test]
fn deserialized_config_with_a_disagreeing_group_size() {
    let json = config_to_json(&GroupNormConfig::from_group_size(16, 64));
    assert!(json.contains("\"num_groups\": 4"), "{json}");
    let edited = json.replace("\"num_groups\": 4", "\"num_groups\": 3");
    let config = GroupNormConfig::load_binary(edited.as_bytes()).expect("valid JSON");
    assert_eq!(config.group_size, Some(16));
    assert!(matches!(
        config.try_init(&device()),
        Err(GroupNormError::GroupSizeMismatch { num_groups: 3, .. })
    ));
    // The unedited one round-trips and is valid.
    let config = GroupNormConfig::load_binary(json.as_bytes()).expect("valid JSON");
    assert_eq!(config.validate(), Ok(()));
}

// ---- GroupNorm::try_forward: dtype and hand-edited fields. ----

#[test]
fn module_input_of_another_dtype() {
    let gn = GroupNormConfig::new(2, 4).init(&device());
    let x = Tensor::<3>::zeros([2, 4, 5], (&device(), DType::F16));
    let err = gn.try_forward(x).unwrap_err();
    assert_eq!(
        err,
        GroupNormError::DTypeMismatch {
            name: "gamma",
            expected: DType::F16,
            got: DType::F32
        }
    );
    assert_eq!(err.to_string(), "gamma must have dtype F16, got F32");
}

#[test]
fn module_with_hand_edited_fields() {
    let x = || Tensor::<3>::zeros([1, 10, 4], &device());
    let mut gn = GroupNormConfig::new(2, 10).init(&device());
    gn.num_groups = 3;
    assert_eq!(
        gn.try_forward(x()).unwrap_err(),
        GroupNormError::ChannelsNotDivisible {
            num_channels: 10,
            num_groups: 3
        }
    );
    let mut gn = GroupNormConfig::new(2, 10).init(&device());
    gn.epsilon = f64::NAN;
    assert!(matches!(
        gn.try_forward(x()).unwrap_err(),
        GroupNormError::InvalidEpsilon(e) if e.is_nan()
    ));
    let mut gn = GroupNormConfig::new(2, 10).init(&device());
    gn.beta = Some(Param::from_tensor(Tensor::zeros([8], &device())));
    assert_eq!(
        gn.try_forward(x()).unwrap_err(),
        GroupNormError::AffineLength {
            name: "beta",
            expected: 10,
            got: 8
        }
    );
}

// ---- try_group_norm(_with_activation). ----

#[test]
fn ten_channels_in_three_groups() {
    let x = Tensor::<3>::zeros([1, 10, 4], &device());
    let expected = GroupNormError::ChannelsNotDivisible {
        num_channels: 10,
        num_groups: 3,
    };
    assert_eq!(
        try_group_norm(x.clone(), 3, None, None, 1e-5).unwrap_err(),
        expected
    );
    assert_eq!(
        try_group_norm_with_activation(x.clone(), 3, None, None, 1e-5, Activation::Silu)
            .unwrap_err(),
        expected
    );
    let gamma = Tensor::<1>::ones([10], &device());
    let beta = Tensor::<1>::zeros([10], &device());
    assert_eq!(
        fused::forward_with_stats(x, 3, gamma, beta, 1e-5, Activation::None).unwrap_err(),
        expected
    );
}

#[test]
fn affine_of_another_dtype() {
    let x = Tensor::<3>::zeros([2, 4, 5], &device());
    let gamma = Tensor::<1>::ones([4], (&device(), DType::F64));
    let err = try_group_norm(x.clone(), 2, Some(gamma), None, 1e-5).unwrap_err();
    assert_eq!(err.to_string(), "gamma must have dtype F32, got F64");
    let beta = Tensor::<1>::zeros([4], (&device(), DType::F16));
    let err =
        try_group_norm_with_activation(x, 2, None, Some(beta), 1e-5, Activation::Relu).unwrap_err();
    assert_eq!(
        err,
        GroupNormError::DTypeMismatch {
            name: "beta",
            expected: DType::F32,
            got: DType::F16
        }
    );
}

#[test]
fn functional_rank_below_two() {
    let err = try_group_norm(Tensor::<1>::zeros([4], &device()), 2, None, None, 1e-5).unwrap_err();
    assert_eq!(err, GroupNormError::RankTooLow { shape: vec![4] });
}

#[test]
fn empty_inputs_are_returned_unchanged_after_the_checks() {
    for shape in [[0, 4, 3], [2, 4, 0]] {
        let y = try_group_norm(Tensor::<3>::zeros(shape, &device()), 2, None, None, 1e-5).unwrap();
        assert_eq!(y.dims(), shape);
        // Still checked.
        let err = try_group_norm(Tensor::<3>::zeros(shape, &device()), 3, None, None, 1e-5);
        assert!(matches!(
            err,
            Err(GroupNormError::ChannelsNotDivisible { .. })
        ));
    }
}

#[test]
#[should_panic(
    expected = "composite::group_norm: num_channels (10) must be divisible by num_groups (3)"
)]
fn composite_panics_naming_the_problem() {
    let x = Tensor::<3>::zeros([1, 10, 4], &device());
    gn_module::composite::group_norm(x, 3, None, None, 1e-5, Activation::None);
}

// ---- fused::forward_with_stats. ----

fn stats_err<const D: usize>(
    x: Tensor<D>,
    num_groups: usize,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> GroupNormError {
    fused::forward_with_stats(x, num_groups, gamma, beta, epsilon, Activation::None)
        .expect_err("the arguments are invalid")
}

/// On the CPU backends (the checks run before any kernel; f64 and empty tensors are made).
#[test]
fn forward_with_stats_checks_its_arguments() {
    for (backend, device) in f64_devices() {
        let x = Tensor::<3>::ones([2, 4, 5], &device);
        let ones = |c: usize| Tensor::<1>::ones([c], &device);
        let zeros = |c: usize| Tensor::<1>::zeros([c], &device);
        let cases = [
            (
                stats_err(x.clone(), 0, ones(4), zeros(4), 1e-5),
                GroupNormError::ZeroGroups,
            ),
            (
                stats_err(x.clone(), 3, ones(4), zeros(4), 1e-5),
                GroupNormError::ChannelsNotDivisible {
                    num_channels: 4,
                    num_groups: 3,
                },
            ),
            (
                stats_err(x.clone(), 2, ones(4), zeros(4), 0.0),
                GroupNormError::InvalidEpsilon(0.0),
            ),
            (
                stats_err(x.clone(), 2, ones(3), zeros(4), 1e-5),
                GroupNormError::AffineLength {
                    name: "gamma",
                    expected: 4,
                    got: 3,
                },
            ),
            (
                stats_err(x.clone(), 2, ones(4), zeros(6), 1e-5),
                GroupNormError::AffineLength {
                    name: "beta",
                    expected: 4,
                    got: 6,
                },
            ),
            (
                stats_err(
                    x.clone(),
                    2,
                    ones(4),
                    Tensor::<1>::zeros([4], (&device, DType::F64)),
                    1e-5,
                ),
                GroupNormError::DTypeMismatch {
                    name: "beta",
                    expected: DType::F32,
                    got: DType::F64,
                },
            ),
            (
                stats_err(Tensor::<1>::ones([4], &device), 2, ones(4), zeros(4), 1e-5),
                GroupNormError::RankTooLow { shape: vec![4] },
            ),
            (
                stats_err(
                    Tensor::<3>::ones([0, 4, 5], &device),
                    2,
                    ones(4),
                    zeros(4),
                    1e-5,
                ),
                GroupNormError::EmptyInput {
                    shape: vec![0, 4, 5],
                },
            ),
            (
                stats_err(
                    Tensor::<4>::ones([2, 4, 5, 0], &device),
                    2,
                    ones(4),
                    zeros(4),
                    1e-5,
                ),
                GroupNormError::EmptyInput {
                    shape: vec![2, 4, 5, 0],
                },
            ),
        ];
        for (got, expected) in cases {
            assert_eq!(got, expected, "on {backend}");
        }
        // And valid arguments give y and [N, G] statistics.
        let (y, mean, rstd) =
            fused::forward_with_stats(x, 2, ones(4), zeros(4), 1e-5, Activation::None).unwrap();
        assert_eq!(y.dims(), [2, 4, 5]);
        assert_eq!(mean.dims(), [2, 2]);
        assert_eq!(rstd.dims(), [2, 2]);
    }
}

#[test]
fn messages_of_the_backend_checks() {
    let cases = [
        (
            GroupNormError::ShapeMismatch {
                name: "grad",
                expected: vec![2, 4, 5],
                got: vec![2, 4, 6],
            },
            "grad must have shape [2, 4, 5], got [2, 4, 6]",
        ),
        (
            GroupNormError::UnknownActivation(7),
            "unknown activation code 7: expected 0 (none), 1 (ReLU) or 2 (SiLU)",
        ),
        (
            GroupNormError::UnsupportedDType { dtype: DType::I32 },
            "GroupNorm expects a floating-point input (F64, F32, F16 or BF16), got I32",
        ),
        (
            GroupNormError::EmptyInput {
                shape: vec![0, 4, 5],
            },
            "the fused GroupNorm ops expect an input with at least one element, got shape \
             [0, 4, 5] (group_norm and GroupNorm::forward return empty inputs unchanged)",
        ),
        (
            GroupNormError::NoFusedKernel {
                backend: "NdArray".into(),
                feature: Some("ndarray"),
            },
            "no fused GroupNorm kernel for the NdArray backend in this build: enable \
             gn-module's `ndarray` feature",
        ),
    ];
    for (err, message) in cases {
        assert_eq!(err.to_string(), message);
    }
}

// ---- The check functions themselves, over shapes and dtypes. ----

const F32: DType = DType::F32;

fn spec(shape: &[usize], dtype: DType) -> ArgSpec<'_> {
    ArgSpec::new(shape, dtype)
}

#[test]
fn forward_check_rejects_every_invalid_class() {
    let x = [2, 4, 5];
    let c = [4];
    let ok = check_forward_args(spec(&x, F32), spec(&c, F32), spec(&c, F32), 2, 1e-5, 2);
    assert_eq!(ok, Ok(()));
    let check = |x: ArgSpec<'_>, g: ArgSpec<'_>, b: ArgSpec<'_>, groups, eps, act| {
        check_forward_args(x, g, b, groups, eps, act).unwrap_err()
    };
    let (xs, cs) = (spec(&x, F32), spec(&c, F32));
    assert_eq!(
        check(spec(&[4], F32), cs, cs, 2, 1e-5, 0),
        GroupNormError::RankTooLow { shape: vec![4] }
    );
    assert_eq!(
        check(spec(&x, DType::I64), cs, cs, 2, 1e-5, 0),
        GroupNormError::UnsupportedDType { dtype: DType::I64 }
    );
    assert_eq!(check(xs, cs, cs, 0, 1e-5, 0), GroupNormError::ZeroGroups);
    assert_eq!(
        check(
            spec(&[1, 10, 4], F32),
            spec(&[10], F32),
            spec(&[10], F32),
            3,
            1e-5,
            0
        ),
        GroupNormError::ChannelsNotDivisible {
            num_channels: 10,
            num_groups: 3
        }
    );
    assert_eq!(
        check(
            spec(&[2, 0, 5], F32),
            spec(&[0], F32),
            spec(&[0], F32),
            1,
            1e-5,
            0
        ),
        GroupNormError::ZeroChannels
    );
    assert_eq!(
        check(spec(&[2, 4, 0], F32), cs, cs, 2, 1e-5, 0),
        GroupNormError::EmptyInput {
            shape: vec![2, 4, 0]
        }
    );
    assert_eq!(
        check(xs, cs, cs, 2, f64::INFINITY, 0),
        GroupNormError::InvalidEpsilon(f64::INFINITY)
    );
    assert_eq!(
        check(xs, cs, cs, 2, 1e-5, 3),
        GroupNormError::UnknownActivation(3)
    );
    assert_eq!(
        check(xs, spec(&[5], F32), cs, 2, 1e-5, 0),
        GroupNormError::AffineLength {
            name: "gamma",
            expected: 4,
            got: 5
        }
    );
    assert_eq!(
        check(xs, cs, spec(&[2, 2], F32), 2, 1e-5, 0),
        GroupNormError::ShapeMismatch {
            name: "beta",
            expected: vec![4],
            got: vec![2, 2]
        }
    );
    assert_eq!(
        check(xs, spec(&c, DType::BF16), cs, 2, 1e-5, 0),
        GroupNormError::DTypeMismatch {
            name: "gamma",
            expected: F32,
            got: DType::BF16
        }
    );
}

#[test]
fn backward_check_rejects_every_invalid_class() {
    let (x, c, stats) = ([2, 4, 5], [4], [2, 2]);
    let (xs, cs, ss) = (spec(&x, F32), spec(&c, F32), spec(&stats, F32));
    let check = |grad, x, mean, rstd, groups, act| {
        check_backward_args(grad, x, cs, cs, mean, rstd, groups, act)
    };
    assert_eq!(check(xs, xs, ss, ss, 2, 1), Ok(()));
    // f16 and bf16 inputs have f32 statistics, f64 inputs f64 ones.
    for (dtype, stats_dtype) in [
        (DType::F16, F32),
        (DType::BF16, F32),
        (DType::F64, DType::F64),
    ] {
        let (xd, cd, sd) = (spec(&x, dtype), spec(&c, dtype), spec(&stats, stats_dtype));
        assert_eq!(check_backward_args(xd, xd, cd, cd, sd, sd, 2, 0), Ok(()));
    }
    let err =
        |grad, x, mean, rstd, groups, act| check(grad, x, mean, rstd, groups, act).unwrap_err();
    assert_eq!(
        err(spec(&[2, 4, 6], F32), xs, ss, ss, 2, 0),
        GroupNormError::ShapeMismatch {
            name: "grad",
            expected: vec![2, 4, 5],
            got: vec![2, 4, 6]
        }
    );
    assert_eq!(
        err(spec(&x, DType::F64), xs, ss, ss, 2, 0),
        GroupNormError::DTypeMismatch {
            name: "grad",
            expected: F32,
            got: DType::F64
        }
    );
    assert_eq!(
        err(xs, xs, spec(&[2, 4], F32), ss, 2, 0),
        GroupNormError::ShapeMismatch {
            name: "mean",
            expected: vec![2, 2],
            got: vec![2, 4]
        }
    );
    assert_eq!(
        err(xs, xs, ss, spec(&stats, DType::F16), 2, 0),
        GroupNormError::DTypeMismatch {
            name: "rstd",
            expected: F32,
            got: DType::F16
        }
    );
    assert_eq!(
        err(xs, xs, ss, ss, 2, 9),
        GroupNormError::UnknownActivation(9)
    );
    assert_eq!(
        err(spec(&[1, 10, 4], F32), spec(&[1, 10, 4], F32), ss, ss, 3, 0),
        GroupNormError::ChannelsNotDivisible {
            num_channels: 10,
            num_groups: 3
        }
    );
    assert_eq!(err(xs, xs, ss, ss, 0, 0), GroupNormError::ZeroGroups);
}

// ---- The backend trait's ops, called directly on every backend: a clear panic. ----

/// A call of a backend op that must panic.
type Call<'a> = Box<dyn FnOnce() + 'a>;

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("the call must panic");
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        panic!("a panic without a message")
    }
}

fn backend_forward<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    num_groups: usize,
    epsilon: f64,
    activation: u32,
) {
    let _ = <Dispatch as GroupNormBackend>::group_norm_forward(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        num_groups,
        epsilon,
        activation,
    );
}

#[allow(clippy::too_many_arguments)]
fn backend_backward<const D: usize>(
    grad: Tensor<D>,
    x: Tensor<D>,
    c: usize,
    mean: Tensor<2>,
    rstd: Tensor<2>,
    num_groups: usize,
    activation: u32,
) {
    let device = x.device();
    let dtype = x.dtype();
    let _ = <Dispatch as GroupNormBackend>::group_norm_backward(
        grad.into_dispatch(),
        x.into_dispatch(),
        Tensor::<1>::ones([c], (&device, dtype)).into_dispatch(),
        Tensor::<1>::zeros([c], (&device, dtype)).into_dispatch(),
        mean.into_dispatch(),
        rstd.into_dispatch(),
        num_groups,
        activation,
    );
}

/// The CPU devices (the tests call the ops on them directly), plain and under autodiff.
fn cpu_devices() -> Vec<(String, Device)> {
    f64_devices()
        .into_iter()
        .flat_map(|(name, device)| {
            [
                (name.to_string(), device.clone()),
                (format!("{name} autodiff"), device.autodiff()),
            ]
        })
        .collect()
}

#[test]
fn backend_forward_panics_naming_the_problem() {
    const FORWARD: &str = "GroupNormBackend::group_norm_forward: ";
    for (backend, device) in cpu_devices() {
        let ones = |c: usize| Tensor::<1>::ones([c], &device);
        let zeros = |c: usize| Tensor::<1>::zeros([c], &device);
        let x = || Tensor::<3>::ones([2, 4, 5], &device);
        let cases: Vec<(Call<'_>, &str)> = vec![
            (
                // The example of the issue: the channels-first task list would stop short.
                Box::new(|| {
                    backend_forward(
                        Tensor::<3>::ones([1, 10, 4], &device),
                        ones(10),
                        zeros(10),
                        3,
                        1e-5,
                        0,
                    )
                }),
                "num_channels (10) must be divisible by num_groups (3)",
            ),
            (
                Box::new(|| backend_forward(x(), ones(4), zeros(4), 0, 1e-5, 0)),
                "num_groups must be at least 1, got 0",
            ),
            (
                Box::new(|| backend_forward(x(), ones(3), zeros(4), 2, 1e-5, 0)),
                "gamma must hold one value per channel: expected length 4, got 3",
            ),
            (
                Box::new(|| backend_forward(x(), ones(4), zeros(8), 2, 1e-5, 0)),
                "beta must hold one value per channel: expected length 4, got 8",
            ),
            (
                Box::new(|| {
                    backend_forward(
                        x(),
                        Tensor::<1>::ones([4], (&device, DType::F64)),
                        zeros(4),
                        2,
                        1e-5,
                        0,
                    )
                }),
                "gamma must have dtype F32, got F64",
            ),
            (
                Box::new(|| backend_forward(x(), ones(4), zeros(4), 2, f64::NAN, 0)),
                "epsilon must be finite and greater than 0, got NaN",
            ),
            (
                Box::new(|| backend_forward(x(), ones(4), zeros(4), 2, 1e-5, 5)),
                "unknown activation code 5: expected 0 (none), 1 (ReLU) or 2 (SiLU)",
            ),
            (
                Box::new(|| {
                    backend_forward(
                        Tensor::<1>::ones([4], &device),
                        ones(4),
                        zeros(4),
                        2,
                        1e-5,
                        0,
                    )
                }),
                "GroupNorm expects an input of shape [batch, channels, *] with rank >= 2, got \
                 rank 1 (shape [4])",
            ),
            (
                Box::new(|| {
                    backend_forward(
                        Tensor::<3>::ones([2, 4, 0], &device),
                        ones(4),
                        zeros(4),
                        2,
                        1e-5,
                        0,
                    )
                }),
                "the fused GroupNorm ops expect an input with at least one element, got shape \
                 [2, 4, 0]",
            ),
        ];
        for (call, expected) in cases {
            let message = panic_message(call);
            assert!(
                message.starts_with(FORWARD) && message.contains(expected),
                "on {backend}: got {message:?}, expected {expected:?}"
            );
        }
    }
}

#[test]
fn backend_backward_panics_naming_the_problem() {
    const BACKWARD: &str = "GroupNormBackend::group_norm_backward: ";
    for (backend, device) in cpu_devices() {
        let x = || Tensor::<3>::ones([2, 4, 5], &device);
        let stats = |g: usize| Tensor::<2>::ones([2, g], &device);
        let cases: Vec<(Call<'_>, &str)> = vec![
            (
                Box::new(|| {
                    let x = Tensor::<3>::ones([1, 10, 4], &device);
                    let s = Tensor::<2>::ones([1, 3], &device);
                    backend_backward(x.clone(), x, 10, s.clone(), s, 3, 0)
                }),
                "num_channels (10) must be divisible by num_groups (3)",
            ),
            (
                Box::new(|| {
                    backend_backward(
                        Tensor::ones([2, 4, 6], &device),
                        x(),
                        4,
                        stats(2),
                        stats(2),
                        2,
                        0,
                    )
                }),
                "grad must have shape [2, 4, 5], got [2, 4, 6]",
            ),
            (
                Box::new(|| {
                    let grad = Tensor::<3>::ones([2, 4, 5], (&device, DType::F64));
                    backend_backward(grad, x(), 4, stats(2), stats(2), 2, 0)
                }),
                "grad must have dtype F32, got F64",
            ),
            (
                Box::new(|| backend_backward(x(), x(), 4, stats(4), stats(2), 2, 0)),
                "mean must have shape [2, 2], got [2, 4]",
            ),
            (
                Box::new(|| {
                    let rstd = Tensor::<2>::ones([2, 2], (&device, DType::F64));
                    backend_backward(x(), x(), 4, stats(2), rstd, 2, 0)
                }),
                "rstd must have dtype F32, got F64",
            ),
            (
                Box::new(|| backend_backward(x(), x(), 4, stats(2), stats(2), 2, 3)),
                "unknown activation code 3: expected 0 (none), 1 (ReLU) or 2 (SiLU)",
            ),
            (
                Box::new(|| backend_backward(x(), x(), 4, stats(0), stats(0), 0, 0)),
                "num_groups must be at least 1, got 0",
            ),
        ];
        for (call, expected) in cases {
            let message = panic_message(call);
            assert!(
                message.starts_with(BACKWARD) && message.contains(expected),
                "on {backend}: got {message:?}, expected {expected:?}"
            );
        }
    }
}
