//! The dataset readers: CIFAR-10's binary format on committed fixture files
//! (`tools/gen_cifar10_fixture.py`), image-folder trees generated here, the synthetic dataset,
//! and every error case naming the file and what was expected.

use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use training::data::{
    self, DataError, DataOptions, DatasetKind, ImageFolder, SyntheticDataset, read_cifar10,
};

fn fixture(rel: &str) -> PathBuf {
    // The directory cargo runs the test from: a target directory shared between checkouts can
    // hold a binary built in another one, whose compile-time path may be gone.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("tests/fixtures")
        .join(rel)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gn-burn-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The fixture's pixel formula (see the generator).
fn expected_pixel(n: usize, c: usize, y: usize, x: usize) -> u8 {
    ((n * 31 + c * 67 + y * 5 + x * 3) % 256) as u8
}

#[test]
fn cifar10_reads_every_record() {
    // The parent of cifar-10-batches-bin works as well as the directory itself.
    for dir in [fixture("cifar10"), fixture("cifar10/cifar-10-batches-bin")] {
        let splits = read_cifar10(&dir, None).unwrap();
        assert_eq!(splits.train.len(), 15);
        assert_eq!(splits.valid.len(), 4);
        assert_eq!(splits.image_size, 32);
        assert_eq!(splits.classes[0], "airplane");
        assert_eq!(splits.classes[9], "truck");
        for (dataset, first) in [(&splits.train, 0), (&splits.valid, 100)] {
            for i in 0..dataset.len() {
                let item = dataset.get(i).unwrap();
                let n = first + i;
                assert_eq!(item.label, n % 10);
                for (c, y, x) in [(0, 0, 0), (1, 5, 7), (2, 31, 31)] {
                    assert_eq!(
                        item.pixels[(c * 32 + y) * 32 + x],
                        expected_pixel(n, c, y, x)
                    );
                }
            }
        }
    }
}

#[test]
fn cifar10_resizes_to_the_image_size() {
    let splits = read_cifar10(&fixture("cifar10"), Some(16)).unwrap();
    assert_eq!(splits.image_size, 16);
    assert_eq!(splits.train.get(0).unwrap().pixels.len(), 3 * 16 * 16);
}

#[test]
fn cifar10_truncated_file_is_named() {
    let err = read_cifar10(&fixture("cifar10/truncated"), None)
        .err()
        .expect("truncated file");
    let message = err.to_string();
    assert!(matches!(err, DataError::Format { .. }), "{message}");
    assert!(message.contains("data_batch_3.bin"), "{message}");
    assert!(
        message.contains("4573 bytes is not a whole number of 3073-byte records"),
        "{message}"
    );
}

#[test]
fn cifar10_bad_label_is_named() {
    let message = read_cifar10(&fixture("cifar10/bad_label"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("test_batch.bin"), "{message}");
    assert!(message.contains("record 0 has label 12"), "{message}");
}

#[test]
fn cifar10_missing_directory_and_file() {
    let message = read_cifar10(Path::new("/no/such/cifar"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("/no/such/cifar"), "{message}");
    assert!(message.contains("cifar-10-batches-bin"), "{message}");

    let dir = temp_dir("cifar-missing");
    for name in ["data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"] {
        std::fs::copy(
            fixture("cifar10/cifar-10-batches-bin").join(name),
            dir.join(name),
        )
        .unwrap();
    }
    let message = read_cifar10(&dir, None).err().unwrap().to_string();
    assert!(message.contains("data_batch_3.bin"), "{message}");
    assert!(
        message.contains("expected a CIFAR-10 binary batch"),
        "{message}"
    );
}

fn write_png(path: &Path, rgb: [u8; 3], size: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(size, size, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

fn write_tree(root: &Path) {
    write_png(&root.join("train/red/a.png"), [250, 10, 10], 20);
    write_png(&root.join("train/red/b.png"), [240, 20, 20], 24);
    write_png(&root.join("train/blue/a.png"), [10, 10, 250], 30);
    image::RgbImage::from_pixel(40, 20, image::Rgb([5, 5, 245]))
        .save(root.join("train/blue/wide.jpg"))
        .unwrap();
    write_png(&root.join("valid/red/c.png"), [245, 15, 15], 16);
    write_png(&root.join("valid/blue/c.png"), [15, 15, 245], 16);
}

#[test]
fn folder_reads_classes_and_images() {
    let root = temp_dir("folder-ok");
    write_tree(&root);
    std::fs::write(root.join("train/red/notes.txt"), "not an image, ignored").unwrap();
    let splits = ImageFolder::open_splits(&root, 12).unwrap();
    assert_eq!(splits.classes, ["blue", "red"]);
    assert_eq!(splits.train.len(), 4);
    assert_eq!(splits.valid.len(), 2);
    for i in 0..splits.train.len() {
        let item = splits.train.get(i).unwrap();
        assert_eq!(item.pixels.len(), 3 * 12 * 12);
        // Solid images stay solid after resizing: red is bright in channel 0, blue in 2.
        let (r, b) = (item.pixels[0] as i32, item.pixels[2 * 144] as i32);
        match splits.classes[item.label].as_str() {
            "red" => assert!(r > 200 && b < 50, "{r} {b}"),
            _ => assert!(b > 200 && r < 50, "{r} {b}"),
        }
    }
}

fn folder_error(setup: impl FnOnce(&Path)) -> String {
    let root = temp_dir(&format!("folder-err-{}", rand_suffix()));
    write_tree(&root);
    setup(&root);
    match ImageFolder::open_splits(&root, 12) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("expected an error"),
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

#[test]
fn folder_errors_name_the_problem() {
    let message = ImageFolder::open_splits(Path::new("/no/such/folder"), 12)
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("/no/such/folder") && message.contains("no such directory"),
        "{message}"
    );

    let message = folder_error(|root| std::fs::remove_dir_all(root.join("valid")).unwrap());
    assert!(
        message.contains("valid") && message.contains("missing validation split"),
        "{message}"
    );

    let message = folder_error(|root| std::fs::remove_dir_all(root.join("train")).unwrap());
    assert!(
        message.contains("train") && message.contains("missing training split"),
        "{message}"
    );

    let message = folder_error(|root| std::fs::create_dir_all(root.join("train/green")).unwrap());
    assert!(
        message.contains("train/green") && message.contains("empty class"),
        "{message}"
    );

    let message = folder_error(|root| {
        std::fs::write(root.join("train/red/broken.png"), b"\x89PNG not really").unwrap()
    });
    assert!(
        message.contains("broken.png") && message.contains("unreadable image"),
        "{message}"
    );

    let message = folder_error(|root| write_png(&root.join("valid/green/x.png"), [0, 255, 0], 8));
    assert!(
        message.contains("valid/green") && message.contains("training split does not have"),
        "{message}"
    );
}

#[test]
fn open_requires_a_data_dir() {
    let options = DataOptions {
        kind: DatasetKind::Cifar10,
        dir: None,
        image_size: None,
        seed: 1,
        synthetic_train: 10,
        synthetic_valid: 10,
        limit_train: None,
        limit_valid: None,
    };
    let message = data::open(&options).err().unwrap().to_string();
    assert!(message.contains("--data-dir is required"), "{message}");
}

#[test]
fn synthetic_is_deterministic_and_balanced() {
    let a = SyntheticDataset::new(100, 32, 7, 0);
    let b = SyntheticDataset::new(100, 32, 7, 0);
    let other_seed = SyntheticDataset::new(100, 32, 8, 0);
    let other_split = SyntheticDataset::new(100, 32, 7, 1);
    assert_eq!(a.get(13).unwrap(), b.get(13).unwrap());
    assert_ne!(
        a.get(13).unwrap().pixels,
        other_seed.get(13).unwrap().pixels
    );
    assert_ne!(
        a.get(13).unwrap().pixels,
        other_split.get(13).unwrap().pixels
    );
    let mut counts = [0; 10];
    for i in 0..100 {
        let item = a.get(i).unwrap();
        counts[item.label] += 1;
        assert_eq!(item.pixels.len(), 3 * 32 * 32);
        let (min, max) = item
            .pixels
            .iter()
            .fold((255, 0), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        assert!(max - min > 60, "image {i} has no visible shape");
    }
    assert_eq!(counts, [10; 10]);
    assert!(a.get(100).is_err());
}

/// The synthetic task is not solvable from pixel colours: a nearest-class-mean classifier on
/// raw pixels (a linear model) stays near chance, so a model that learns it learned shapes.
#[test]
fn synthetic_defeats_a_linear_model() {
    let (train, valid) = (
        SyntheticDataset::new(2000, 32, 3, 0),
        SyntheticDataset::new(500, 32, 3, 1),
    );
    let dim = 3 * 32 * 32;
    let mut means = vec![vec![0f64; dim]; 10];
    let mut counts = [0f64; 10];
    for i in 0..train.len() {
        let item = train.get(i).unwrap();
        counts[item.label] += 1.0;
        for (m, &p) in means[item.label].iter_mut().zip(&item.pixels) {
            *m += p as f64;
        }
    }
    for (m, n) in means.iter_mut().zip(counts) {
        m.iter_mut().for_each(|v| *v /= n);
    }
    let correct = (0..valid.len())
        .filter(|&i| {
            let item = valid.get(i).unwrap();
            let distance = |m: &Vec<f64>| -> f64 {
                m.iter()
                    .zip(&item.pixels)
                    .map(|(a, &b)| (a - b as f64).powi(2))
                    .sum()
            };
            let best = (0..10)
                .min_by(|&a, &b| distance(&means[a]).total_cmp(&distance(&means[b])))
                .unwrap();
            best == item.label
        })
        .count();
    let accuracy = correct as f64 / valid.len() as f64;
    assert!(
        accuracy < 0.3,
        "a linear model reaches {accuracy:.2} on the synthetic data"
    );
}
