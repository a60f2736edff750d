//! Reference outputs of a model and the check of this engine against them. The format is that of
//! `../shared/reference`: prompts with their token ids, llama.cpp's top-10 next-token logits and,
//! per layer path, the top-10 logits and first 8 greedy tokens of an exact float32 implementation.
//! The parity tests run [`check`] on the CPU; `worker parity` runs it on any device (a CUDA build
//! on a GPU host), so both judge with the same code.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{greedy, LayerPath, LoadedModel, Logits, Model, PathCache};

/// One prompt of a reference file.
#[derive(Debug, Clone, Deserialize)]
pub struct RefPrompt {
    /// Label of the prompt in reports.
    pub name: String,
    /// The prompt text.
    pub text: String,
    /// The reference tokenizer's ids of `text`, without special tokens added.
    pub ids: Vec<u32>,
    /// llama.cpp's `[id, logit]` top-10 at the last position, full depth.
    pub llama_cpp_top10: Vec<(u32, f32)>,
    /// The layer paths with exact outputs.
    pub paths: Vec<RefPath>,
}

/// Exact float32 outputs of one layer path.
#[derive(Debug, Clone, Deserialize)]
pub struct RefPath {
    /// Label of the path in reports.
    pub name: String,
    /// Layer indices in execution order.
    pub path: Vec<u16>,
    /// `[id, logit]` top-10 at the prompt's last position under this path, largest first.
    pub exact_top10: Vec<(u32, f32)>,
    /// The first 8 greedy tokens (fewer when EOS came first).
    pub exact_greedy8: Vec<u32>,
}

/// Reads a reference file.
pub fn read(path: &Path) -> Result<Vec<RefPrompt>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        reason: format!("not a reference file: {e}"),
    })
}

/// How this engine did on one prompt and path.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// [`RefPrompt::name`].
    pub prompt: String,
    /// [`RefPath::name`].
    pub path: String,
    /// The tokenizer gave the reference's ids.
    pub ids_match: bool,
    /// Largest |ours − reference| over the reference's top-10 ids.
    pub max_logit_diff: f32,
    /// Our top-1 token is the reference's.
    pub top1_match: bool,
    /// Our greedy tokens equal the reference's.
    pub greedy_match: bool,
    /// Our first 8 greedy tokens (fewer when EOS came first).
    pub greedy: Vec<u32>,
}

impl PathReport {
    /// Everything matches, logits within `tolerance`.
    pub fn passes(&self, tolerance: f32) -> bool {
        self.ids_match && self.top1_match && self.greedy_match && self.max_logit_diff < tolerance
    }
}

/// Runs every prompt of `prompts` under every reference path on `lm` (whatever its device and
/// arithmetic) and compares: token ids, the reference's top-10 logits, the top-1, the greedy
/// tokens. Judging is the caller's (see [`PathReport::passes`]).
pub fn check(lm: &LoadedModel, prompts: &[RefPrompt]) -> Result<Vec<PathReport>> {
    let l = lm.model.num_layers();
    let mut out = Vec::new();
    for p in prompts {
        let ids_match = lm.tokenizer.encode(&p.text, false)? == p.ids;
        for r in &p.paths {
            let path = LayerPath::new(r.path.clone(), l)?;
            let logits = last_logits(&lm.model, &p.ids, &path)?;
            let max_logit_diff = r
                .exact_top10
                .iter()
                .map(|&(id, v)| (logits[id as usize] - v).abs())
                .fold(0f32, f32::max);
            let g = greedy(&lm.model, &p.ids, &path, 8, |_| false)?;
            out.push(PathReport {
                prompt: p.name.clone(),
                path: r.name.clone(),
                ids_match,
                max_logit_diff,
                top1_match: r.exact_top10.first().map(|t| t.0) == Some(top(&logits, 1)[0].0),
                greedy_match: g.tokens == r.exact_greedy8,
                greedy: g.tokens,
            });
        }
    }
    Ok(out)
}

/// The next-token logits after `ids` along `path`.
pub fn last_logits(model: &Model, ids: &[u32], path: &LayerPath) -> Result<Vec<f32>> {
    let mut cache = PathCache::new(path);
    Ok(model
        .forward(ids, path, &mut cache, 0, Logits::Last)?
        .flatten_all()?
        .to_vec1()?)
}

/// The `k` largest logits as `(id, logit)`, largest first.
pub fn top(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    // One pass keeping the best k in order (ties: the lower index first), not a sort of the whole
    // vocabulary: a server asks for this at every position of every prompt. A large k (a parity
    // check printing every logit) sorts instead: inserting would cost k per element.
    if k > 256 {
        let mut all: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &x)| (i as u32, x))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all.truncate(k);
        return all;
    }
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &x) in logits.iter().enumerate() {
        if k == 0 || (best.len() == k && x.total_cmp(&best[k - 1].1).is_le()) {
            continue;
        }
        let at = best.partition_point(|&(_, y)| y.total_cmp(&x).is_ge());
        best.insert(at, (i as u32, x));
        best.truncate(k);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::top;

    /// The one-pass selection equals a stable sort of the whole vector, ties included.
    #[test]
    fn top_k_equals_a_full_sort() {
        let logits: Vec<f32> = (0..5000u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 20) % 97) as f32 * 0.5 - 20.0)
            .collect();
        for k in [0, 1, 2, 5, 20, 97, 200, 300, 6000] {
            let mut idx: Vec<usize> = (0..logits.len()).collect();
            idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            let want: Vec<(u32, f32)> =
                idx.iter().take(k).map(|&i| (i as u32, logits[i])).collect();
            assert_eq!(top(&logits, k), want, "k = {k}");
        }
    }
}
