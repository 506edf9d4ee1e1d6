//! The batch-size study driver on a tiny configuration: one entry per (norm, batch size) in
//! well-formed study.json, study.csv and study.png.

use burn::tensor::Device;
use training::study::{self, Study};
use training::{NormChoice, TrainOptions, read_json};

#[test]
fn tiny_study_writes_its_outputs() {
    let dir = std::env::temp_dir().join(format!("gn-burn-study-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = TrainOptions {
        base_width: 8,
        groups: 8,
        synthetic_train: 48,
        synthetic_valid: 24,
        epochs: 1,
        workers: 0,
        ..TrainOptions::defaults()
    };
    let norms = [NormChoice::Gn, NormChoice::Bn];
    let batch_sizes = [8, 4];
    let study = study::run(&options, &norms, &batch_sizes, &dir, &Device::flex()).unwrap();
    assert_eq!(study.entries.len(), 4);

    let saved: Study = read_json(&dir.join("study.json")).unwrap();
    let pairs: Vec<(NormChoice, usize)> = saved
        .entries
        .iter()
        .map(|e| (e.norm, e.batch_size))
        .collect();
    assert_eq!(
        pairs,
        [
            (NormChoice::Gn, 8),
            (NormChoice::Gn, 4),
            (NormChoice::Bn, 8),
            (NormChoice::Bn, 4)
        ]
    );
    for e in &saved.entries {
        assert!((0.0..=100.0).contains(&e.final_valid_error), "{e:?}");
        assert!(e.best_valid_error <= e.final_valid_error + 1e-9, "{e:?}");
        assert_eq!(e.epochs, 1);
        assert!((e.learning_rate - options.lr * e.batch_size as f64 / 256.0).abs() < 1e-12);
        assert!(e.artifact_dir.join("metrics.json").is_file());
    }
    assert_eq!(saved.paper_resnet50_imagenet.len(), 5);

    let csv = std::fs::read_to_string(dir.join("study.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "norm,batch_size,learning_rate,final_valid_error,best_valid_error,epochs,wall_seconds"
    );
    assert_eq!(lines.len(), 5);
    assert!(
        lines[1].starts_with("gn,8,") && lines[4].starts_with("bn,4,"),
        "{csv}"
    );

    let png = std::fs::read(dir.join("study.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000);
    let _ = std::fs::remove_dir_all(&dir);
}
