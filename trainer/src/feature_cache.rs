//! The feature cache. The base model is frozen and router inputs are teacher-forced, so each
//! example's inputs — the window means of the hidden state entering every layer along its target
//! path, `[L, W, d]` — are computed once, by one forward pass, and stored as f16 safetensors.
//! Training reads them memory-mapped. A cache folder is keyed by the model fingerprint, the
//! windows and the examples (prompt ids and targets, in order), so re-running the trainer on the
//! same records reuses it; it is written in chunks of [`CHUNK`] examples, each renamed into place
//! when complete, so an interrupted feature pass resumes where it stopped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use drllm_core::router::teacher_forced_inputs;
use drllm_engine::Model;

use crate::data::Example;
use crate::{Error, Result};

/// Examples per cache file.
pub const CHUNK: usize = 256;
const FORMAT: &str = "drllm-router-features-1";

/// Cached router inputs of a list of examples, memory-mapped.
pub struct Features {
    st: MmapedSafetensors,
    /// The cache folder.
    pub dir: PathBuf,
    /// Number of examples.
    pub n: usize,
    /// Model depth L (one router input per layer).
    pub layers: usize,
    /// Windows per example (rows past an example's own count are zero).
    pub windows: usize,
    /// Model width.
    pub d: usize,
    /// Windows that exist per example (the prompt may be shorter than `windows` tokens).
    counts: Vec<u32>,
}

/// How the features were obtained.
#[derive(Debug, Clone, Copy)]
pub struct Built {
    /// Examples whose inputs were computed now.
    pub computed: usize,
    /// Examples read from chunks already on disk.
    pub reused: usize,
    /// Time spent computing, in seconds.
    pub seconds: f64,
}

/// The cache folder for `examples` under `root`.
pub fn cache_dir(root: &Path, fingerprint: &str, windows: usize, examples: &[Example]) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(FORMAT.as_bytes());
    h.update(fingerprint.as_bytes());
    h.update(&(windows as u64).to_le_bytes());
    for e in examples {
        h.update(e.key().as_bytes());
    }
    let key = h.finalize().to_hex();
    let fp: String = fingerprint.chars().take(16).collect();
    root.join(format!("{fp}-w{windows}-{}", &key[..16]))
}

fn chunk_path(dir: &Path, c: usize) -> PathBuf {
    dir.join(format!("chunk-{c:05}.safetensors"))
}

/// Opens the cache of `examples`, computing the chunks that are missing (one teacher-forced
/// forward per example). `progress` draws a bar.
pub fn open_or_build(
    root: &Path,
    model: &Model,
    fingerprint: &str,
    examples: &[Example],
    windows: usize,
    progress: bool,
) -> Result<(Features, Built)> {
    let dir = cache_dir(root, fingerprint, windows, examples);
    let cerr = |p: &Path, reason: String| Error::Cache {
        path: p.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(&dir).map_err(|e| cerr(&dir, e.to_string()))?;
    let t = Instant::now();
    let chunks = examples.len().div_ceil(CHUNK);
    let missing: Vec<usize> = (0..chunks)
        .filter(|&c| !chunk_path(&dir, c).is_file())
        .collect();
    let todo: usize = missing
        .iter()
        .map(|&c| CHUNK.min(examples.len() - c * CHUNK))
        .sum();
    let bar = progress.then(|| {
        let b = drllm_core::cli::progress_bar(todo);
        b.set_message("router inputs");
        b
    });
    for &c in &missing {
        let part = &examples[c * CHUNK..examples.len().min((c + 1) * CHUNK)];
        let mut feats = Vec::with_capacity(part.len());
        let mut counts = Vec::with_capacity(part.len());
        for e in part {
            let (x, count) = teacher_forced_inputs(model, &e.prompt_ids, &e.target, windows)?;
            feats.push(x.to_dtype(DType::F16)?.to_device(&Device::Cpu)?);
            counts.push(count as u32);
            if let Some(b) = &bar {
                b.inc(1);
            }
        }
        let path = chunk_path(&dir, c);
        let tensors = std::collections::HashMap::from([
            (format!("features.{c}"), Tensor::stack(&feats, 0)?),
            (
                format!("counts.{c}"),
                Tensor::from_vec(counts, part.len(), &Device::Cpu)?,
            ),
        ]);
        drllm_records::atomic::write_atomically(&path, |tmp| {
            candle_core::safetensors::save(&tensors, tmp)
        })
        .map_err(|e| cerr(&path, e.to_string()))?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let built = Built {
        computed: todo,
        reused: examples.len() - todo,
        seconds: t.elapsed().as_secs_f64(),
    };
    let paths: Vec<PathBuf> = (0..chunks).map(|c| chunk_path(&dir, c)).collect();
    let features = Features::open(&dir, &paths, examples.len(), model.num_layers(), windows)?;
    Ok((features, built))
}

impl Features {
    fn open(
        dir: &Path,
        paths: &[PathBuf],
        n: usize,
        layers: usize,
        windows: usize,
    ) -> Result<Self> {
        let cerr = |reason: String| Error::Cache {
            path: dir.display().to_string(),
            reason: format!("{reason}; delete the folder to rebuild it"),
        };
        // SAFETY: the chunk files are ours and only ever replaced by rename, never modified in
        // place, so the mapped bytes do not change under us.
        let st = unsafe { MmapedSafetensors::multi(paths) }.map_err(|e| cerr(e.to_string()))?;
        let mut counts = Vec::with_capacity(n);
        let mut d = 0;
        for c in 0..paths.len() {
            let rows = CHUNK.min(n - c * CHUNK);
            let f = st
                .get(&format!("features.{c}"))
                .map_err(|e| cerr(e.to_string()))?;
            let shape = f.shape().to_vec();
            if shape.len() != 4 || shape[0] != rows || shape[1] != layers || shape[2] != windows {
                return Err(cerr(format!(
                    "chunk {c} holds features of shape {shape:?}, expected [{rows}, {layers}, {windows}, d]"
                )));
            }
            d = shape[3];
            let k = st
                .load(&format!("counts.{c}"), &Device::Cpu)
                .and_then(|t| t.to_vec1::<u32>())
                .map_err(|e| cerr(e.to_string()))?;
            counts.extend(k);
        }
        Ok(Self {
            st,
            dir: dir.to_path_buf(),
            n,
            layers,
            windows,
            d,
            counts,
        })
    }

    /// The inputs of examples `idx` as `[L, B, W, d]` f32, and the window mask `[B, W]`.
    pub fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        let (l, w, d) = (self.layers, self.windows, self.d);
        let per = l * w * d;
        let mut buf = Vec::with_capacity(idx.len() * per);
        let mut mask = vec![0f32; idx.len() * w];
        for (b, &i) in idx.iter().enumerate() {
            let (c, row) = (i / CHUNK, i % CHUNK);
            let view = self.st.get(&format!("features.{c}"))?;
            let bytes = &view.data()[row * per * 2..(row + 1) * per * 2];
            buf.extend(
                bytes
                    .chunks_exact(2)
                    .map(|p| half::f16::from_le_bytes([p[0], p[1]]).to_f32()),
            );
            for m in &mut mask[b * w..b * w + self.counts[i] as usize] {
                *m = 1.0;
            }
        }
        let x = Tensor::from_vec(buf, (idx.len(), l, w, d), &Device::Cpu)?
            .transpose(0, 1)?
            .contiguous()?;
        let mask = Tensor::from_vec(mask, (idx.len(), w), &Device::Cpu)?;
        Ok((x, mask))
    }
}
