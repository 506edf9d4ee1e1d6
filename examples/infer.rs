//! Classify images with a trained run:
//! `cargo run --release --example infer -- --checkpoint runs/last --images ./some/folder`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::Device;
use burn::tensor::activation::softmax;
use clap::Parser;
use gn_burn::data::{ImageBatcher, read_image_file};
use gn_burn::training;

/// Print the top classes, with probabilities, of each image (PNG or JPEG).
#[derive(Parser, Debug)]
#[command(name = "infer")]
struct Cli {
    /// A run's artifact directory (config.json + model.bpk), or its model.bpk.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files or folders (searched recursively for .png, .jpg, .jpeg).
    #[arg(long, num_args = 1.., required = true)]
    images: Vec<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            collect(&entry, out)?;
        }
    } else if path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
    {
        out.push(path.to_path_buf());
    } else if !path.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{}: no such file or folder", path.display()),
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    gn_burn::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let device = Device::default();
    let (model, config) = match training::load_run(&cli.checkpoint, &device) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut files = Vec::new();
    for path in &cli.images {
        if let Err(e) = collect(path, &mut files) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    if files.is_empty() {
        eprintln!("error: no .png or .jpg images under the given paths");
        return ExitCode::FAILURE;
    }
    let batcher = ImageBatcher {
        size: config.image_size,
        normalization: config.normalization,
        augmentation: None,
    };
    let top = cli.top.clamp(1, config.classes.len());
    for chunk in files.chunks(cli.batch_size.max(1)) {
        let images: Result<Vec<Vec<u8>>, _> = chunk
            .iter()
            .map(|p| read_image_file(p, config.image_size))
            .collect();
        let images = match images {
            Ok(images) => images,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let probs = softmax(model.forward(batcher.images(&images, &device)), 1);
        let probs: Vec<f32> = probs
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .expect("f32 data");
        let classes = config.classes.len();
        for (path, row) in chunk.iter().zip(probs.chunks(classes)) {
            let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            let shown: Vec<String> = ranked[..top]
                .iter()
                .map(|(c, p)| format!("{} {:.4}", config.classes[*c], p))
                .collect();
            println!("{}: {}", path.display(), shown.join(", "));
        }
    }
    ExitCode::SUCCESS
}
