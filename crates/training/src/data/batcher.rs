//! [`ImageBatcher`]: items to normalized tensors on the training device.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::rng::Rng;
use super::{Augmentation, ImageItem, Normalization};

/// A batch of images and their classes.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    /// Normalized images, `[N, 3, H, W]`.
    pub images: Tensor<4>,
    /// Class indices, `[N]`.
    pub targets: Tensor<1, Int>,
}

/// Builds [`ImageBatch`]es: optional augmentation, then per-channel normalization.
#[derive(Clone, Debug)]
pub struct ImageBatcher {
    /// Side of the images.
    pub size: usize,
    /// The per-channel statistics.
    pub normalization: Normalization,
    /// Training augmentation (`None` for evaluation).
    pub augmentation: Option<Augmentation>,
}

impl ImageBatcher {
    /// The batch of `items`; `streams` seeds each item's augmentation.
    pub(crate) fn batch(&self, items: &[(ImageItem, [u64; 3])], device: &Device) -> ImageBatch {
        let plane = self.size * self.size;
        let mut values = Vec::with_capacity(items.len() * 3 * plane);
        let mut labels = Vec::with_capacity(items.len());
        for (item, stream) in items {
            let augmented;
            let pixels = match &self.augmentation {
                Some(aug) => {
                    augmented = aug.apply(&item.pixels, self.size, &mut Rng::new(stream));
                    &augmented
                }
                None => &item.pixels,
            };
            values.extend(self.normalize(pixels));
            labels.push(item.label as i64);
        }
        ImageBatch {
            images: Tensor::from_data(
                TensorData::new(values, [items.len(), 3, self.size, self.size]),
                device,
            ),
            targets: Tensor::from_data(TensorData::new(labels, [items.len()]), device),
        }
    }

    /// Channel-major pixels (0-255) to normalized floats.
    pub fn normalize<'a>(&'a self, pixels: &'a [u8]) -> impl Iterator<Item = f32> + 'a {
        let plane = self.size * self.size;
        pixels.iter().enumerate().map(move |(i, &p)| {
            let c = i / plane;
            (p as f32 / 255.0 - self.normalization.mean[c]) / self.normalization.std[c]
        })
    }

    /// A batch of images (no augmentation) for inference, `[N, 3, H, W]`.
    pub fn images(&self, images: &[Vec<u8>], device: &Device) -> Tensor<4> {
        let values: Vec<f32> = images.iter().flat_map(|p| self.normalize(p)).collect();
        Tensor::from_data(
            TensorData::new(values, [images.len(), 3, self.size, self.size]),
            device,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without augmentation a training batch holds exactly the normalized pixels (what
    /// `--no-augment` gives); with a zero padding and a zero flip probability too.
    #[test]
    fn no_augmentation_is_the_identity_pipeline() {
        let device = Device::default();
        let size = 8;
        let items: Vec<(ImageItem, [u64; 3])> = (0..4u64)
            .map(|i| {
                let pixels = (0..3 * size * size)
                    .map(|p| ((p as u64 * 7 + i * 31) % 256) as u8)
                    .collect();
                (
                    ImageItem {
                        pixels,
                        label: i as usize,
                    },
                    [42, 3, i],
                )
            })
            .collect();
        let batcher = |augmentation| ImageBatcher {
            size,
            normalization: Normalization {
                mean: [0.5, 0.4, 0.3],
                std: [0.2, 0.25, 0.3],
            },
            augmentation,
        };
        let plain = batcher(None);
        let expected = plain
            .images(
                &items
                    .iter()
                    .map(|(it, _)| it.pixels.clone())
                    .collect::<Vec<_>>(),
                &device,
            )
            .into_data();
        for augmentation in [
            None,
            Some(Augmentation {
                pad: 0,
                flip_prob: 0.0,
            }),
        ] {
            let batch = batcher(augmentation).batch(&items, &device);
            assert_eq!(batch.images.into_data(), expected, "{augmentation:?}");
        }
        // And the standard augmentation does change them.
        let batch = batcher(Some(Augmentation::standard(size))).batch(&items, &device);
        assert_ne!(batch.images.into_data(), expected);
    }
}
