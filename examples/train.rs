//! Train a GroupNorm ResNet: `cargo run --release --example train -- --help`.
//!
//! The default trains a small ResNet-18 (width 16) on the embedded synthetic dataset, in
//! minutes on two CPU cores. The backend comes from the cargo features (`flex` by default;
//! `ndarray`, `wgpu`, `vulkan`, `cuda`, `metal`) and `BURN_DEVICE` at run time.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Device;
use clap::{CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use gn_burn::training::{self, RunConfig, RunControl, TrainOptions};

/// Train a ResNet with GroupNorm (or BatchNorm) on synthetic data, CIFAR-10 or an image folder.
#[derive(Parser, Debug)]
#[command(name = "train")]
struct Cli {
    #[command(flatten)]
    options: TrainOptions,
    /// Continue the run in DIR (or in --artifact-dir when no DIR is given) from its last
    /// complete epoch, with its saved options (--epochs may be raised).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    resume: Option<PathBuf>,
    /// Stop when the validation accuracy has not improved for this many epochs.
    #[arg(long)]
    patience: Option<usize>,
    /// Stop after this epoch; continue later with --resume.
    #[arg(long)]
    stop_after: Option<usize>,
}

fn main() -> ExitCode {
    gn_burn::alloc::keep_freed_memory();
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let resume_dir = cli.resume.map(|dir| {
        if dir.as_os_str().is_empty() {
            cli.options.artifact_dir.clone()
        } else {
            Some(dir)
        }
    });
    let (options, artifact_dir, resume) = match resume_dir {
        Some(None) => {
            eprintln!("error: --resume needs a run directory (--resume DIR or --artifact-dir DIR)");
            return ExitCode::FAILURE;
        }
        Some(Some(dir)) => {
            let saved: RunConfig = match training::read_json(&dir.join("config.json")) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("error: cannot resume {}: {e}", dir.display());
                    return ExitCode::FAILURE;
                }
            };
            let mut options = saved.options;
            if matches.value_source("epochs") == Some(ValueSource::CommandLine) {
                options.epochs = cli.options.epochs;
            }
            (options, dir, true)
        }
        None => {
            let dir = cli
                .options
                .artifact_dir
                .clone()
                .unwrap_or_else(training::default_artifact_dir);
            (cli.options, dir, false)
        }
    };

    let device = Device::default();
    println!(
        "training {} ({:?}) on {:?} with {:?} data, {} epochs; artifacts in {}",
        options.model,
        options.norm,
        device,
        options.dataset,
        options.epochs,
        artifact_dir.display()
    );
    let control = RunControl {
        resume,
        patience: cli.patience,
        stop_after: cli.stop_after,
    };
    match training::train(&options, &artifact_dir, &control, &device) {
        Ok(report) => {
            training::link_last(&artifact_dir);
            println!(
                "best valid accuracy: {:.2}% (epoch {})",
                report.metrics.best_valid_accuracy, report.metrics.best_epoch
            );
            println!("valid accuracy: {:.2}%", report.metrics.valid_accuracy);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
