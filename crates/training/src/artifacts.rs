//! The files of a run's artifact directory: written atomically (temporary file flushed to disk,
//! then renamed), so that a run killed at any moment leaves either the old or the new version.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::checkpoint::{complete_epochs, write_durably};

/// Writes `bytes` to `path` atomically: through `PATH.tmp`, flushed to disk, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    write_durably(path, bytes, || {}).map_err(|e| TrainError::io(path, e))
}

/// Serializes `value` as pretty JSON to `path`, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let json = serde_json::to_vec_pretty(value).expect("serializable");
    write_atomic(path, &json)
}

/// Reads a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::io(path, format!("invalid JSON: {e}")))
}

/// The last epoch whose model, optimizer and scheduler checkpoints are all on disk.
pub fn last_complete_epoch(artifact_dir: &Path) -> Option<usize> {
    complete_epochs(&artifact_dir.join("checkpoint"))
        .into_iter()
        .max()
}

/// `runs/<UTC date>-<time>` for a run started now.
pub fn default_artifact_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    PathBuf::from("runs").join(format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    ))
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Points `<parent>/last` at `artifact_dir` (a symbolic link on Unix), so `runs/last` is the
/// newest run. Best effort: a failure only loses the shortcut.
pub fn link_last(artifact_dir: &Path) {
    #[cfg(unix)]
    if let (Some(parent), Some(name)) = (artifact_dir.parent(), artifact_dir.file_name()) {
        let link = parent.join("last");
        let tmp = parent.join(".last.tmp");
        let _ = std::fs::remove_file(&tmp);
        if std::os::unix::fs::symlink(name, &tmp).is_ok() {
            let _ = std::fs::rename(&tmp, &link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
