//! `--devices`: which devices a run trains on. [`select_devices`] decides from the option, the
//! GPU backends compiled in and `BURN_DEVICE`, as a pure function; [`DeviceSelection::devices`]
//! then makes the burn devices (the only part that depends on the cargo features).

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One entry of `--devices`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// `N`: GPU `N` of the GPU backend: the CUDA device ordinal, or with wgpu (Vulkan, Metal)
    /// the `N`th discrete GPU.
    Gpu(usize),
    /// `discrete:N`: wgpu's `N`th discrete GPU.
    Discrete(usize),
    /// `integrated:N`: wgpu's `N`th integrated GPU.
    Integrated(usize),
    /// `virtual:N`: wgpu's `N`th virtual GPU.
    Virtual(usize),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Gpu(i) => write!(f, "{i}"),
            DeviceSpec::Discrete(i) => write!(f, "discrete:{i}"),
            DeviceSpec::Integrated(i) => write!(f, "integrated:{i}"),
            DeviceSpec::Virtual(i) => write!(f, "virtual:{i}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let index = |text: &str| {
            text.trim().parse::<usize>().map_err(|_| {
                format!(
                    "invalid device {s:?}: expected a GPU index (0, 1, ...) or \
                     discrete:N, integrated:N or virtual:N"
                )
            })
        };
        match s.split_once(':') {
            None => index(s).map(DeviceSpec::Gpu),
            Some((kind, n)) => match kind.trim().to_ascii_lowercase().as_str() {
                "discrete" => index(n).map(DeviceSpec::Discrete),
                "integrated" => index(n).map(DeviceSpec::Integrated),
                "virtual" => index(n).map(DeviceSpec::Virtual),
                _ => Err(format!(
                    "invalid device {s:?}: the kind before ':' must be discrete, integrated or \
                     virtual"
                )),
            },
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Earlier config.json files hold plain indices.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Index(usize),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Index(i) => Ok(DeviceSpec::Gpu(i)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The GPU backends of a build (its cargo features), as a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuBackends {
    /// `cuda`.
    pub cuda: bool,
    /// `metal` (wgpu pinned to Metal).
    pub metal: bool,
    /// `vulkan` (wgpu pinned to Vulkan).
    pub vulkan: bool,
    /// `wgpu` (whichever API wgpu finds).
    pub wgpu: bool,
}

impl GpuBackends {
    /// The backends compiled into this build.
    pub const COMPILED: Self = Self {
        cuda: cfg!(feature = "cuda"),
        metal: cfg!(feature = "metal"),
        vulkan: cfg!(feature = "vulkan"),
        wgpu: cfg!(feature = "wgpu"),
    };

    fn any(self) -> bool {
        self.cuda || self.metal || self.vulkan || self.wgpu
    }

    /// wgpu's API, in burn's order of preference (Metal, Vulkan, then automatic).
    fn wgpu_api(self) -> Option<WgpuApi> {
        if self.metal {
            Some(WgpuApi::Metal)
        } else if self.vulkan {
            Some(WgpuApi::Vulkan)
        } else if self.wgpu {
            Some(WgpuApi::Auto)
        } else {
            None
        }
    }
}

/// The graphics API of wgpu devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgpuApi {
    /// wgpu chooses (`--features wgpu`).
    Auto,
    /// Pinned to Vulkan (`--features vulkan`).
    Vulkan,
    /// Pinned to Metal (`--features metal`).
    Metal,
}

/// A wgpu adapter: its kind and index among the adapters of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Adapter {
    /// The `N`th discrete GPU.
    Discrete(usize),
    /// The `N`th integrated GPU.
    Integrated(usize),
    /// The `N`th virtual GPU.
    Virtual(usize),
}

/// What [`select_devices`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSelection {
    /// No `--devices`: the device the caller passed (`Device::default()` in the programs).
    Given,
    /// CUDA devices by ordinal.
    Cuda(Vec<usize>),
    /// wgpu adapters on one API.
    Wgpu {
        /// The API.
        api: WgpuApi,
        /// The adapters.
        adapters: Vec<Adapter>,
    },
}

/// Decides the devices of `--devices` (`specs`) for a build with the GPU backends `compiled`
/// and `BURN_DEVICE` (`burn_device`).
///
/// - No specs: [`DeviceSelection::Given`].
/// - The GPU backend is the one `BURN_DEVICE` names (`cuda`, `metal`, `vulkan` or `wgpu`)
///   when set; else wgpu when a spec names an adapter kind (`integrated:0`: only wgpu has
///   kinds); else the first compiled of CUDA, Metal, Vulkan, wgpu (burn's own order).
/// - Errors: no GPU backend compiled in, `BURN_DEVICE` naming a CPU backend or one not
///   compiled in, an adapter kind with CUDA, the same device twice.
pub fn select_devices(
    specs: &[DeviceSpec],
    compiled: GpuBackends,
    burn_device: Option<&str>,
) -> Result<DeviceSelection, String> {
    if specs.is_empty() {
        return Ok(DeviceSelection::Given);
    }
    let listed = specs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if !compiled.any() {
        return Err(format!(
            "--devices {listed} selects GPUs, but this build has no GPU backend: build with \
             --features cuda, wgpu, vulkan or metal (without --devices the run uses the \
             default device)"
        ));
    }
    enum Backend {
        Cuda,
        Wgpu(WgpuApi),
    }
    let kinds = specs.iter().any(|s| !matches!(s, DeviceSpec::Gpu(_)));
    let backend = match burn_device.map(|name| name.trim().to_ascii_lowercase()) {
        Some(name) => {
            let api = match name.as_str() {
                "cuda" if compiled.cuda => Some(Backend::Cuda),
                "metal" if compiled.metal => Some(Backend::Wgpu(WgpuApi::Metal)),
                "vulkan" if compiled.vulkan => Some(Backend::Wgpu(WgpuApi::Vulkan)),
                // burn's `wgpu` feature comes with each wgpu API.
                "wgpu" if compiled.wgpu || compiled.vulkan || compiled.metal => {
                    Some(Backend::Wgpu(WgpuApi::Auto))
                }
                _ => None,
            };
            api.ok_or_else(|| match name.as_str() {
                "cuda" | "metal" | "vulkan" | "wgpu" => format!(
                    "BURN_DEVICE={name} asks for {name}, which this build does not have (build \
                     with --features {name})"
                ),
                _ => format!(
                    "--devices {listed} selects GPUs, but BURN_DEVICE={name} selects another \
                     backend: unset BURN_DEVICE or set it to a GPU backend of this build, or \
                     drop --devices"
                ),
            })?
        }
        None if kinds => Backend::Wgpu(compiled.wgpu_api().ok_or_else(|| {
            format!(
                "--devices {listed}: discrete:, integrated: and virtual: select wgpu adapters, \
                 but this build's GPU backend is CUDA: give CUDA device ordinals (0, 1, ...) or \
                 build with --features wgpu, vulkan or metal"
            )
        })?),
        None if compiled.cuda => Backend::Cuda,
        None => Backend::Wgpu(compiled.wgpu_api().expect("a wgpu API is compiled in")),
    };
    let selection = match backend {
        Backend::Cuda => DeviceSelection::Cuda(
            specs
                .iter()
                .map(|spec| match spec {
                    DeviceSpec::Gpu(i) => Ok(*i),
                    other => Err(format!(
                        "--devices {other}: adapter kinds select wgpu adapters, but the GPU \
                         backend is CUDA: give CUDA device ordinals (0, 1, ...)"
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        Backend::Wgpu(api) => DeviceSelection::Wgpu {
            api,
            adapters: specs
                .iter()
                .map(|spec| match *spec {
                    DeviceSpec::Gpu(i) | DeviceSpec::Discrete(i) => Adapter::Discrete(i),
                    DeviceSpec::Integrated(i) => Adapter::Integrated(i),
                    DeviceSpec::Virtual(i) => Adapter::Virtual(i),
                })
                .collect(),
        },
    };
    let same = |i: usize, j: usize| match &selection {
        DeviceSelection::Cuda(ordinals) => ordinals[i] == ordinals[j],
        DeviceSelection::Wgpu { adapters, .. } => adapters[i] == adapters[j],
        DeviceSelection::Given => false,
    };
    for again in 0..specs.len() {
        if let Some(first) = (0..again).find(|&first| same(first, again)) {
            return Err(format!(
                "--devices {listed} lists one device twice ({} and {})",
                specs[first], specs[again]
            ));
        }
    }
    Ok(selection)
}

impl DeviceSelection {
    /// The burn devices: `given` for [`DeviceSelection::Given`].
    pub fn devices(&self, given: &Device) -> Result<Vec<Device>, String> {
        match self {
            DeviceSelection::Given => Ok(vec![given.clone()]),
            DeviceSelection::Cuda(ordinals) => cuda_devices(ordinals),
            DeviceSelection::Wgpu { api, adapters } => wgpu_devices(*api, adapters),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_devices(ordinals: &[usize]) -> Result<Vec<Device>, String> {
    Ok(ordinals.iter().map(|&i| Device::cuda(i)).collect())
}

#[cfg(not(feature = "cuda"))]
fn cuda_devices(_ordinals: &[usize]) -> Result<Vec<Device>, String> {
    Err("this build has no CUDA backend (build with --features cuda)".into())
}

#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "metal"))]
fn wgpu_devices(api: WgpuApi, adapters: &[Adapter]) -> Result<Vec<Device>, String> {
    use burn::tensor::DeviceKind;
    adapters
        .iter()
        .map(|adapter| {
            let kind = match *adapter {
                Adapter::Discrete(i) => DeviceKind::DiscreteGpu(i),
                Adapter::Integrated(i) => DeviceKind::IntegratedGpu(i),
                Adapter::Virtual(i) => DeviceKind::VirtualGpu(i),
            };
            match api {
                WgpuApi::Auto => Ok(Device::wgpu(kind)),
                #[cfg(feature = "vulkan")]
                WgpuApi::Vulkan => Ok(Device::vulkan(kind)),
                #[cfg(feature = "metal")]
                WgpuApi::Metal => Ok(Device::metal(kind)),
                #[allow(unreachable_patterns)]
                other => {
                    let name = format!("{other:?}").to_lowercase();
                    Err(format!(
                        "this build has no {name} backend (build with --features {name})"
                    ))
                }
            }
        })
        .collect()
}

#[cfg(not(any(feature = "wgpu", feature = "vulkan", feature = "metal")))]
fn wgpu_devices(_api: WgpuApi, _adapters: &[Adapter]) -> Result<Vec<Device>, String> {
    Err("this build has no wgpu backend (build with --features wgpu, vulkan or metal)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: GpuBackends = GpuBackends {
        cuda: false,
        metal: false,
        vulkan: false,
        wgpu: false,
    };
    const CUDA: GpuBackends = GpuBackends { cuda: true, ..NONE };
    const WGPU: GpuBackends = GpuBackends { wgpu: true, ..NONE };
    const VULKAN: GpuBackends = GpuBackends {
        vulkan: true,
        ..NONE
    };
    const METAL: GpuBackends = GpuBackends {
        metal: true,
        ..NONE
    };
    const CUDA_WGPU: GpuBackends = GpuBackends {
        cuda: true,
        wgpu: true,
        ..NONE
    };

    fn specs(text: &str) -> Vec<DeviceSpec> {
        text.split(',').map(|s| s.parse().unwrap()).collect()
    }

    fn wgpu(api: WgpuApi, adapters: &[Adapter]) -> DeviceSelection {
        DeviceSelection::Wgpu {
            api,
            adapters: adapters.to_vec(),
        }
    }

    #[test]
    fn parses_and_prints_device_specs() {
        for text in ["0", "12", "discrete:1", "integrated:0", "virtual:3"] {
            let spec: DeviceSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "Integrated:2".parse::<DeviceSpec>(),
            Ok(DeviceSpec::Integrated(2))
        );
        for bad in ["", "-1", "gpu:1", "integrated:", "integrated:x", "1.5"] {
            let err = bad.parse::<DeviceSpec>().unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        // config.json: strings, and the plain indices earlier versions wrote.
        let parsed: Vec<DeviceSpec> = serde_json::from_str(r#"[1, "integrated:0"]"#).unwrap();
        assert_eq!(parsed, [DeviceSpec::Gpu(1), DeviceSpec::Integrated(0)]);
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            r#"["1","integrated:0"]"#
        );
    }

    #[test]
    fn no_devices_is_the_given_device_in_every_build() {
        for compiled in [NONE, CUDA, WGPU, VULKAN, METAL, CUDA_WGPU] {
            assert_eq!(
                select_devices(&[], compiled, None),
                Ok(DeviceSelection::Given)
            );
            assert_eq!(
                select_devices(&[], compiled, Some("flex")),
                Ok(DeviceSelection::Given)
            );
        }
    }

    #[test]
    fn a_single_index_selects_that_gpu() {
        assert_eq!(
            select_devices(&specs("1"), CUDA, None),
            Ok(DeviceSelection::Cuda(vec![1]))
        );
        assert_eq!(
            select_devices(&specs("1"), WGPU, None),
            Ok(wgpu(WgpuApi::Auto, &[Adapter::Discrete(1)]))
        );
        assert_eq!(
            select_devices(&specs("1"), VULKAN, None),
            Ok(wgpu(WgpuApi::Vulkan, &[Adapter::Discrete(1)]))
        );
        assert_eq!(
            select_devices(&specs("1"), METAL, None),
            Ok(wgpu(WgpuApi::Metal, &[Adapter::Discrete(1)]))
        );
        assert_eq!(
            select_devices(&specs("0,2"), CUDA, None),
            Ok(DeviceSelection::Cuda(vec![0, 2]))
        );
    }

    #[test]
    fn integrated_gpus_through_wgpu() {
        for (compiled, api) in [
            (WGPU, WgpuApi::Auto),
            (VULKAN, WgpuApi::Vulkan),
            (METAL, WgpuApi::Metal),
            (CUDA_WGPU, WgpuApi::Auto),
        ] {
            assert_eq!(
                select_devices(&specs("integrated:0,1,virtual:0"), compiled, None),
                Ok(wgpu(
                    api,
                    &[
                        Adapter::Integrated(0),
                        Adapter::Discrete(1),
                        Adapter::Virtual(0)
                    ]
                )),
                "{compiled:?}"
            );
        }
        let err = select_devices(&specs("integrated:0"), CUDA, None).unwrap_err();
        assert!(err.contains("CUDA"), "{err}");
        let err = select_devices(&specs("integrated:0"), CUDA_WGPU, Some("cuda")).unwrap_err();
        assert!(err.contains("integrated:0"), "{err}");
    }

    #[test]
    fn cuda_first_unless_burn_device_says_otherwise() {
        assert_eq!(
            select_devices(&specs("1"), CUDA_WGPU, None),
            Ok(DeviceSelection::Cuda(vec![1]))
        );
        assert_eq!(
            select_devices(&specs("1"), CUDA_WGPU, Some("wgpu")),
            Ok(wgpu(WgpuApi::Auto, &[Adapter::Discrete(1)]))
        );
        assert_eq!(
            select_devices(&specs("1"), VULKAN, Some("wgpu")),
            Ok(wgpu(WgpuApi::Auto, &[Adapter::Discrete(1)]))
        );
        assert_eq!(
            select_devices(&specs("1"), CUDA_WGPU, Some("CUDA")),
            Ok(DeviceSelection::Cuda(vec![1]))
        );
    }

    #[test]
    fn clear_errors() {
        // No GPU backend: the index is not ignored.
        let err = select_devices(&specs("1"), NONE, None).unwrap_err();
        assert!(err.contains("--devices 1"), "{err}");
        assert!(err.contains("no GPU backend"), "{err}");
        assert!(err.contains("--features cuda"), "{err}");
        // BURN_DEVICE on a CPU backend, or on a GPU backend not compiled in.
        let err = select_devices(&specs("0"), CUDA, Some("flex")).unwrap_err();
        assert!(err.contains("BURN_DEVICE=flex"), "{err}");
        let err = select_devices(&specs("0"), CUDA, Some("vulkan")).unwrap_err();
        assert!(err.contains("--features vulkan"), "{err}");
        // The same device twice.
        let err = select_devices(&specs("1,0,1"), CUDA, None).unwrap_err();
        assert!(err.contains("twice (1 and 1)"), "{err}");
        let err = select_devices(&specs("0,discrete:0"), WGPU, None).unwrap_err();
        assert!(err.contains("twice (0 and discrete:0)"), "{err}");
    }

    /// In this build (no GPU feature in the default test run) a GPU index fails before any
    /// device is made.
    #[test]
    fn this_build() {
        let compiled = GpuBackends::COMPILED;
        let selection = select_devices(&specs("1"), compiled, None);
        if compiled == NONE {
            assert!(selection.is_err());
        } else {
            assert!(selection.is_ok());
        }
    }
}
