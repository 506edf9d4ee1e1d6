//! [`EpochLoader`]: a data loader whose order and augmentation are functions of
//! `(seed, epoch, index)`, so that a run resumed after epoch `k` sees exactly the batches an
//! uninterrupted run would have seen, and batches are prepared ahead on a worker thread.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::data::dataset::DatasetError;
use burn::tensor::Device;
use rayon::prelude::*;

use super::rng::Rng;
use super::{ImageBatch, ImageBatcher, ImageDataset};

/// Batches of a dataset in a per-epoch order.
pub struct EpochLoader {
    dataset: ImageDataset,
    batcher: Arc<ImageBatcher>,
    batch_size: usize,
    /// Seed of the shuffling and augmentation; `None` keeps the dataset order.
    seed: Option<u64>,
    /// The number of epochs already iterated.
    epoch: Arc<AtomicUsize>,
    /// The part of each epoch's order this loader yields (for per-device slices).
    range: Range<usize>,
    device: Device,
    /// Batches prepared ahead on a worker thread (0: prepared on the caller's thread).
    prefetch: usize,
}

impl EpochLoader {
    /// A loader over `dataset`. With a `seed` the order is shuffled per epoch and items are
    /// augmented by `batcher` with streams derived from the seed.
    pub fn new(
        dataset: ImageDataset,
        batcher: ImageBatcher,
        batch_size: usize,
        seed: Option<u64>,
        prefetch: usize,
        device: Device,
    ) -> Self {
        let len = dataset.len();
        Self {
            dataset,
            batcher: Arc::new(batcher),
            batch_size: batch_size.max(1),
            seed,
            epoch: Arc::new(AtomicUsize::new(0)),
            range: 0..len,
            device,
            prefetch,
        }
    }

    /// Continue as if `epochs` epochs had already been iterated (resuming a run).
    pub fn starting_at_epoch(self, epochs: usize) -> Self {
        self.epoch.store(epochs, Ordering::SeqCst);
        self
    }

    fn order(&self, epoch: usize) -> Vec<usize> {
        let order = match self.seed {
            Some(seed) => {
                Rng::new(&[seed, 0x5348_5546, epoch as u64]).permutation(self.dataset.len())
            }
            None => (0..self.dataset.len()).collect(),
        };
        order[self.range.clone()].to_vec()
    }

    fn copy(&self, device: &Device, range: Range<usize>, epoch: Arc<AtomicUsize>) -> Self {
        Self {
            dataset: self.dataset.clone(),
            batcher: self.batcher.clone(),
            batch_size: self.batch_size,
            seed: self.seed,
            epoch,
            range,
            device: device.clone(),
            prefetch: self.prefetch,
        }
    }
}

/// Everything a worker needs to build the batches of one epoch.
struct EpochJob {
    dataset: ImageDataset,
    batcher: Arc<ImageBatcher>,
    device: Device,
    seed: u64,
    epoch: usize,
}

impl EpochJob {
    fn batch(&self, indices: &[usize]) -> Result<ImageBatch, DatasetError> {
        let items = indices
            .par_iter()
            .map(|&i| {
                let item = self.dataset.get(i)?;
                Ok((item, [self.seed, self.epoch as u64, i as u64]))
            })
            .collect::<Result<Vec<_>, DatasetError>>()?;
        Ok(self.batcher.batch(&items, &self.device))
    }
}

struct EpochIter {
    batches: std::vec::IntoIter<Vec<usize>>,
    job: Arc<EpochJob>,
    prefetched: Option<Mutex<Receiver<Result<ImageBatch, DatasetError>>>>,
    processed: usize,
    total: usize,
}

impl Iterator for EpochIter {
    type Item = Result<ImageBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let indices = self.batches.next()?;
        self.processed += indices.len();
        match &self.prefetched {
            Some(rx) => rx.lock().ok()?.recv().ok(),
            None => Some(self.job.batch(&indices)),
        }
    }
}

impl DataLoaderIterator<ImageBatch> for EpochIter {
    fn progress(&self) -> Progress {
        Progress::new(self.processed, self.total, Some("items".into()))
    }
}

impl DataLoader<ImageBatch> for EpochLoader {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<ImageBatch> + 'a> {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst);
        let order = self.order(epoch);
        let batches: Vec<Vec<usize>> = order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .collect();
        let job = Arc::new(EpochJob {
            dataset: self.dataset.clone(),
            batcher: self.batcher.clone(),
            device: self.device.clone(),
            seed: self.seed.unwrap_or(0),
            epoch,
        });
        let prefetched = (self.prefetch > 0).then(|| {
            let (tx, rx) = sync_channel(self.prefetch);
            let (job, batches) = (job.clone(), batches.clone());
            std::thread::spawn(move || {
                for indices in batches {
                    if tx.send(job.batch(&indices)).is_err() {
                        break; // The consumer stopped early.
                    }
                }
            });
            Mutex::new(rx)
        });
        Box::new(EpochIter {
            batches: batches.into_iter(),
            job,
            prefetched,
            processed: 0,
            total: order.len(),
        })
    }

    fn num_items(&self) -> usize {
        self.range.len()
    }

    fn to_device(&self, device: &Device) -> Arc<dyn DataLoader<ImageBatch>> {
        Arc::new(self.copy(device, self.range.clone(), self.epoch.clone()))
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<ImageBatch>> {
        let range = self.range.start + start..self.range.start + end.min(self.range.len());
        let epoch = Arc::new(AtomicUsize::new(self.epoch.load(Ordering::SeqCst)));
        Arc::new(self.copy(&self.device, range, epoch))
    }
}
