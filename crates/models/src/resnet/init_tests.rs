//! The initial weights per layer type, against the distributions the paper and torchvision
//! use (see [`ResNet`](super::ResNet)'s "Initialization"): every bound below is a number of
//! standard errors of the statistic for the layer's sample size, not a tolerance tuned to pass.

use burn::tensor::{Device, Tensor};

use super::{Block, BlockKind, Norm, NormLayer, ResNet, ResNetConfig, Stem};

/// Standard errors allowed: a false failure has a probability below 1e-6 per check.
const Z: f64 = 5.0;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// Mean, standard deviation and excess kurtosis of a sample.
fn moments(v: &[f64]) -> (f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let m2 = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let m4 = v.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n;
    (mean, m2.sqrt(), m4 / (m2 * m2) - 3.0)
}

/// He et al. 2015 (Kaiming normal, fan_out, ReLU gain): N(0, 2 / (out_channels * kh * kw)).
fn check_conv(name: &str, conv: &burn::nn::conv::Conv2d) {
    let [out, _, kh, kw] = conv.weight.dims();
    let w = values(conv.weight.val());
    let n = w.len() as f64;
    let sigma = (2.0 / (out * kh * kw) as f64).sqrt();
    let (mean, std, kurtosis) = moments(&w);
    // The sample mean of n normal draws has standard error sigma / sqrt(n); the sample
    // standard deviation sigma / sqrt(2 (n - 1)); the excess kurtosis sqrt(24 / n).
    assert!(
        mean.abs() < Z * sigma / n.sqrt(),
        "{name}: mean {mean} for sigma {sigma}, n {n}"
    );
    assert!(
        (std - sigma).abs() < Z * sigma / (2.0 * (n - 1.0)).sqrt(),
        "{name}: std {std}, expected sqrt(2/fan_out) = {sigma} (n {n})"
    );
    // Normal, not uniform (excess kurtosis -1.2), where the sample can tell them apart.
    if Z * (24.0 / n).sqrt() < 1.2 {
        assert!(
            kurtosis.abs() < Z * (24.0 / n).sqrt(),
            "{name}: excess kurtosis {kurtosis} is not a normal's (n {n})"
        );
    }
    assert!(
        conv.bias.is_none(),
        "{name}: a convolution before a norm has no bias"
    );
}

/// Scale 1 (0 where `zero`), shift 0; BatchNorm's running mean 0 and variance 1.
fn check_norm(name: &str, norm: &NormLayer, zero: bool) {
    let (gamma, beta) = match norm {
        NormLayer::Group(gn) => (
            values(gn.gamma.as_ref().unwrap().val()),
            values(gn.beta.as_ref().unwrap().val()),
        ),
        NormLayer::Batch(bn) => {
            assert!(values(bn.running_mean.value()).iter().all(|&v| v == 0.0));
            assert!(values(bn.running_var.value()).iter().all(|&v| v == 1.0));
            (values(bn.gamma.val()), values(bn.beta.val()))
        }
        NormLayer::BurnGroup(gn) => (
            values(gn.gamma.as_ref().unwrap().val()),
            values(gn.beta.as_ref().unwrap().val()),
        ),
        NormLayer::Identity(_) => return,
    };
    let expected = if zero { 0.0 } else { 1.0 };
    assert!(
        gamma.iter().all(|&g| g == expected),
        "{name}: gamma should be {expected} everywhere"
    );
    assert!(beta.iter().all(|&b| b == 0.0), "{name}: beta should be 0");
}

fn check_block(name: &str, block: &Block, kind: BlockKind) {
    check_conv(&format!("{name}.conv1"), &block.conv1);
    check_conv(&format!("{name}.conv2"), &block.conv2);
    match kind {
        BlockKind::Basic => {
            check_norm(&format!("{name}.bn1"), &block.bn1, false);
            check_norm(&format!("{name}.bn2"), &block.bn2, true);
        }
        BlockKind::Bottleneck => {
            check_norm(&format!("{name}.bn1"), &block.bn1, false);
            check_norm(&format!("{name}.bn2"), &block.bn2, false);
            check_conv(&format!("{name}.conv3"), block.conv3.as_ref().unwrap());
            check_norm(&format!("{name}.bn3"), block.bn3.as_ref().unwrap(), true);
        }
    }
    if let Some(ds) = &block.downsample {
        check_conv(&format!("{name}.downsample.0"), &ds.conv);
        check_norm(&format!("{name}.downsample.1"), &ds.norm, false);
    }
}

/// PyTorch's nn.Linear default, which torchvision's ResNet keeps for `fc`: weight and bias
/// uniform in +-1/sqrt(in_features).
fn check_linear(model: &ResNet) {
    let [fan_in, _] = model.fc.weight.dims();
    let bound = 1.0 / (fan_in as f64).sqrt();
    for (what, v) in [
        ("weight", values(model.fc.weight.val())),
        ("bias", values(model.fc.bias.as_ref().unwrap().val())),
    ] {
        assert!(
            v.iter().all(|x| x.abs() <= bound),
            "fc.{what} outside +-{bound}"
        );
        if what == "weight" {
            // U(-b, b): variance b^2/3; the sample variance's standard error is
            // sqrt((E[x^4] - var^2) / n) = sqrt((b^4/5 - b^4/9) / n).
            let n = v.len() as f64;
            let (_, std, _) = moments(&v);
            let var = bound * bound / 3.0;
            let se = ((bound.powi(4) / 5.0 - var * var) / n).sqrt();
            assert!(
                (std * std - var).abs() < Z * se,
                "fc.weight variance {} for U(+-{bound}) ({var})",
                std * std
            );
        }
    }
}

fn check(config: ResNetConfig, device: &Device) {
    let kind = config.block;
    let model = config.init(device);
    check_conv("conv1", &model.conv1);
    check_norm("bn1", &model.bn1, false);
    for (stage, blocks) in [
        ("layer1", &model.layer1),
        ("layer2", &model.layer2),
        ("layer3", &model.layer3),
        ("layer4", &model.layer4),
    ] {
        for (i, block) in blocks.iter().enumerate() {
            check_block(&format!("{stage}.{i}"), block, kind);
        }
    }
    check_linear(&model);
    // A fine-tuning head is drawn the same way.
    check_linear(&model.with_num_classes(7));
}

#[test]
fn initial_weights_follow_he_and_torchvision() {
    let device = Device::default();
    for norm in [Norm::Group { num_groups: 8 }, Norm::Batch, Norm::BurnGroup] {
        check(
            ResNetConfig::resnet18(10)
                .with_norm(norm)
                .with_stem(Stem::Cifar)
                .with_base_width(16),
            &device,
        );
    }
    // Bottleneck blocks and the ImageNet stem (7x7 convolution), 1000 classes.
    check(
        ResNetConfig::resnet50(1000)
            .with_norm(Norm::Group { num_groups: 8 })
            .with_base_width(8),
        &device,
    );
}

#[test]
fn zero_init_last_can_be_turned_off() {
    let device = Device::default();
    let model = ResNetConfig::resnet18(10)
        .with_stem(Stem::Cifar)
        .with_base_width(8)
        .with_norm(Norm::Batch)
        .with_zero_init_last(false)
        .init(&device);
    for block in model.layer1.iter().chain(&model.layer4) {
        check_norm("bn2", &block.bn2, false);
    }
}
