//! Image-folder trees, `DIR/train/<class>/*.png|jpg` and `DIR/valid/<class>/*`, and the
//! in-memory image store shared with CIFAR-10.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};
use image::imageops::FilterType;
use rayon::prelude::*;

use super::{DataError, ImageItem, Splits};

/// Images kept decoded in memory above this many bytes are decoded from disk on demand instead.
const IN_MEMORY_BUDGET: usize = 4 << 30;

/// Images of one size held in memory.
#[derive(Clone, Debug)]
pub struct InMemoryImages {
    size: usize,
    pixels: Vec<u8>,
    labels: Vec<usize>,
}

impl InMemoryImages {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            size,
            pixels: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, pixels: &[u8], label: usize) {
        debug_assert_eq!(pixels.len(), 3 * self.size * self.size);
        self.pixels.extend_from_slice(pixels);
        self.labels.push(label);
    }
}

impl Dataset<ImageItem> for InMemoryImages {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        let len = 3 * self.size * self.size;
        let label = *self.labels.get(index).ok_or_else(|| {
            DatasetError::new(std::io::Error::other(format!(
                "index {index} out of range for {} images",
                self.labels.len()
            )))
        })?;
        Ok(ImageItem {
            pixels: self.pixels[index * len..(index + 1) * len].to_vec(),
            label,
        })
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

/// Images decoded from disk on demand (trees too large to hold in memory).
#[derive(Clone, Debug)]
struct OnDiskImages {
    size: usize,
    files: Vec<(PathBuf, usize)>,
}

impl Dataset<ImageItem> for OnDiskImages {
    fn get(&self, index: usize) -> Result<ImageItem, DatasetError> {
        let (path, label) = self.files.get(index).ok_or_else(|| {
            DatasetError::new(std::io::Error::other(format!("index {index} out of range")))
        })?;
        let pixels = read_image_file(path, self.size).map_err(DatasetError::new)?;
        Ok(ImageItem {
            pixels,
            label: *label,
        })
    }

    fn len(&self) -> usize {
        self.files.len()
    }
}

/// An image-folder tree.
pub struct ImageFolder;

impl ImageFolder {
    /// Opens `dir/train` and `dir/valid` (or `dir/val`), class names from the folder names of
    /// the training split; images become `size x size` (shorter side resized, centre crop).
    ///
    /// Every image is decoded here, so an unreadable file is reported before training.
    pub fn open_splits(dir: &Path, size: usize) -> Result<Splits, DataError> {
        let expected = "expected DIR/train/<class>/*.png|jpg and DIR/valid/<class>/*.png|jpg";
        if !dir.is_dir() {
            return Err(DataError::io(
                dir,
                format!("no such directory ({expected})"),
            ));
        }
        let train_dir = dir.join("train");
        if !train_dir.is_dir() {
            return Err(DataError::io(
                &train_dir,
                format!("missing training split ({expected})"),
            ));
        }
        let valid_dir = ["valid", "val"]
            .iter()
            .map(|s| dir.join(s))
            .find(|p| p.is_dir())
            .ok_or_else(|| {
                DataError::io(
                    dir.join("valid"),
                    format!("missing validation split ({expected})"),
                )
            })?;

        let classes = class_dirs(&train_dir)?;
        if classes.is_empty() {
            return Err(DataError::io(
                &train_dir,
                format!("no class folders in the training split ({expected})"),
            ));
        }
        let train_files = list_split(&train_dir, &classes, true)?;
        for name in class_dirs(&valid_dir)? {
            if !classes.contains(&name) {
                return Err(DataError::io(
                    valid_dir.join(&name),
                    "a validation class that the training split does not have",
                ));
            }
        }
        let valid_files = list_split(&valid_dir, &classes, false)?;
        if valid_files.is_empty() {
            return Err(DataError::io(
                &valid_dir,
                "the validation split has no images",
            ));
        }
        Ok(Splits {
            train: load(train_files, size)?,
            valid: load(valid_files, size)?,
            classes,
            image_size: size,
        })
    }
}

fn class_dirs(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

/// `(file, label)` for every image of a split; every class folder of the training split must
/// hold at least one image.
fn list_split(
    dir: &Path,
    classes: &[String],
    require_all: bool,
) -> Result<Vec<(PathBuf, usize)>, DataError> {
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        if !class_dir.is_dir() {
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(&class_dir)
            .map_err(|e| DataError::io(&class_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if found.is_empty() && require_all {
            return Err(DataError::io(
                &class_dir,
                "empty class: no .png or .jpg images in this class folder",
            ));
        }
        found.sort();
        files.extend(found.into_iter().map(|p| (p, label)));
    }
    Ok(files)
}

fn load(
    files: Vec<(PathBuf, usize)>,
    size: usize,
) -> Result<Arc<dyn Dataset<ImageItem>>, DataError> {
    let bytes = files.len() * 3 * size * size;
    if bytes > IN_MEMORY_BUDGET {
        // Too large to keep: check that every file is an image we can read, decode on demand.
        files.par_iter().try_for_each(|(path, _)| {
            image::image_dimensions(path)
                .map(|_| ())
                .map_err(|e| DataError::format(path, format!("unreadable image ({e})")))
        })?;
        return Ok(Arc::new(OnDiskImages { size, files }));
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(path, _)| read_image_file(path, size))
        .collect::<Result<_, _>>()?;
    let mut images = InMemoryImages::new(size);
    for (pixels, (_, label)) in decoded.iter().zip(&files) {
        images.push(pixels, *label);
    }
    Ok(Arc::new(images))
}

/// Decodes a PNG or JPEG file into `3 x size x size` channel-major pixels: the shorter side is
/// resized to `size`, then the centre is cropped.
pub fn read_image_file(path: &Path, size: usize) -> Result<Vec<u8>, DataError> {
    let image = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| DataError::format(path, format!("unreadable image ({e})")))?
        .to_rgb8();
    let (w, h) = image.dimensions();
    let scale = size as f32 / w.min(h) as f32;
    let (nw, nh) = (
        ((w as f32 * scale).round() as u32).max(size as u32),
        ((h as f32 * scale).round() as u32).max(size as u32),
    );
    let resized = image::imageops::resize(&image, nw, nh, FilterType::Triangle);
    let (x0, y0) = ((nw - size as u32) / 2, (nh - size as u32) / 2);
    let mut pixels = vec![0u8; 3 * size * size];
    for y in 0..size {
        for x in 0..size {
            let p = resized.get_pixel(x0 + x as u32, y0 + y as u32);
            for c in 0..3 {
                pixels[(c * size + y) * size + x] = p[c];
            }
        }
    }
    Ok(pixels)
}

/// Resizes square channel-major pixels from `from x from` to `to x to` (bilinear).
pub(crate) fn resize_chw(pixels: &[u8], from: usize, to: usize) -> Vec<u8> {
    let mut rgb = image::RgbImage::new(from as u32, from as u32);
    for y in 0..from {
        for x in 0..from {
            let at = |c: usize| pixels[(c * from + y) * from + x];
            rgb.put_pixel(x as u32, y as u32, image::Rgb([at(0), at(1), at(2)]));
        }
    }
    let resized = image::imageops::resize(&rgb, to as u32, to as u32, FilterType::Triangle);
    let mut out = vec![0u8; 3 * to * to];
    for (x, y, p) in resized.enumerate_pixels() {
        for c in 0..3 {
            out[(c * to + y as usize) * to + x as usize] = p[c];
        }
    }
    out
}
