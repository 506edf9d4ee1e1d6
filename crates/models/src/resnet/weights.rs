//! PyTorch weights: loading torchvision / timm state dicts (`.pth`, `.pt` or `.safetensors`)
//! and saving back to the same key layout.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{
    BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, ModuleStore,
    PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};

use super::ResNet;

/// Why weights could not be loaded or saved. Nothing is changed or half-written on error.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightsError {
    /// The file could not be read as a PyTorch checkpoint or safetensors file (missing,
    /// truncated, corrupt).
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The file's tensors do not fit the model's architecture.
    Incompatible {
        /// The file.
        path: PathBuf,
        /// Keys the model needs that the file lacks.
        missing: Vec<String>,
        /// Keys in the file the model has no place for.
        unexpected: Vec<String>,
        /// Keys whose shape differs: `(key, expected, found)`.
        mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
        /// Keys holding a non-float dtype where the model has floats: `(key, dtype)`.
        wrong_dtype: Vec<(String, String)>,
    },
    /// The weights could not be written.
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl fmt::Display for WeightsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsError::Read { path, message } => {
                write!(f, "cannot read weights from {}: {message}", path.display())
            }
            WeightsError::Write { path, message } => {
                write!(f, "cannot write weights to {}: {message}", path.display())
            }
            WeightsError::Incompatible {
                path,
                missing,
                unexpected,
                mismatched,
                wrong_dtype,
            } => {
                write!(f, "weights in {} do not fit the model:", path.display())?;
                let list = |f: &mut fmt::Formatter<'_>, what: &str, items: Vec<String>| {
                    if items.is_empty() {
                        return Ok(());
                    }
                    const SHOWN: usize = 12;
                    write!(f, " {} {what} (", items.len())?;
                    write!(f, "{}", items[..items.len().min(SHOWN)].join(", "))?;
                    if items.len() > SHOWN {
                        write!(f, ", and {} more", items.len() - SHOWN)?;
                    }
                    write!(f, ");")
                };
                list(f, "missing keys", missing.clone())?;
                list(f, "unexpected keys", unexpected.clone())?;
                list(
                    f,
                    "mis-shaped keys",
                    mismatched
                        .iter()
                        .map(|(k, e, g)| format!("{k}: expected {e:?}, found {g:?}"))
                        .collect(),
                )?;
                list(
                    f,
                    "keys of a non-float dtype",
                    wrong_dtype
                        .iter()
                        .map(|(k, d)| format!("{k}: {d}"))
                        .collect(),
                )
            }
        }
    }
}

impl std::error::Error for WeightsError {}

/// Buffers PyTorch saves that have no counterpart in burn's modules.
fn ignored(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

/// burn module path -> PyTorch key (only the shortcut differs).
fn to_torch_key(name: &str) -> String {
    name.replace(".downsample.conv.", ".downsample.0.")
        .replace(".downsample.norm.", ".downsample.1.")
}

/// PyTorch key -> burn module path.
fn to_burn_key(key: &str) -> String {
    key.replace(".downsample.0.", ".downsample.conv.")
        .replace(".downsample.1.", ".downsample.norm.")
}

/// Reads every tensor of a `.pth` / `.pt` (PyTorch pickle or zip) or `.safetensors` file, with
/// its data, so that a truncated file fails here and not halfway through loading.
fn read_tensors(path: &Path) -> Result<Vec<PackTensor>, WeightsError> {
    let read_err = |message: String| WeightsError::Read {
        path: path.to_path_buf(),
        message,
    };
    let mut bytes_head = Vec::with_capacity(8);
    std::fs::File::open(path)
        .and_then(|f| f.take(8).read_to_end(&mut bytes_head))
        .map_err(|e| read_err(e.to_string()))?;
    let is_safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let is_zip_or_pickle = bytes_head.starts_with(b"PK") || bytes_head.first() == Some(&0x80);
    let tensors: Vec<PackTensor> = if is_safetensors || !is_zip_or_pickle {
        let mut store = SafetensorsStore::from_file(path);
        let all = store
            .get_all_tensors()
            .map_err(|e| read_err(format!("not a valid safetensors file ({e})")))?;
        all.values().cloned().collect()
    } else {
        let mut store = PytorchStore::from_file(path);
        let all = store
            .get_all_tensors()
            .map_err(|e| read_err(format!("not a valid PyTorch checkpoint ({e})")))?;
        all.values().cloned().collect()
    };
    if tensors.is_empty() {
        return Err(read_err("the file holds no tensors".into()));
    }
    let prefix = common_prefix(&tensors);
    tensors
        .into_iter()
        .map(|t| {
            let (name, dtype, shape, _, bytes) = t
                .into_parts()
                .map_err(|e| read_err(format!("tensor data cannot be read ({e})")))?;
            let name = name[prefix.len()..].to_string();
            Ok(PackTensor::new(name, dtype, shape, None, bytes))
        })
        .collect()
}

/// A wrapper prefix every key carries (`module.` from DataParallel, `model.` or
/// `state_dict.` from training checkpoints), to strip.
fn common_prefix(tensors: &[PackTensor]) -> &'static str {
    ["module.", "model.", "state_dict."]
        .into_iter()
        .find(|p| tensors.iter().all(|t| t.name.starts_with(p)))
        .unwrap_or("")
}

impl ResNet {
    /// The model's tensors as a PyTorch state dict would name and shape them.
    fn torch_layout(&self) -> BTreeMap<String, PackTensor> {
        self.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
            .into_iter()
            .map(|t| (to_torch_key(&t.name), t))
            .collect()
    }

    /// A copy of the model with the weights of a torchvision / timm ResNet state dict
    /// (`conv1`, `bn1`, `layer1.0.conv1`, ..., `layer1.0.downsample.0/1`, `fc`), from a
    /// `.pth` / `.pt` file or a `.safetensors` file. Norm `weight` / `bias` become `gamma` /
    /// `beta`; with BatchNorm, `running_mean` / `running_var` load too. Float weights of
    /// another precision are converted to the model's.
    ///
    /// The model must have the file's architecture (depth, width, norm, classes); resize the
    /// classifier afterwards with [`with_num_classes`](ResNet::with_num_classes) to fine-tune.
    ///
    /// # Errors
    ///
    /// [`WeightsError::Read`] for a missing, truncated or corrupt file;
    /// [`WeightsError::Incompatible`] listing the missing, unexpected and mis-shaped keys when
    /// the file does not fit. `self` is unchanged in every case.
    pub fn load_pytorch_weights(&self, path: impl AsRef<Path>) -> Result<ResNet, WeightsError> {
        self.load_torch(path.as_ref(), false)
    }

    /// Like [`load_pytorch_weights`](ResNet::load_pytorch_weights), but keeps this model's
    /// classifier (`fc`): for starting from weights trained on other classes (ImageNet's 1000
    /// to a dataset's 10, say). The file's `fc.*` tensors are ignored.
    pub fn load_pytorch_backbone(&self, path: impl AsRef<Path>) -> Result<ResNet, WeightsError> {
        self.load_torch(path.as_ref(), true)
    }

    fn load_torch(&self, path: &Path, keep_classifier: bool) -> Result<ResNet, WeightsError> {
        let skipped = |key: &str| ignored(key) || (keep_classifier && key.starts_with("fc."));
        let tensors = read_tensors(path)?;
        let mut expected = self.torch_layout();
        if keep_classifier {
            expected.retain(|k, _| !k.starts_with("fc."));
        }

        let found: BTreeSet<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        let missing: Vec<String> = expected
            .keys()
            .filter(|k| !found.contains(k.as_str()))
            .cloned()
            .collect();
        let mut unexpected = Vec::new();
        let mut mismatched = Vec::new();
        let mut wrong_dtype = Vec::new();
        for t in &tensors {
            match expected.get(&t.name) {
                None if skipped(&t.name) => {}
                None => unexpected.push(t.name.clone()),
                Some(want) => {
                    if want.shape.as_slice() != t.shape.as_slice() {
                        mismatched.push((t.name.clone(), want.shape.to_vec(), t.shape.to_vec()));
                    } else if !t.dtype.is_float() {
                        wrong_dtype.push((t.name.clone(), format!("{:?}", t.dtype)));
                    }
                }
            }
        }
        if !(missing.is_empty()
            && unexpected.is_empty()
            && mismatched.is_empty()
            && wrong_dtype.is_empty())
        {
            return Err(WeightsError::Incompatible {
                path: path.to_path_buf(),
                missing,
                unexpected,
                mismatched,
                wrong_dtype,
            });
        }

        let dtype = self.conv1.weight.val().dtype();
        let tensors = tensors
            .into_iter()
            .filter(|t| !skipped(&t.name))
            .map(|mut t| {
                t.name = to_burn_key(&t.name);
                t
            })
            .collect();
        let adapter: Box<dyn ModuleAdapter> =
            Box::new(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(dtype)));
        let mut model = self.clone();
        let result = model.apply(tensors, None, Some(adapter), true);
        let missing = result
            .missing
            .iter()
            .any(|(path, _)| !(keep_classifier && path.starts_with("fc.")));
        if !result.errors.is_empty() || missing {
            return Err(WeightsError::Read {
                path: path.to_path_buf(),
                message: format!("applying the weights failed: {result}"),
            });
        }
        Ok(model)
    }

    /// Writes the weights as a `.safetensors` state dict with PyTorch's keys and layouts (the
    /// layout [`load_pytorch_weights`](ResNet::load_pytorch_weights) reads, and timm /
    /// torchvision's `load_state_dict` accepts). The file is written atomically.
    ///
    /// # Errors
    ///
    /// [`WeightsError::Write`] if the path does not end in `.safetensors` or cannot be written.
    pub fn save_pytorch_weights(&self, path: impl AsRef<Path>) -> Result<(), WeightsError> {
        let path = path.as_ref();
        let write_err = |message: String| WeightsError::Write {
            path: path.to_path_buf(),
            message,
        };
        if !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
        {
            return Err(write_err(
                "weights are saved as safetensors: use a path ending in .safetensors".into(),
            ));
        }
        let mut store = SafetensorsStore::from_file(path)
            .with_to_adapter(BurnToPyTorchAdapter)
            .skip_enum_variants(true)
            .with_key_remapping(r"\.downsample\.conv\.", ".downsample.0.")
            .with_key_remapping(r"\.downsample\.norm\.", ".downsample.1.")
            .overwrite(true);
        self.save_into(&mut store)
            .map_err(|e| write_err(e.to_string()))
    }
}
