//! Safetensors files read tensor by tensor with positioned reads, each straight into the buffer
//! its tensor keeps, in the file's own dtype. A memory map would have to be copied out of anyway
//! (candle's CPU tensors own their data), and every page copied would count twice in the
//! process's resident memory until the map is closed: at the paper's 8B that is 16 GB of peak
//! RSS for nothing. Positioned reads also let several threads load layers at once.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Where one tensor lies: which file, its dtype, shape and byte range.
#[derive(Debug, Clone)]
struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    start: u64,
    len: usize,
}

/// The tensors of one or more safetensors files (a sharded checkpoint), by name.
#[derive(Debug)]
pub(crate) struct StFiles {
    files: Vec<(PathBuf, File)>,
    entries: HashMap<String, Entry>,
}

#[derive(Deserialize)]
struct RawEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

impl StFiles {
    /// Opens the files and reads their headers (nothing else is read until asked for).
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut entries = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            for (name, e) in read_header(path, &file, i)? {
                entries.insert(name, e);
            }
            files.push((path.clone(), file));
        }
        Ok(Self { files, entries })
    }

    /// Shape of tensor `name`, if present.
    pub(crate) fn dims(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Reads tensor `name` onto the CPU in the file's dtype.
    pub(crate) fn load(&self, name: &str) -> Result<Tensor> {
        let e = self.entries.get(name).ok_or_else(|| Error::Config {
            path: self.files[0].0.clone(),
            reason: format!("tensor `{name}` is not in the safetensors files"),
        })?;
        let (path, file) = &self.files[e.file];
        let read = |buf: &mut [u8]| {
            file.read_exact_at(buf, e.start)
                .map_err(|err| Error::io(path, err))
        };
        let shape = e.shape.as_slice();
        let n = e.len / e.dtype.size_in_bytes();
        let t = match e.dtype {
            DType::F32 => Tensor::from_vec(read_vec::<f32>(n, read)?, shape, &Device::Cpu),
            DType::BF16 => Tensor::from_vec(read_vec::<bf16>(n, read)?, shape, &Device::Cpu),
            DType::F16 => Tensor::from_vec(read_vec::<f16>(n, read)?, shape, &Device::Cpu),
            other => unreachable!("read_header admits no {other:?}"),
        };
        Ok(t?)
    }
}

/// A plain-old-data element type whose every bit pattern is a valid value.
trait Pod: Copy {}
impl Pod for f32 {}
impl Pod for bf16 {}
impl Pod for f16 {}

/// `n` little-endian elements read by `read` into a fresh vector, without an intermediate copy
/// and without zero-filling it first (the read writes every byte).
fn read_vec<T: Pod>(n: usize, read: impl FnOnce(&mut [u8]) -> Result<()>) -> Result<Vec<T>> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    crate::cpu_kernels::advise_huge_pages(v.spare_capacity_mut());
    let spare = v.spare_capacity_mut();
    // SAFETY: T is f32, bf16 or f16 (the `Pod` impls above): plain data without padding, valid
    // for every bit pattern. The spare capacity is viewed as `n * size_of::<T>()` bytes; writing
    // them is sound, and `read` (read_exact_at) fills every byte or fails, so the length is set
    // only when all `n` elements are initialized. The host is little-endian like the file
    // (x86-64 and aarch64 Linux, the targets drllm builds).
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(
            spare.as_mut_ptr().cast::<u8>(),
            n * std::mem::size_of::<T>(),
        )
    };
    read(bytes)?;
    // SAFETY: see above: all `n` elements were written.
    unsafe { v.set_len(n) };
    Ok(v)
}

/// Parses a file's header and checks every entry against the file's length.
fn read_header(path: &Path, file: &File, index: usize) -> Result<Vec<(String, Entry)>> {
    let bad = |reason: String| Error::Config {
        path: path.to_path_buf(),
        reason: format!("safetensors: {reason}"),
    };
    let io = |e| Error::io(path, e);
    let file_len = file.metadata().map_err(io)?.len();
    let mut n = [0u8; 8];
    file.read_exact_at(&mut n, 0).map_err(io)?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > file_len {
        return Err(bad(format!(
            "header length {n} does not fit the file ({file_len} bytes)"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8).map_err(io)?;
    let mut raw: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    raw.remove("__metadata__");
    let data_start = 8 + n;
    let mut out = Vec::with_capacity(raw.len());
    for (name, v) in raw {
        let r: RawEntry =
            serde_json::from_value(v).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        let dtype = match r.dtype.as_str() {
            "F32" => DType::F32,
            "BF16" => DType::BF16,
            "F16" => DType::F16,
            other => {
                return Err(bad(format!(
                    "tensor `{name}` has dtype {other}; drllm reads F32, BF16 and F16"
                )))
            }
        };
        let [a, b] = r.data_offsets;
        let len = r.shape.iter().product::<usize>() * dtype.size_in_bytes();
        if b < a || (b - a) as usize != len || data_start + b > file_len {
            return Err(bad(format!(
                "tensor `{name}`: bytes {a}..{b} do not hold shape {:?} of {} in a file of {file_len} bytes",
                r.shape, r.dtype
            )));
        }
        let entry = Entry {
            file: index,
            dtype,
            shape: r.shape,
            start: data_start + a,
            len,
        };
        out.push((name, entry));
    }
    Ok(out)
}
