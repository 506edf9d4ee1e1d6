//! [`LineRenderer`]: plain progress lines for logs and pipes (burn's TUI is used in a terminal).

use std::collections::HashMap;
use std::time::Instant;

use burn::train::logger::{EvaluationProgressLogger, TrainingProgressLogger};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining,
};

/// Prints a line every tenth of a split and one at its end, with the running metrics.
pub struct LineRenderer {
    names: HashMap<MetricId, String>,
    values: HashMap<String, f64>,
    epoch: usize,
    epochs: usize,
    split: String,
    total: usize,
    next_report: usize,
    started: Instant,
}

impl LineRenderer {
    /// A renderer that prints to standard output.
    pub fn new() -> Self {
        Self {
            names: HashMap::new(),
            values: HashMap::new(),
            epoch: 1,
            epochs: 0,
            split: String::new(),
            total: 0,
            next_report: 0,
            started: Instant::now(),
        }
    }

    fn record(&mut self, state: MetricState) {
        if let MetricState::Numeric(entry, Some(value)) = state {
            let value = match value {
                NumericEntry::Value(v) | NumericEntry::Final(v) => v,
                NumericEntry::Aggregated {
                    aggregated_value, ..
                } => aggregated_value,
            };
            if let Some(name) = self.names.get(&entry.metric_id) {
                self.values.insert(name.clone(), value);
            }
        }
    }

    fn line(&self, done: usize) -> String {
        let mut metrics: Vec<(&String, &f64)> = self.values.iter().collect();
        metrics.sort_by(|a, b| a.0.cmp(b.0));
        let metrics: Vec<String> = metrics.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
        format!(
            "epoch {}/{} {:<5} {:>6}/{:<6} {:>6.1}s  {}",
            self.epoch,
            self.epochs,
            self.split,
            done,
            self.total,
            self.started.elapsed().as_secs_f64(),
            metrics.join("  ")
        )
    }
}

impl Default for LineRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsRendererTraining for LineRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }
}

impl TrainingProgressLogger for LineRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _: Option<usize>,
        _: Option<&str>,
    ) {
        self.epochs = total_epochs;
        self.epoch = starting_epoch.max(1);
    }

    fn update_epoch(&mut self, epoch: usize) {
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        self.split = split.to_string();
        self.total = total_items;
        self.next_report = total_items / 10;
        self.values.clear();
    }

    fn update_split(&mut self, items_processed: usize) {
        if items_processed >= self.next_report && items_processed < self.total {
            println!("{}", self.line(items_processed));
            self.next_report = items_processed + self.total.div_ceil(10);
        }
    }

    fn end_split(&mut self) {
        println!("{}", self.line(self.total));
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for LineRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, _name: &str, _total_items: usize) {}
    fn update_test_progress(&mut self, _items_processed: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRendererEvaluation for LineRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl MetricsRenderer for LineRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id.clone(), definition.name.to_string());
    }
}
