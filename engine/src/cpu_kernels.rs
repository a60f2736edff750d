//! Three CPU loops over weights kept in their own precision that candle does only one element at
//! a time on one thread: widening bf16/f16 to f32 (before a dense f32 matmul), a single-row
//! product straight off bf16/f16 weights (the lean mode's decode, which would otherwise widen a
//! whole matrix per token), and quantizing to q8_0 (at load: `QTensor::quantize` first widens the
//! whole matrix and then quantizes on one thread, 4.7 of the 7 s a 1B model took to load). Each
//! runs over rows in parallel on rayon's pool (the threads candle's matmuls use).

use candle_core::quantized::k_quants::BlockQ8_0;
use candle_core::quantized::{QStorage, QTensor};
use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use crate::error::Result;

/// Asks the kernel to back `buf` with 2 MiB pages where it can (transparent huge pages in
/// `madvise` mode, the common default): a 1B model's weights fill 600k 4 KiB pages on load, and
/// faulting them one by one was a third of the load time. Only a hint; failure changes nothing.
pub(crate) fn advise_huge_pages<T>(buf: &mut [std::mem::MaybeUninit<T>]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let len = std::mem::size_of_val(buf);
        if len < HUGE {
            return;
        }
        let start = buf.as_mut_ptr() as usize;
        let aligned = start.next_multiple_of(HUGE);
        let end = (start + len) / HUGE * HUGE;
        if end > aligned {
            // SAFETY: the range lies inside `buf`, which this process owns; MADV_HUGEPAGE only
            // changes how the kernel backs the pages, never their contents.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    end - aligned,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
}

/// Rows handed to one rayon task.
const ROWS_PER_TASK: usize = 64;

/// A matrix's contiguous elements, borrowed, in one of the float dtypes weights come in.
pub(crate) enum Elems<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl Elems<'_> {
    /// Elements `range` widened into `out` (same length).
    fn widen_into(&self, range: std::ops::Range<usize>, out: &mut [f32]) {
        match self {
            Elems::F32(v) => out.copy_from_slice(&v[range]),
            Elems::Bf16(v) => v[range].convert_to_f32_slice(out),
            Elems::F16(v) => v[range].convert_to_f32_slice(out),
        }
    }
}

/// Runs `f` on the elements of a contiguous CPU tensor of dtype f32, bf16 or f16.
fn with_elems<R>(t: &Tensor, f: impl FnOnce(Elems<'_>) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("cpu_kernels: tensor is not contiguous".into()))?;
    let Storage::Cpu(cpu) = &*storage else {
        return Err(candle_core::Error::Msg("cpu_kernels: tensor is not on the CPU".into()).into());
    };
    Ok(match cpu {
        CpuStorage::F32(v) => f(Elems::F32(&v[a..b])),
        CpuStorage::BF16(v) => f(Elems::Bf16(&v[a..b])),
        CpuStorage::F16(v) => f(Elems::F16(&v[a..b])),
        _ => {
            return Err(candle_core::Error::UnsupportedDTypeForOp(t.dtype(), "cpu_kernels").into())
        }
    })
}

/// A row-major matrix whose elements can be lent for one pass: a CPU tensor, or a tensor's bytes
/// mapped from its file.
pub(crate) trait Rows: Sync {
    /// `(rows, cols)`.
    fn dims(&self) -> Result<(usize, usize)>;
    /// Runs `f` on all the elements.
    fn lend(&self, f: &mut dyn FnMut(Elems<'_>)) -> Result<()>;
}

impl Rows for Tensor {
    fn dims(&self) -> Result<(usize, usize)> {
        Ok(self.dims2()?)
    }

    fn lend(&self, f: &mut dyn FnMut(Elems<'_>)) -> Result<()> {
        with_elems(self, f)
    }
}

/// `w` (`[rows, cols]`, f32/bf16/f16 on the CPU) as f32, widened in parallel.
pub(crate) fn widen(w: &Tensor) -> Result<Tensor> {
    if w.dtype() == DType::F32 {
        return Ok(w.clone());
    }
    let (rows, cols) = w.dims2()?;
    let mut out = vec![0f32; rows * cols];
    with_elems(w, |e| {
        out.par_chunks_mut(ROWS_PER_TASK * cols)
            .enumerate()
            .for_each(|(i, o)| {
                let start = i * ROWS_PER_TASK * cols;
                e.widen_into(start..start + o.len(), o)
            })
    })?;
    Ok(Tensor::from_vec(out, (rows, cols), &Device::Cpu)?)
}

/// `x Wᵀ` for a single f32 row `x` (`[1, cols]`) and `w` (`[rows, cols]`, f32/bf16/f16 on the
/// CPU): each weight is read once, widened in cache, never stored as f32.
pub(crate) fn gemv(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let x = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; rows];
    with_elems(w, |e| {
        out.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(i, o)| {
                let mut row = vec![0f32; cols];
                for (j, y) in o.iter_mut().enumerate() {
                    let r = i * ROWS_PER_TASK + j;
                    e.widen_into(r * cols..(r + 1) * cols, &mut row);
                    *y = dot(&x, &row);
                }
            })
    })?;
    Ok(Tensor::from_vec(out, (1, rows), &Device::Cpu)?)
}

/// Dot product with eight independent partial sums (so the compiler can keep them in vector
/// registers).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Bytes of one q8_0 block: an f16 scale, then 32 int8 values.
const Q8_0_BLOCK: usize = 34;

/// `parts` (each `[rows_i, cols]`, f32/bf16/f16, `cols` a multiple of 32) stacked along the
/// rows and quantized to q8_0 the way ggml does (scale = max |x| / 127 per 32 values, values
/// rounded half away from zero), rows in parallel, straight into the blocks the returned tensor
/// owns (no copy after).
pub(crate) fn quantize_q8_0(parts: &[&dyn Rows]) -> Result<QTensor> {
    let dims = parts.iter().map(|p| p.dims()).collect::<Result<Vec<_>>>()?;
    let cols = dims[0].1;
    if let Some(d) = dims.iter().find(|d| d.1 != cols || cols % 32 != 0) {
        return Err(candle_core::Error::Msg(format!(
            "cpu_kernels: cannot stack {d:?} under {cols} columns into q8_0 blocks of 32"
        ))
        .into());
    }
    let blocks_per_row = cols / 32;
    let total: usize = dims.iter().map(|d| d.0).sum();
    let mut blocks: Vec<BlockQ8_0> = Vec::with_capacity(total * blocks_per_row);
    advise_huge_pages(blocks.spare_capacity_mut());
    let spare = blocks.spare_capacity_mut();
    // SAFETY: BlockQ8_0 is `repr(C)` { d: f16, qs: [i8; 32] }, 34 bytes without padding (candle
    // asserts the size), valid for every bit pattern: its bytes are the ggml layout that candle
    // itself casts file bytes to. The loop below writes every byte of the `total` rows (each
    // block's 2 scale bytes and 32 values) before the length is set.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(
            spare.as_mut_ptr().cast::<u8>(),
            total * blocks_per_row * Q8_0_BLOCK,
        )
    };
    let row_bytes = blocks_per_row * Q8_0_BLOCK;
    let mut rest = bytes;
    for (part, (rows, _)) in parts.iter().zip(dims) {
        let (mine, tail) = rest.split_at_mut(rows * row_bytes);
        rest = tail;
        part.lend(&mut |e| {
            mine.par_chunks_mut(ROWS_PER_TASK * row_bytes)
                .enumerate()
                .for_each(|(i, o)| {
                    let mut row = vec![0f32; cols];
                    for (j, ob) in o.chunks_mut(row_bytes).enumerate() {
                        let r = i * ROWS_PER_TASK + j;
                        e.widen_into(r * cols..(r + 1) * cols, &mut row);
                        for (x, b) in row.chunks_exact(32).zip(ob.chunks_exact_mut(Q8_0_BLOCK)) {
                            quantize_block(x, b);
                        }
                    }
                })
        })?;
    }
    // SAFETY: see above: every block was written.
    unsafe { blocks.set_len(total * blocks_per_row) };
    Ok(QTensor::new(
        QStorage::Cpu(Box::new(blocks)),
        (total, cols),
    )?)
}

/// One q8_0 block of 32 values into its 34 bytes.
fn quantize_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (q, v) in out[2..].iter_mut().zip(x) {
        *q = (v * id).round() as i8 as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    fn random(rows: usize, cols: usize, dtype: DType) -> Tensor {
        Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    #[test]
    fn quantizes_like_candle() {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let w = random(130, 96, dtype);
            let ours = quantize_q8_0(&[&w]).unwrap();
            let (a, b) = (w.narrow(0, 0, 70).unwrap(), w.narrow(0, 70, 60).unwrap());
            let halves = [a.contiguous().unwrap(), b.contiguous().unwrap()];
            let stacked = quantize_q8_0(&[&halves[0], &halves[1]]).unwrap();
            assert_eq!(ours.data().unwrap(), stacked.data().unwrap());
            let theirs =
                QTensor::quantize(&w.to_dtype(DType::F32).unwrap(), GgmlDType::Q8_0).unwrap();
            assert_eq!(ours.data().unwrap(), theirs.data().unwrap(), "{dtype:?}");
        }
    }

    #[test]
    fn widen_and_gemv_match_candle() {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let w = random(130, 96, dtype);
            let wide = w.to_dtype(DType::F32).unwrap();
            assert_eq!(
                widen(&w).unwrap().to_vec2::<f32>().unwrap(),
                wide.to_vec2::<f32>().unwrap()
            );
            let x = random(1, 96, DType::F32);
            let theirs = x.matmul(&wide.t().unwrap()).unwrap();
            let d = (gemv(&x, &w).unwrap() - theirs)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d < 1e-4, "{dtype:?}: {d}");
        }
    }
}
