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
