//! Training-time augmentation: random crop with zero padding and horizontal flip (the standard
//! CIFAR / ImageNet-style recipe), each configurable, or none at all (the batcher's
//! `augmentation: None`).

use serde::{Deserialize, Serialize};

use super::rng::Rng;

/// The augmentation of training images.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Zero padding on each side before a random crop back to the original size (0: no crop,
    /// no shift).
    pub pad: usize,
    /// Probability of a horizontal flip (0: never, 1: always).
    pub flip_prob: f64,
}

impl Augmentation {
    /// The default flip probability.
    pub const FLIP_PROB: f64 = 0.5;

    /// Padding of 1/8 of the side (4 pixels at 32x32) and flips with probability 1/2.
    pub fn standard(size: usize) -> Self {
        Self {
            pad: Self::standard_pad(size),
            flip_prob: Self::FLIP_PROB,
        }
    }

    /// The default padding for images of `size`: 1/8 of the side.
    pub fn standard_pad(size: usize) -> usize {
        size / 8
    }

    /// Applies the augmentation to `3 x size x size` channel-major pixels.
    ///
    /// The draws, in order: the crop's column and row offsets, each uniform in `0..=2 * pad`
    /// (none when `pad` is 0), then, when `flip_prob > 0`, a uniform `u` in `[0, 1)` with 53
    /// bits; the image is flipped when `u < flip_prob`.
    pub(crate) fn apply(&self, pixels: &[u8], size: usize, rng: &mut Rng) -> Vec<u8> {
        let (ox, oy) = if self.pad > 0 {
            (rng.below(2 * self.pad + 1), rng.below(2 * self.pad + 1))
        } else {
            (self.pad, self.pad)
        };
        let flip = self.flip_prob > 0.0 && rng.unit_f64() < self.flip_prob;
        let mut out = vec![0u8; pixels.len()];
        for c in 0..3 {
            for y in 0..size {
                // Source row in the padded image is y + oy, i.e. y + oy - pad in the original.
                let sy = (y + oy).wrapping_sub(self.pad);
                if sy >= size {
                    continue;
                }
                for x in 0..size {
                    let tx = if flip { size - 1 - x } else { x };
                    let sx = (tx + ox).wrapping_sub(self.pad);
                    if sx < size {
                        out[(c * size + y) * size + x] = pixels[(c * size + sy) * size + sx];
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 8;

    /// An image whose every pixel is distinct (within a channel) and not mirror-symmetric.
    fn image() -> Vec<u8> {
        (0..3 * SIZE * SIZE).map(|i| (i % 251) as u8 + 1).collect()
    }

    fn mirrored(pixels: &[u8]) -> Vec<u8> {
        let mut out = pixels.to_vec();
        for row in out.chunks_mut(SIZE) {
            row.reverse();
        }
        out
    }

    fn augmented(aug: Augmentation, stream: u64) -> Vec<u8> {
        aug.apply(&image(), SIZE, &mut Rng::new(&[7, 1, stream]))
    }

    #[test]
    fn flip_probability_zero_never_flips_and_one_always_does() {
        let never = Augmentation {
            pad: 0,
            flip_prob: 0.0,
        };
        let always = Augmentation {
            pad: 0,
            flip_prob: 1.0,
        };
        for stream in 0..500 {
            assert_eq!(augmented(never, stream), image(), "stream {stream}");
            assert_eq!(
                augmented(always, stream),
                mirrored(&image()),
                "stream {stream}"
            );
        }
    }

    #[test]
    fn flips_at_the_given_rate() {
        let n = 4000;
        for p in [0.1, 0.5, 0.9] {
            let aug = Augmentation {
                pad: 0,
                flip_prob: p,
            };
            let flips = (0..n)
                .filter(|&s| augmented(aug, s) == mirrored(&image()))
                .count() as f64;
            // Binomial(n, p): 5 standard deviations.
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (flips - n as f64 * p).abs() < 5.0 * sd,
                "p {p}: {flips} flips of {n}"
            );
        }
    }

    #[test]
    fn no_padding_means_no_shift() {
        let aug = Augmentation {
            pad: 0,
            flip_prob: 0.0,
        };
        for stream in 0..200 {
            assert_eq!(augmented(aug, stream), image());
        }
    }

    #[test]
    fn padded_crops_shift_by_every_offset_and_fill_with_zeros() {
        let pad = 2;
        let aug = Augmentation {
            pad,
            flip_prob: 0.0,
        };
        let source = image();
        let mut seen = std::collections::HashSet::new();
        for stream in 0..500 {
            let out = augmented(aug, stream);
            // Find the shift (dx, dy) in -pad..=pad that explains the output.
            let shift = (-(pad as isize)..=pad as isize)
                .flat_map(|dy| (-(pad as isize)..=pad as isize).map(move |dx| (dx, dy)))
                .find(|&(dx, dy)| {
                    (0..3).all(|c| {
                        (0..SIZE as isize).all(|y| {
                            (0..SIZE as isize).all(|x| {
                                let (sx, sy) = (x + dx, y + dy);
                                let inside = (0..SIZE as isize).contains(&sx)
                                    && (0..SIZE as isize).contains(&sy);
                                let expected = if inside {
                                    source[(c * SIZE + sy as usize) * SIZE + sx as usize]
                                } else {
                                    0
                                };
                                out[(c * SIZE + y as usize) * SIZE + x as usize] == expected
                            })
                        })
                    })
                })
                .unwrap_or_else(|| panic!("stream {stream}: not a shifted copy"));
            seen.insert(shift);
        }
        assert_eq!(seen.len(), (2 * pad + 1) * (2 * pad + 1));
    }

    #[test]
    fn the_standard_augmentation_is_today_s() {
        assert_eq!(
            Augmentation::standard(32),
            Augmentation {
                pad: 4,
                flip_prob: 0.5
            }
        );
    }
}
