//! Safetensors files, tensor by tensor. A tensor the model keeps is read with a positioned read
//! straight into the buffer it keeps, in the file's own dtype: a memory map would have to be
//! copied out of anyway (candle's CPU tensors own their data), and every page copied would count
//! twice in the process's resident memory until the map closed (16 GB of peak RSS at the paper's
//! 8B). A tensor that is only passed over once (quantized to q8_0 at load) is instead mapped,
//! for just that pass: reading it would fill fresh memory that the kernel must zero first, and
//! zeroing 2.5 GB of pages was 70% of a 1B model's load time. Positioned reads and per-tensor
//! maps also let several threads load layers at once.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use serde::Deserialize;

use crate::cpu_kernels::{Elems, Rows};
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
    files: Vec<(Arc<PathBuf>, Arc<File>)>,
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
            files.push((Arc::new(path.clone()), Arc::new(file)));
        }
        Ok(Self { files, entries })
    }

    /// Shape of tensor `name`, if present.
    pub(crate) fn dims(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Tensor `name`, not yet read.
    pub(crate) fn tensor(&self, name: &str) -> Result<StTensor> {
        let e = self.entries.get(name).ok_or_else(|| Error::Config {
            path: self.files[0].0.to_path_buf(),
            reason: format!("tensor `{name}` is not in the safetensors files"),
        })?;
        let (path, file) = &self.files[e.file];
        Ok(StTensor {
            path: path.clone(),
            file: file.clone(),
            entry: e.clone(),
        })
    }
}

/// One tensor of a safetensors file, not yet read: its consumer decides how (read into a buffer
/// of its own, or mapped for one pass).
#[derive(Debug, Clone)]
pub(crate) struct StTensor {
    path: Arc<PathBuf>,
    file: Arc<File>,
    entry: Entry,
}

impl StTensor {
    pub(crate) fn dims(&self) -> &[usize] {
        &self.entry.shape
    }

    /// Reads the tensor onto the CPU in the file's dtype.
    pub(crate) fn read(&self) -> Result<Tensor> {
        let e = &self.entry;
        let read = |buf: &mut [u8]| {
            self.file
                .read_exact_at(buf, e.start)
                .map_err(|err| Error::io(self.path.as_path(), err))
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

    /// The tensor's bytes mapped from the file (pages prefaulted from the page cache), for one
    /// pass over a 2-D tensor. `None` when the bytes do not start at a multiple of the element
    /// size (the safetensors format does not promise alignment), or the tensor is not 2-D: then
    /// [`StTensor::read`] it.
    pub(crate) fn map(&self) -> Result<Option<Mapped>> {
        let e = &self.entry;
        let [rows, cols] = e.shape[..] else {
            return Ok(None);
        };
        if e.start % e.dtype.size_in_bytes() as u64 != 0 || e.len == 0 {
            return Ok(None);
        }
        // SAFETY: the map is read-only and lives only while the tensor is quantized. Another
        // process shrinking the checkpoint meanwhile would fault the read (as it would for every
        // program that maps model files, PyTorch's safetensors loader included); drllm never
        // writes the files it loads.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(e.start)
                .len(e.len)
                .populate()
                .map(self.file.as_ref())
        }
        .map_err(|err| Error::io(self.path.as_path(), err))?;
        Ok(Some(Mapped {
            map,
            dtype: e.dtype,
            rows,
            cols,
        }))
    }
}

/// A 2-D tensor's bytes mapped from its file.
pub(crate) struct Mapped {
    map: memmap2::Mmap,
    dtype: DType,
    rows: usize,
    cols: usize,
}

impl Rows for Mapped {
    fn dims(&self) -> Result<(usize, usize)> {
        Ok((self.rows, self.cols))
    }

    fn lend(&self, f: &mut dyn FnMut(Elems<'_>)) -> Result<()> {
        let bytes: &[u8] = &self.map;
        // SAFETY: `map` checked that the bytes start at a multiple of the element size (mmap
        // returns page-aligned memory plus that offset) and hold exactly rows * cols elements;
        // f32, bf16 and f16 are valid for every bit pattern; the host is little-endian like the
        // file (see `read_vec`).
        unsafe {
            match self.dtype {
                DType::F32 => f(Elems::F32(cast(bytes))),
                DType::BF16 => f(Elems::Bf16(cast(bytes))),
                DType::F16 => f(Elems::F16(cast(bytes))),
                other => unreachable!("read_header admits no {other:?}"),
            }
        }
        Ok(())
    }
}

/// `bytes` viewed as elements of `T`.
///
/// # Safety
/// `bytes` must be aligned for `T`, a whole number of `T`s, and every bit pattern a valid `T`.
unsafe fn cast<T: Pod>(bytes: &[u8]) -> &[T] {
    debug_assert_eq!(bytes.as_ptr() as usize % std::mem::align_of::<T>(), 0);
    std::slice::from_raw_parts(
        bytes.as_ptr().cast(),
        bytes.len() / std::mem::size_of::<T>(),
    )
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
