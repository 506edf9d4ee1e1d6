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
    /// complete epoch, with the options saved in its config.json. Options given with --resume
    /// must equal the saved ones, or the run refuses to start and lists them (saved and given
    /// values); --workers may differ, and --epochs may be raised. A raised --epochs recomputes
    /// the learning-rate schedule for the new total, as if the run had been started with it
    /// (the warmup is unchanged): with cosine decay the rate at the resumed step jumps up to
    /// the longer cosine's value (6 -> 12 epochs after epoch 6, with one warmup epoch: from
    /// about 0 to 57% of the peak) and decays to 0 at the new last epoch; with step decay the
    /// divisions by 10 move to 30/60/80% of the new total, so the rate can rise again.
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
    if let (Some(dir), Some(artifact_dir)) = (&cli.resume, &cli.options.artifact_dir)
        && !dir.as_os_str().is_empty()
        && dir != artifact_dir
    {
        eprintln!(
            "error: --resume {} and --artifact-dir {} name two different runs",
            dir.display(),
            artifact_dir.display()
        );
        return ExitCode::FAILURE;
    }
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
            // The saved options, and what the command line gave: `train` refuses the run if
            // anything given differs from the saved value (other than a raised --epochs).
            let command = Cli::command();
            let given = command
                .get_arguments()
                .map(|arg| arg.get_id().as_str())
                .filter(|id| matches.value_source(id) == Some(ValueSource::CommandLine));
            (saved.options.with_given(&cli.options, given), dir, true)
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
        "training {} ({:?}) with {:?} data, {} epochs{}; artifacts in {}",
        options.model,
        options.norm,
        options.dataset,
        options.epochs,
        if resume { ", resumed" } else { "" },
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
