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
        "norm,batch_size,learning_rate,final_valid_error,best_valid_error,epochs,wall_seconds,\
         mirror_final_valid_error,mirror_best_valid_error"
    );
    assert_eq!(lines.len(), 5);
    assert!(
        lines[1].starts_with("gn,8,") && lines[4].starts_with("bn,4,"),
        "{csv}"
    );
    // No mirror runs yet: empty columns.
    assert!(lines[1].ends_with(",,"), "{csv}");

    let png = std::fs::read(dir.join("study.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000);

    // The PyTorch mirror's runs (what tools/torch_study.sh writes) join the study on replot.
    let mirror = study::mirror_dir(&dir, NormChoice::Gn, 8);
    assert_eq!(mirror, dir.join("torch").join("gn-b8"));
    std::fs::create_dir_all(&mirror).unwrap();
    std::fs::write(
        mirror.join("metrics.json"),
        r#"{"epochs": [], "valid_accuracy": 61.5, "best_valid_accuracy": 70.25, "best_epoch": 1}"#,
    )
    .unwrap();
    let replotted = study::replot(&dir).unwrap();
    let with_mirror: Vec<_> = replotted
        .entries
        .iter()
        .map(|e| (e.mirror_final_valid_error, e.mirror_best_valid_error))
        .collect();
    assert_eq!(
        with_mirror,
        [
            (Some(38.5), Some(29.75)),
            (None, None),
            (None, None),
            (None, None)
        ]
    );
    let csv = std::fs::read_to_string(dir.join("study.csv")).unwrap();
    assert!(
        csv.lines().nth(1).unwrap().ends_with(",38.5000,29.7500"),
        "{csv}"
    );
    let saved: Study = read_json(&dir.join("study.json")).unwrap();
    assert_eq!(saved.entries[0].mirror_final_valid_error, Some(38.5));
    assert_eq!(
        saved.entries[0].final_valid_error,
        study.entries[0].final_valid_error
    );

    // A mirror's metrics.json that is not one is an error naming it, not a silent gap.
    std::fs::write(mirror.join("metrics.json"), "{}").unwrap();
    let err = study::replot(&dir).unwrap_err().to_string();
    assert!(
        err.contains("gn-b8") && err.contains("metrics.json"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
