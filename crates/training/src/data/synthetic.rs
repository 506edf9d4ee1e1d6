//! The embedded default dataset: ten classes of procedurally drawn shapes and textures.
//!
//! Each image has a random background and foreground colour, position, scale, rotation (where
//! it does not define the class) and pixel noise, so that the class is in the shape, not in
//! any pixel or colour: a linear model on the pixels does not solve it, a small CNN does.
//! Images are generated on demand from `(seed, split, index)`: no files, no memory.

use burn::data::dataset::{Dataset, DatasetError};

use super::ImageItem;
use super::rng::Rng;

/// The class names, by label.
pub const SYNTHETIC_CLASSES: [&str; 10] = [
    "disk",
    "ring",
    "square",
    "triangle",
    "plus",
    "cross",
    "horizontal-stripes",
    "vertical-stripes",
    "checkerboard",
    "dots",
];

/// `len` synthetic images of `size x size` for one split.
#[derive(Clone, Debug)]
pub struct SyntheticDataset {
    len: usize,
    size: usize,
    seed: u64,
    split: u64,
}

impl SyntheticDataset {
    /// The split numbered `split` (0 train, 1 valid) of the dataset drawn from `seed`.
    pub fn new(len: usize, size: usize, seed: u64, split: u64) -> Self {
        Self {
            len,
            size,
            seed,
            split,
        }
    }

    /// Draws image `index`: its class is `index % 10`.
    pub fn render(&self, index: usize) -> ImageItem {
        let label = index % SYNTHETIC_CLASSES.len();
        let mut rng = Rng::new(&[self.seed, self.split, index as u64]);
        let n = self.size;
        let bg = random_colour(&mut rng);
        let mut fg = random_colour(&mut rng);
        // Keep the shape visible: push the foreground away from the background.
        let contrast: f32 = (0..3).map(|c| (fg[c] - bg[c]).abs()).sum();
        if contrast < 0.6 {
            for c in 0..3 {
                fg[c] = if bg[c] > 0.5 {
                    bg[c] - 0.5
                } else {
                    bg[c] + 0.5
                };
            }
        }
        let shape = Shape {
            class: label,
            cx: rng.range(0.35, 0.65),
            cy: rng.range(0.35, 0.65),
            radius: rng.range(0.2, 0.34),
            angle: rng.range(0.0, core::f32::consts::TAU),
            jitter: rng.range(-0.2, 0.2),
            period: rng.range(0.09, 0.16),
        };
        let noise = rng.range(0.02, 0.08);
        let mut pixels = vec![0u8; 3 * n * n];
        for y in 0..n {
            for x in 0..n {
                let u = (x as f32 + 0.5) / n as f32;
                let v = (y as f32 + 0.5) / n as f32;
                let inside = shape.contains(u, v);
                for c in 0..3 {
                    let base = if inside { fg[c] } else { bg[c] };
                    let value = (base + noise * rng.normal()).clamp(0.0, 1.0);
                    pixels[(c * n + y) * n + x] = (value * 255.0).round() as u8;
                }
            }
        }
        ImageItem { pixels, label }
    }
}

fn random_colour(rng: &mut Rng) -> [f32; 3] {
    [rng.uniform(), rng.uniform(), rng.uniform()]
}

/// One drawn shape, in unit coordinates.
struct Shape {
    class: usize,
    cx: f32,
    cy: f32,
    radius: f32,
    angle: f32,
    jitter: f32,
    period: f32,
}

impl Shape {
    fn contains(&self, u: f32, v: f32) -> bool {
        let (dx, dy) = (u - self.cx, v - self.cy);
        let r = self.radius;
        let dist = (dx * dx + dy * dy).sqrt();
        // Coordinates in the shape's rotated frame, scaled so the shape spans [-1, 1].
        let rotate = |angle: f32| {
            let (s, c) = angle.sin_cos();
            ((dx * c + dy * s) / r, (-dx * s + dy * c) / r)
        };
        let in_patch = dx.abs() < r && dy.abs() < r;
        match self.class {
            0 => dist < r,
            1 => dist < r && dist > 0.6 * r,
            2 => {
                let (a, b) = rotate(self.angle);
                a.abs() < 0.75 && b.abs() < 0.75
            }
            3 => {
                let (a, b) = rotate(self.angle);
                // An equilateral triangle: inside three half-planes.
                let s3 = 3f32.sqrt();
                b > -0.5 && (s3 * a - b) < 1.0 && (-s3 * a - b) < 1.0
            }
            4 | 5 => {
                // Plus: axis-aligned bars (a small tilt); cross: the same at 45 degrees.
                let base = if self.class == 4 {
                    0.0
                } else {
                    core::f32::consts::FRAC_PI_4
                };
                let (a, b) = rotate(base + 0.3 * self.jitter);
                (a.abs() < 1.0 && b.abs() < 0.28) || (b.abs() < 1.0 && a.abs() < 0.28)
            }
            6 => in_patch && ((v / self.period).floor() as i64).rem_euclid(2) == 0,
            7 => in_patch && ((u / self.period).floor() as i64).rem_euclid(2) == 0,
            8 => {
                let (i, j) = (
                    (u / self.period).floor() as i64,
                    (v / self.period).floor() as i64,
                );
                in_patch && (i + j).rem_euclid(2) == 0
            }
            _ => {
                // Dots on a grid.
                let p = self.period * 1.3;
                let (fu, fv) = ((u / p).fract() - 0.5, (v / p).fract() - 0.5);
                in_patch && (fu * fu + fv * fv).sqrt() < 0.28
            }
        }
    }
}

impl Dataset<ImageItem> for SyntheticDataset {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        if index >= self.len {
            return Err(DatasetError::new(std::io::Error::other(format!(
                "index {index} out of range for {} synthetic images",
                self.len
            ))));
        }
        Ok(self.render(index))
    }

    fn len(&self) -> usize {
        self.len
    }
}
