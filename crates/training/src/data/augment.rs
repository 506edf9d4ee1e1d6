//! Training-time augmentation: random crop with zero padding and horizontal flip (the standard
//! CIFAR / ImageNet-style recipe).

use serde::{Deserialize, Serialize};

use super::rng::Rng;

/// The augmentation of training images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Zero padding on each side before a random crop back to the original size (0: no crop).
    pub pad: usize,
    /// Flip horizontally with probability 1/2.
    pub flip: bool,
}

impl Augmentation {
    /// Padding of 1/8 of the side (4 pixels at 32x32) and flips.
    pub fn standard(size: usize) -> Self {
        Self {
            pad: size / 8,
            flip: true,
        }
    }

    /// Applies the augmentation to `3 x size x size` channel-major pixels.
    pub(crate) fn apply(&self, pixels: &[u8], size: usize, rng: &mut Rng) -> Vec<u8> {
        let (ox, oy) = if self.pad > 0 {
            (rng.below(2 * self.pad + 1), rng.below(2 * self.pad + 1))
        } else {
            (self.pad, self.pad)
        };
        let flip = self.flip && rng.below(2) == 1;
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
