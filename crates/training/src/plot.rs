//! PNG plots of a run (`curves.png`) and of the batch-size study (`study.png`), drawn with
//! plotters' bitmap backend and an embedded font (no system fonts needed).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::EpochMetrics;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is ours and valid; a failure would only lose the labels.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn range_of(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    (lo - pad, hi + pad)
}

/// One panel: metric against epoch, train and valid.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    epochs: &[EpochMetrics],
    train: impl Fn(&EpochMetrics) -> Option<f64>,
    valid: impl Fn(&EpochMetrics) -> Option<f64>,
) -> PlotResult {
    let series = |f: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let (train, valid) = (series(&train), series(&valid));
    let (lo, hi) = range_of(train.iter().chain(&valid).map(|p| p.1));
    let last = epochs.last().map_or(1, |e| e.epoch).max(2) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(1f64..last, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()?;
    for (points, colour, name) in [(train, BLUE, "train"), (valid, RED, "valid")] {
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// `curves.png`: loss and top-1 accuracy per epoch, train against valid.
pub fn curves(path: &Path, epochs: &[EpochMetrics]) -> PlotResult {
    register();
    let root = BitMapBackend::new(path, (1100, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    panel(&left, "loss", epochs, |e| e.train_loss, |e| e.valid_loss)?;
    panel(
        &right,
        "top-1 accuracy (%)",
        epochs,
        |e| e.train_accuracy,
        |e| e.valid_accuracy,
    )?;
    root.present()?;
    Ok(())
}

/// One line of the study plot.
pub struct StudyLine {
    /// Legend.
    pub name: String,
    /// `(batch size, validation error in percent)`.
    pub points: Vec<(usize, f64)>,
    /// Index into the plot's colours: a run and its reference share one.
    pub colour: usize,
    /// Drawn dashed with hollow markers (a reference, e.g. the PyTorch mirror's runs).
    pub dashed: bool,
}

/// `study.png`: validation error against images per batch (log scale), one line per norm.
pub fn study(path: &Path, title: &str, lines: &[StudyLine]) -> PlotResult {
    register();
    let root = BitMapBackend::new(path, (720, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let sizes: Vec<usize> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    let (min_b, max_b) = (
        *sizes.iter().min().unwrap_or(&1) as f64,
        *sizes.iter().max().unwrap_or(&2) as f64,
    );
    let mut ticks: Vec<f64> = sizes.iter().map(|&b| b as f64).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    let (lo, hi) = range_of(lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 20))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            // Ticks at the batch sizes themselves: a log axis's own ticks skip 2, 4, 8.
            ((min_b / 1.3)..(max_b * 1.3))
                .log_scale()
                .with_key_points(ticks),
            lo.max(0.0)..hi,
        )?;
    chart
        .configure_mesh()
        .x_desc("images per batch")
        .y_desc("validation error (%)")
        .x_label_formatter(&|v| format!("{}", v.round()))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()?;
    let colours = [RED, BLUE, GREEN, MAGENTA, CYAN];
    for line in lines {
        let mut points: Vec<(f64, f64)> = line.points.iter().map(|&(b, e)| (b as f64, e)).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let colour = colours[line.colour % colours.len()];
        let style = colour.stroke_width(2);
        let series = if line.dashed {
            chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))?
        } else {
            chart.draw_series(LineSeries::new(points.clone(), style))?
        };
        let dashed = line.dashed;
        series.label(line.name.clone()).legend(move |(x, y)| {
            let end = if dashed { x + 8 } else { x + 18 };
            PathElement::new(vec![(x, y), (end, y)], style)
        });
        let marker = if line.dashed {
            colour.stroke_width(2)
        } else {
            colour.filled()
        };
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, marker)))?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
