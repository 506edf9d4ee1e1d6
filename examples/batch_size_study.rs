//! The paper's headline in miniature: validation error of GroupNorm and BatchNorm as the
//! batch shrinks. `cargo run --release --example batch_size_study -- --help`.
//!
//! Every run goes through the `train` program's engine with the same model, data, seed and
//! epochs; only the norm and the batch size (and with it the linearly scaled learning rate)
//! change. BatchNorm is evaluated as users would run it: with its running statistics.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Device;
use clap::{CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use gn_burn::study;
use gn_burn::training::{NormChoice, TrainOptions, default_artifact_dir};

/// Train GroupNorm and BatchNorm ResNets at several batch sizes and plot error against batch.
///
/// Unless given, the study uses its own defaults, sized to finish in under an hour on two CPU
/// cores: ResNet-18 at width 8, 6 epochs of 3000 synthetic 32x32 images (500 for validation).
#[derive(Parser, Debug)]
#[command(name = "batch_size_study")]
struct Cli {
    #[command(flatten)]
    options: TrainOptions,
    /// Images per batch to try (per device), e.g. 32,16,8,4,2.
    #[arg(long, value_delimiter = ',', default_value = "32,16,8,4,2")]
    batch_sizes: Vec<usize>,
    /// Norms to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "gn,bn")]
    norms: Vec<NormChoice>,
    /// Train nothing: redraw the finished study in --artifact-dir from its study.json, with
    /// the PyTorch mirror's runs that `tools/torch_study.sh` wrote beside it (torch/<run>/).
    #[arg(long, requires = "artifact_dir")]
    replot: bool,
}

fn main() -> ExitCode {
    gn_burn::alloc::keep_freed_memory();
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let defaulted = |name: &str| matches.value_source(name) != Some(ValueSource::CommandLine);
    let options = &mut cli.options;
    if defaulted("base_width") {
        options.base_width = 8;
    }
    if defaulted("groups") {
        options.groups = 8;
    }
    if defaulted("epochs") {
        options.epochs = 6;
    }
    if defaulted("synthetic_train") {
        options.synthetic_train = 3000;
    }
    if defaulted("synthetic_valid") {
        options.synthetic_valid = 500;
    }
    if defaulted("lr") {
        options.lr = 0.8;
    }
    if cli.batch_sizes.contains(&0) {
        eprintln!("error: --batch-sizes must all be at least 1");
        return ExitCode::FAILURE;
    }
    let dir: PathBuf = options.artifact_dir.clone().unwrap_or_else(|| {
        let run = default_artifact_dir();
        run.with_file_name(format!(
            "study-{}",
            run.file_name().unwrap().to_string_lossy()
        ))
    });
    let result = if cli.replot {
        study::replot(&dir)
    } else {
        let device = Device::default();
        println!(
            "batch-size study: {:?} x batch sizes {:?} on {:?}; results in {}",
            cli.norms,
            cli.batch_sizes,
            device,
            dir.display()
        );
        study::run(&cli.options, &cli.norms, &cli.batch_sizes, &dir, &device)
    };
    match result {
        Ok(study) => {
            println!("\nnorm     batch  valid error (best)   PyTorch mirror (best)");
            for e in &study.entries {
                let mirror = match (e.mirror_final_valid_error, e.mirror_best_valid_error) {
                    (Some(last), Some(best)) => format!("{last:>6.2}% ({best:.2}%)"),
                    _ => "-".into(),
                };
                println!(
                    "{:<8} {:>5}  {:>6.2}% ({:.2}%)   {mirror}",
                    format!("{:?}", e.norm),
                    e.batch_size,
                    e.final_valid_error,
                    e.best_valid_error
                );
            }
            println!("wrote {}", dir.join("study.png").display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
