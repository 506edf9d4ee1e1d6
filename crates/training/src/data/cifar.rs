//! CIFAR-10 in its binary format: `data_batch_1.bin` .. `data_batch_5.bin` (training) and
//! `test_batch.bin` (validation), each a sequence of 3073-byte records (a label byte, then
//! the 32x32 red, green and blue planes).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::folder::{InMemoryImages, resize_chw};
use super::{DataError, Splits};

/// CIFAR-10's class names, by label.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const SIDE: usize = 32;
const RECORD: usize = 1 + 3 * SIDE * SIDE;
const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
const TEST_FILE: &str = "test_batch.bin";

/// Reads CIFAR-10 from `dir` (the extracted `cifar-10-batches-bin` directory, or a directory
/// containing it), resized to `image_size` if given and not 32.
pub fn read_cifar10(dir: &Path, image_size: Option<usize>) -> Result<Splits, DataError> {
    if !dir.is_dir() {
        return Err(DataError::io(
            dir,
            "no such directory (expected the extracted CIFAR-10 binary version, cifar-10-batches-bin)",
        ));
    }
    let nested = dir.join("cifar-10-batches-bin");
    let dir = if !dir.join(TEST_FILE).exists() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    };
    let size = image_size.unwrap_or(SIDE);
    let train_paths: Vec<PathBuf> = TRAIN_FILES.iter().map(|f| dir.join(f)).collect();
    let train = read_records(&train_paths, size)?;
    let valid = read_records(&[dir.join(TEST_FILE)], size)?;
    Ok(Splits {
        train: Arc::new(train),
        valid: Arc::new(valid),
        classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        image_size: size,
    })
}

fn read_records(paths: &[PathBuf], size: usize) -> Result<InMemoryImages, DataError> {
    let mut images = InMemoryImages::new(size);
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| {
            DataError::io(
                path,
                format!("{e} (expected a CIFAR-10 binary batch of 3073-byte records)"),
            )
        })?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(DataError::format(
                path,
                format!(
                    "truncated or not a CIFAR-10 binary batch: {} bytes is not a whole number of \
                     {RECORD}-byte records (label byte + 32x32x3 pixels)",
                    bytes.len()
                ),
            ));
        }
        for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
            let label = record[0] as usize;
            if label >= CIFAR10_CLASSES.len() {
                return Err(DataError::format(
                    path,
                    format!("record {i} has label {label}; CIFAR-10 labels are 0 to 9"),
                ));
            }
            let pixels = &record[1..];
            if size == SIDE {
                images.push(pixels, label);
            } else {
                images.push(&resize_chw(pixels, SIDE, size), label);
            }
        }
    }
    Ok(images)
}
