//! [`Schedule`]: linear warmup, then cosine decay or step decay, stepped per optimizer step.

use burn::optim::LearningRate;
use burn::optim::lr_scheduler::{LrScheduler, LrSchedulerRecord};
use serde::{Deserialize, Serialize};

/// The decay after the warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Half a cosine from the peak to 0.
    Cosine,
    /// Divide by 10 at 30%, 60% and 80% of training (the paper's ImageNet recipe, 30/60/80
    /// of 100 epochs).
    Step,
}

/// The learning rate of each optimizer step. Its state (the step count) is saved in the
/// checkpoints, so a resumed run continues the same curve.
///
/// Only the step count is saved: the curve is rebuilt from the options when a run resumes. With
/// the same `--epochs` it is the same curve; with a raised `--epochs` the total grows, and the
/// resumed steps follow the curve of a run that had the new total from the start (the warmup,
/// in epochs, is unchanged). Cosine: the rate at the resumed step is that longer cosine's, so it
/// jumps up from where the old one had brought it, then decays to 0 at the new last step.
/// Step: the divisions by 10 move to 30%, 60% and 80% of the new total, so the rate can go back
/// up by a factor of 10 or more.
#[derive(Clone, Debug)]
pub struct Schedule {
    peak: f64,
    warmup: usize,
    total: usize,
    decay: Decay,
    step: usize,
}

impl Schedule {
    /// A schedule over `total` optimizer steps reaching `peak` after `warmup` steps.
    pub fn new(peak: f64, warmup: usize, total: usize, decay: Decay) -> Self {
        Self {
            peak,
            warmup: warmup.min(total),
            total: total.max(1),
            decay,
            step: 0,
        }
    }

    /// The learning rate at optimizer step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        match self.decay {
            Decay::Cosine => {
                let span = (self.total - self.warmup).max(1) as f64;
                let t = ((step - self.warmup) as f64 / span).min(1.0);
                0.5 * self.peak * (1.0 + (core::f64::consts::PI * t).cos())
            }
            Decay::Step => {
                let passed = [0.3, 0.6, 0.8]
                    .iter()
                    .filter(|&&f| step as f64 >= f * self.total as f64)
                    .count();
                self.peak * 0.1f64.powi(passed as i32)
            }
        }
    }
}

impl LrScheduler for Schedule {
    fn step(&mut self) -> LearningRate {
        super::fault::before_step(self.step);
        let lr = self.at(self.step);
        self.step += 1;
        lr
    }

    fn to_record(&self) -> LrSchedulerRecord {
        LrSchedulerRecord::new().with_scalar("step", self.step as u64)
    }

    fn load_record(&mut self, record: LrSchedulerRecord) {
        if let Some(step) = record.scalar::<u64>("step") {
            self.step = step as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `--resume` help and docs/training.md say a raised `--epochs` does.
    #[test]
    fn raised_epochs_rebuild_the_curve() {
        let steps = 100; // per epoch
        let six = Schedule::new(1.0, steps, 6 * steps, Decay::Cosine);
        let twelve = Schedule::new(1.0, steps, 12 * steps, Decay::Cosine);
        // The six-epoch run ends near 0; resumed with --epochs 12, its next step is at 57%.
        assert!(six.at(6 * steps - 1) < 1e-3);
        assert!((twelve.at(6 * steps) - 0.571).abs() < 1e-3);
        assert!(twelve.at(12 * steps - 1) < 1e-4);
        // The warmup (in steps) does not change.
        assert_eq!(six.at(steps / 2), twelve.at(steps / 2));

        let six = Schedule::new(1.0, steps, 6 * steps, Decay::Step);
        let twelve = Schedule::new(1.0, steps, 12 * steps, Decay::Step);
        assert!((six.at(6 * steps - 1) - 1e-3).abs() < 1e-12);
        assert!((twelve.at(6 * steps) - 0.1).abs() < 1e-12);
    }

    /// The step count is what a checkpoint holds, and all the state there is.
    #[test]
    fn the_record_restores_the_position() {
        let mut a = Schedule::new(1.0, 10, 100, Decay::Cosine);
        for _ in 0..37 {
            a.step();
        }
        let mut b = Schedule::new(1.0, 10, 100, Decay::Cosine);
        b.load_record(a.to_record());
        assert_eq!(a.step(), b.step());
    }
}
