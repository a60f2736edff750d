//! Where the model runs: `cpu`, or `cuda[:N]` in binaries built with the `cuda` feature. The
//! weights live on that device; rows, masks and RoPE tables are made there; the small router
//! networks stay on the CPU and read the window means copied back from the device.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// A device as a user names it (`cpu`, `cuda`, `cuda:1`), opened with [`DeviceSpec::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The host CPU.
    #[default]
    Cpu,
    /// The CUDA device with this ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

/// True when this build has candle's CUDA backend (the `cuda` cargo feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Why a device cannot be named or opened.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A name other than `cpu`, `cuda`, `gpu` or `cuda:N`; holds it as given.
    #[error("unknown device `{0}`: use cpu, cuda or cuda:N (N = the GPU's ordinal)")]
    Unknown(String),
    /// A CUDA device asked of a binary built without the `cuda` feature.
    #[error(
        "device `{0}` asked for, but this binary was built without CUDA: rebuild with \
         `--features cuda` (deploy/cuda/build.sh does it on a machine without a GPU) or use --device cpu"
    )]
    NotBuilt(DeviceSpec),
    /// CUDA could not open the device.
    #[error("cannot open {spec}: {reason} (is the NVIDIA driver loaded and are the CUDA 13 libraries on LD_LIBRARY_PATH?)")]
    Open {
        /// The device asked for.
        spec: DeviceSpec,
        /// candle's error.
        reason: String,
    },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, DeviceError> {
        let unknown = || DeviceError::Unknown(s.to_string());
        match s.trim() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            t => {
                let n = t.strip_prefix("cuda:").ok_or_else(unknown)?;
                n.parse().map(Self::Cuda).map_err(|_| unknown())
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device (for CUDA: creates its context and stream).
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !CUDA_BUILT => Err(DeviceError::NotBuilt(self)),
            Self::Cuda(n) => Device::new_cuda(n).map_err(|e| DeviceError::Open {
                spec: self,
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_device_names() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d);
        }
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        for bad in ["tpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("use cpu, cuda or cuda:N"), "{bad}: {e}");
        }
    }

    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        if CUDA_BUILT {
            return; // a CUDA build opens (or fails to open) a real device instead
        }
        let e = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(
            e.contains("--features cuda") && e.contains("--device cpu"),
            "{e}"
        );
        assert!(DeviceSpec::Cpu.open().unwrap().is_cpu());
    }
}
