//! Where the time of training goes, phase by phase: `cargo run --release --example
//! step_profile -- [train options] [--steps N]`.
//!
//! Takes the `train` program's options (the recipe: model, width, data, batch size, ...),
//! runs a few unmeasured steps, then times `--steps` training steps phase by phase (batch
//! preparation, forward with the loss, backward, optimizer step, metrics), a whole
//! validation pass and one checkpoint, and prints milliseconds per step and the epoch they add
//! up to. `tools/torch_step_profile.py` times the PyTorch mirror's same phases.

use std::process::ExitCode;

use burn::tensor::Device;
use clap::Parser;
use gn_burn::training::TrainOptions;
use gn_burn::training::profile::{Phases, profile_steps};

/// Time the phases of training steps of a recipe.
#[derive(Parser, Debug)]
#[command(name = "step_profile")]
struct Cli {
    #[command(flatten)]
    options: TrainOptions,
    /// Training steps to measure.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Unmeasured steps before them.
    #[arg(long, default_value_t = 3)]
    warmup_steps: usize,
}

fn row(name: &str, phases: &Phases, count: usize) {
    let ms = |s: f64| 1000.0 * s / count as f64;
    println!(
        "{name:<10} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        ms(phases.data),
        ms(phases.forward),
        ms(phases.backward),
        ms(phases.optimizer),
        ms(phases.metrics),
        ms(phases.total()),
    );
}

fn main() -> ExitCode {
    gn_burn::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let device = Device::default();
    println!("profiling on {device:?}");
    let profile = match profile_steps(
        &cli.options,
        &device,
        cli.steps.max(1),
        cli.warmup_steps,
        &std::env::temp_dir(),
    ) {
        Ok(profile) => profile,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("ms per batch   data  forward backward optimizer metrics   total");
    row("train", &profile.train, profile.train_steps);
    row("valid", &profile.valid, profile.valid_batches);
    println!(
        "checkpoint {:.1} ms; one epoch ({} steps of {}, {} validation batches, a checkpoint) adds up to {:.2} s",
        1000.0 * profile.checkpoint,
        profile.steps_per_epoch,
        profile.batch_size,
        profile.valid_batches,
        profile.epoch_estimate(),
    );
    ExitCode::SUCCESS
}
