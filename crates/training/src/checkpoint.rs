//! The checkpoints of `checkpoint/`, written so that a run killed at any moment leaves a
//! complete epoch to resume from.
//!
//! burn-train saves an epoch's model, optimizer and scheduler through three checkpointers, each
//! on its own thread, and deletes older epochs through each of them separately. Here:
//!
//! - each file is written to `NAME.tmp`, flushed to disk and renamed, so a file under its
//!   final name is complete;
//! - an epoch is deleted only once a newer epoch has all three files, whichever thread asks.
//!   The threads run at their own pace: deleting `model-1` as soon as `model-2` is written
//!   would leave no complete epoch while `optim-2` is still being written.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use burn::optim::OptimizerRecord;
use burn::optim::lr_scheduler::LrSchedulerRecord;
use burn::store::ModuleRecord;
use burn::train::checkpoint::{Checkpoint, Checkpointer, CheckpointerError};

use super::{TrainError, fault};

/// The files of an epoch: `KIND-EPOCH.bpk`.
pub(crate) const KINDS: [&str; 3] = ["model", "optim", "scheduler"];

fn file(dir: &Path, kind: &str, epoch: usize) -> PathBuf {
    dir.join(format!("{kind}-{epoch}.bpk"))
}

/// The epochs of `dir` (a `checkpoint/` directory) whose three files are all there.
pub(crate) fn complete_epochs(dir: &Path) -> Vec<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_prefix("model-")?
                .strip_suffix(".bpk")?
                .parse::<usize>()
                .ok()
        })
        .filter(|&n| KINDS.iter().all(|kind| file(dir, kind, n).is_file()))
        .collect()
}

/// `path` with `.tmp` added to its name.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `bytes` to `path` through a temporary file that is flushed to disk before it is
/// renamed over `path`: a reader, or a run resumed after a crash, sees the old file or the
/// new one, never part of one. `midway` runs when half the bytes are written (the crash
/// tests stop there).
pub(crate) fn write_durably(path: &Path, bytes: &[u8], midway: impl FnOnce()) -> io::Result<()> {
    let tmp = temporary(path);
    let mut file = File::create(&tmp)?;
    let (first, second) = bytes.split_at(bytes.len() / 2);
    file.write_all(first)?;
    midway();
    file.write_all(second)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable once the directory is flushed (POSIX).
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Removes the `*.tmp` files a killed run left in `dir`.
pub(crate) fn remove_temporaries(dir: &Path) -> Result<(), TrainError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "tmp") && path.is_file() {
            std::fs::remove_file(&path).map_err(|e| TrainError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Reads the three files of `epoch`, so that a damaged checkpoint is reported before
/// training rather than as a panic inside burn-train.
pub(crate) fn check_epoch(dir: &Path, epoch: usize) -> Result<(), TrainError> {
    fn load<R: Checkpoint>(path: PathBuf) -> Result<(), TrainError> {
        R::load(path.clone())
            .map(drop)
            .map_err(|e| TrainError::io(&path, format!("unreadable checkpoint: {e}")))
    }
    load::<ModuleRecord>(file(dir, "model", epoch))?;
    load::<OptimizerRecord>(file(dir, "optim", epoch))?;
    load::<LrSchedulerRecord>(file(dir, "scheduler", epoch))
}

/// The checkpoint directory the three checkpointers share.
struct Shared {
    dir: PathBuf,
    /// Epochs burn-train asked to delete, kept until a newer epoch is complete.
    pending: Mutex<BTreeSet<usize>>,
}

impl Shared {
    fn collect(&self) -> io::Result<()> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(newest) = complete_epochs(&self.dir).into_iter().max() else {
            return Ok(());
        };
        let ready: Vec<usize> = pending.range(..newest).copied().collect();
        for epoch in ready {
            for kind in KINDS {
                match std::fs::remove_file(file(&self.dir, kind, epoch)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            pending.remove(&epoch);
        }
        Ok(())
    }
}

/// One of the three checkpointers (model, optimizer, scheduler) of a `checkpoint/` directory.
pub(crate) struct DurableCheckpointer {
    shared: Arc<Shared>,
    kind: &'static str,
}

/// The model, optimizer and scheduler checkpointers of `dir`.
pub(crate) fn checkpointers(dir: &Path) -> Result<[DurableCheckpointer; 3], TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        pending: Mutex::new(BTreeSet::new()),
    });
    Ok(KINDS.map(|kind| DurableCheckpointer {
        shared: shared.clone(),
        kind,
    }))
}

impl<R: Checkpoint> Checkpointer<R> for DurableCheckpointer {
    fn save(&self, epoch: usize, record: R) -> Result<(), CheckpointerError> {
        let bytes = record
            .checkpoint_into_bytes()
            .map_err(CheckpointerError::Record)?;
        write_durably(&file(&self.shared.dir, self.kind, epoch), &bytes, || {
            fault::mid_checkpoint(self.kind, epoch)
        })
        .map_err(CheckpointerError::IOError)?;
        self.shared.collect().map_err(CheckpointerError::IOError)
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
        R::load(file(&self.shared.dir, self.kind, epoch))
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(epoch);
        self.shared.collect().map_err(CheckpointerError::IOError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("gn-burn-checkpoint-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record(value: u64) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", value)
    }

    fn save(c: &DurableCheckpointer, epoch: usize) {
        Checkpointer::<LrSchedulerRecord>::save(c, epoch, record(epoch as u64)).unwrap();
    }

    fn delete(c: &DurableCheckpointer, epoch: usize) {
        Checkpointer::<LrSchedulerRecord>::delete(c, epoch).unwrap();
    }

    /// The three checkpointers at different paces: an epoch goes only when a newer one is
    /// complete, so there is always a complete epoch once the first one is.
    #[test]
    fn an_epoch_is_deleted_only_after_a_newer_one_is_complete() {
        let dir = temp_dir("order");
        let [model, optim, scheduler] = checkpointers(&dir).unwrap();
        for c in [&model, &optim, &scheduler] {
            save(c, 1);
        }
        assert_eq!(complete_epochs(&dir), [1]);
        // The model thread runs ahead: saves epoch 2 and asks to delete epoch 1.
        save(&model, 2);
        delete(&model, 1);
        assert_eq!(complete_epochs(&dir), [1]);
        assert!(file(&dir, "model", 1).is_file());
        save(&optim, 2);
        delete(&optim, 1);
        assert_eq!(complete_epochs(&dir), [1]);
        // The last file of epoch 2 lands: epoch 1 goes, all three of its files.
        save(&scheduler, 2);
        assert_eq!(complete_epochs(&dir), [2]);
        for kind in KINDS {
            assert!(!file(&dir, kind, 1).exists(), "{kind}-1");
        }
        delete(&scheduler, 1);
        // What was saved reads back.
        let back: LrSchedulerRecord = Checkpointer::restore(&scheduler, 2).unwrap();
        assert_eq!(back.scalar::<u64>("step"), Some(2));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_replace_whole_files() {
        let dir = temp_dir("durable");
        let path = dir.join("a.json");
        write_durably(&path, b"first", || {}).unwrap();
        // Stopped halfway: the temporary holds half, the file is still the old one.
        let stopped = std::panic::catch_unwind(|| {
            write_durably(&path, b"second version", || panic!("killed")).unwrap();
        });
        assert!(stopped.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(std::fs::read(dir.join("a.json.tmp")).unwrap(), b"second ");
        remove_temporaries(&dir).unwrap();
        assert!(!dir.join("a.json.tmp").exists());
        write_durably(&path, b"second version", || {}).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second version");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
