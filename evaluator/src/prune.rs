//! Greedy layer pruning: the honest static baseline for routers. A router that executes n layers
//! on average must beat the best fixed n-layer path one can find without routers, not only the
//! full model. Starting from the full path, each step removes the one layer whose removal keeps
//! the accuracy highest on a held-out split (ties: higher summed gold margin, then the lower
//! layer), giving one path per length: the greedy curve. `evaluator prune` reports the curve;
//! `evaluator run --prune-split` takes its path at the routers' length.
//!
//! Every example keeps one [`PathJudge`] for the whole pruning, so the hidden states after
//! the current path's prefixes stay cached: the candidate "current path minus position k" runs
//! only the positions after k. Curves are cached on disk (`<cache>/prune/<key>.json`), keyed by
//! everything their outcomes depend on, and a deeper request continues a cached curve.

use std::cmp::Ordering;
use std::path::PathBuf;

use anyhow::Context;
use drllm_contract::Example;
use drllm_core::cli::{ModelArgs, TaskArgs};
use drllm_core::search::PathJudge;
use drllm_core::tasks::reward::RewardOptions;
use drllm_engine::{LayerPath, LoadedModel};
use serde::{Deserialize, Serialize};

/// Default memory per example for cached prefix states, MiB.
pub const DEFAULT_REUSE_MIB: usize = 16;

/// One length of the greedy curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Path positions (layers executed per token).
    pub len: usize,
    pub path: Vec<u16>,
    /// The layer this step removed from the previous (one longer) path; none for the full path.
    pub removed_layer: Option<u16>,
    pub accuracy: f64,
    pub correct: usize,
    pub examples: usize,
    /// Mean gold margin (choice-loglik only: gold score minus the best other choice's).
    pub mean_margin: Option<f64>,
}

/// Everything a curve's outcomes depend on; its blake3 names the cache file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurveKey {
    pub model_fingerprint: String,
    pub dataset: String,
    pub split: String,
    pub limit: Option<usize>,
    pub reward: String,
    pub length_normalized: bool,
    /// Prompt style (instruct or base; matters for `generate`).
    pub style: String,
    /// How the weights compute (`--exact`, `--decode-weights`, `--device`): other arithmetic,
    /// possibly other outcomes.
    pub numerics: String,
    /// blake3 of the examples themselves: an edited data file is another curve.
    pub examples_hash: String,
    /// The only layers a step may remove (`--layers`); absent: any layer. Left out of the file
    /// name's hash when absent, so curves cached before the option keep their names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removable: Option<Vec<u16>>,
}

impl CurveKey {
    pub fn new(
        model: &ModelArgs,
        lm: &LoadedModel,
        task: &TaskArgs,
        split: &str,
        examples: &[Example],
        opts: &RewardOptions,
    ) -> anyhow::Result<Self> {
        let data = serde_json::to_vec(examples).context("hashing the examples")?;
        Ok(Self {
            model_fingerprint: lm.fingerprint.clone(),
            dataset: task.dataset.name(),
            split: split.into(),
            limit: task.limit,
            reward: opts.mode.to_string(),
            length_normalized: opts.length_normalized,
            style: format!("{:?}", opts.style),
            numerics: format!(
                "exact={} decode-weights={:?} device={}",
                model.exact, model.decode_weights.0, model.device
            ),
            examples_hash: blake3::hash(&data).to_hex()[..32].to_string(),
            removable: None,
        })
    }

    /// The cache file of this key.
    pub fn file(&self) -> PathBuf {
        let bytes = serde_json::to_vec(self).expect("a key serializes");
        let name = &blake3::hash(&bytes).to_hex()[..32];
        drllm_engine::loader::cache_dir()
            .join("prune")
            .join(format!("{name}.json"))
    }
}

/// Where a curve came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Computed,
    /// The cached curve was at least as deep as asked.
    Cache,
    /// A shallower cached curve, continued.
    CacheExtended,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Computed => "computed",
            Source::Cache => "cache",
            Source::CacheExtended => "cache-extended",
        })
    }
}

/// The cache file's content.
#[derive(Serialize, Deserialize)]
struct Cached {
    key: CurveKey,
    points: Vec<CurvePoint>,
}

/// Outcomes of one path on every example.
#[derive(Debug, Clone)]
pub struct Score {
    pub correct: Vec<bool>,
    pub margin_sum: f64,
    /// Examples with a margin (choice-loglik).
    margins: usize,
}

impl Score {
    pub fn correct_count(&self) -> usize {
        self.correct.iter().filter(|&&c| c).count()
    }

    fn point(&self, path: &LayerPath, removed_layer: Option<u16>) -> CurvePoint {
        let (correct, n) = (self.correct_count(), self.correct.len());
        CurvePoint {
            len: path.len(),
            path: path.layers().to_vec(),
            removed_layer,
            accuracy: correct as f64 / n.max(1) as f64,
            correct,
            examples: n,
            mean_margin: (self.margins > 0).then(|| self.margin_sum / self.margins as f64),
        }
    }
}

/// Scores `path` on every example, each with its own evaluator (in order), calling `tick` after
/// each: the one evaluation loop of pruning candidates and of the static-pruned baseline.
pub fn score_path(
    evals: &mut [PathJudge],
    examples: &[Example],
    path: &LayerPath,
    mut tick: impl FnMut(),
) -> anyhow::Result<Score> {
    let mut s = Score {
        correct: Vec::with_capacity(evals.len()),
        margin_sum: 0.0,
        margins: 0,
    };
    for (ev, ex) in evals.iter_mut().zip(examples) {
        let o = ev
            .evaluate(path)
            .with_context(|| format!("example {} on path {path}", ex.id))?;
        s.correct.push(o.correct);
        if let Some(m) = o.margin {
            s.margin_sum += m;
            s.margins += 1;
        }
        tick();
    }
    Ok(s)
}

/// A pruning candidate's rank: accuracy, then summed gold margin, then the lower removed layer.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rank {
    correct: usize,
    margin_sum: f64,
    layer: u16,
}

impl Rank {
    fn beats(&self, other: &Self) -> bool {
        self.correct
            .cmp(&other.correct)
            .then(self.margin_sum.total_cmp(&other.margin_sum))
            .then(other.layer.cmp(&self.layer))
            == Ordering::Greater
    }
}

/// Greedy pruning of one model on one set of examples.
pub struct Pruner<'a> {
    pub lm: &'a LoadedModel,
    pub examples: &'a [Example],
    pub opts: RewardOptions,
    /// Memory per example for cached prefix states (0: no reuse).
    pub reuse_budget_bytes: usize,
    /// The only layers a step may remove (none: any). Screening candidates this way (e.g. by
    /// the single-skip keep rates of `trainer diagnose`) makes each step cost a few paths
    /// instead of L, so that the curve can be chosen on a thousand questions.
    pub removable: Option<&'a [u16]>,
}

/// One evaluator per example, with `budget` bytes of prefix cache each (0: plain evaluation).
pub fn evaluators<'a>(
    lm: &'a LoadedModel,
    examples: &'a [Example],
    opts: RewardOptions,
    budget: usize,
) -> anyhow::Result<Vec<PathJudge<'a>>> {
    examples
        .iter()
        .map(|ex| {
            PathJudge::new(lm, ex, opts, budget)
                .with_context(|| format!("preparing example {}", ex.id))
        })
        .collect()
}

impl Pruner<'_> {
    /// The greedy curve from the full path down to `down_to` positions: the cached one when it is
    /// at least that deep, else computed (continuing a shallower cached curve) and cached.
    pub fn curve(
        &self,
        key: &CurveKey,
        down_to: usize,
    ) -> anyhow::Result<(Vec<CurvePoint>, Source)> {
        let layers = self.lm.model.num_layers();
        let file = key.file();
        let (mut points, source) = match read_cache(&file, key, layers) {
            Some(p) if p.last().is_some_and(|q| q.len <= down_to) => (p, Source::Cache),
            Some(p) => (p, Source::CacheExtended),
            None => (Vec::new(), Source::Computed),
        };
        if source != Source::Cache {
            self.extend(&mut points, down_to)?;
            write_cache(&file, key, &points);
        }
        points.retain(|p| p.len >= down_to);
        Ok((points, source))
    }

    /// Adds greedy steps to `points` (started from the full path when empty) until the last path
    /// has `down_to` positions.
    fn extend(&self, points: &mut Vec<CurvePoint>, down_to: usize) -> anyhow::Result<()> {
        let layers = self.lm.model.num_layers();
        let mut evals = evaluators(self.lm, self.examples, self.opts, self.reuse_budget_bytes)?;
        if points.is_empty() {
            let full = LayerPath::full(layers);
            let bar = drllm_core::cli::progress_bar(self.examples.len());
            bar.set_message(format!("full path ({layers} layers)"));
            let s = score_path(&mut evals, self.examples, &full, || bar.inc(1))?;
            bar.finish_and_clear();
            points.push(s.point(&full, None));
        }
        let start = points.last().map_or(0, |p| p.len);
        while let Some(last) = points.last().filter(|p| p.len > down_to) {
            let current = LayerPath::new(last.path.clone(), layers)
                .with_context(|| format!("the curve's path of length {}", last.len))?;
            let label = format!(
                "step {}/{}: {} → {} layers",
                start - current.len() + 1,
                start.saturating_sub(down_to),
                current.len(),
                current.len() - 1
            );
            let point = self.step(&mut evals, &current, &label)?;
            eprintln!(
                "{label}: removed layer {}, accuracy {:.1}% ({}/{})",
                point.removed_layer.map_or(-1, i64::from),
                100.0 * point.accuracy,
                point.correct,
                point.examples
            );
            points.push(point);
        }
        Ok(())
    }

    /// One greedy step: every "current minus one position" candidate on every example; the best.
    fn step(
        &self,
        evals: &mut [PathJudge],
        current: &LayerPath,
        label: &str,
    ) -> anyhow::Result<CurvePoint> {
        let n = self.examples.len();
        let bar = drllm_core::cli::progress_bar(current.len() * n);
        bar.set_message(label.to_string());
        let mut best: Option<(Rank, LayerPath, Score)> = None;
        // Last position first: candidate k reuses the current path's first k positions and
        // touches them in every evaluator's LRU cache, so the shorter prefixes the next
        // candidates need stay while the longer ones (no longer needed) go first.
        for k in (0..current.len()).rev() {
            let mut layers = current.layers().to_vec();
            let layer = layers.remove(k);
            if self.removable.is_some_and(|r| !r.contains(&layer)) {
                bar.inc(n as u64);
                continue;
            }
            let cand = LayerPath::new(layers, current.num_layers())?;
            let s = score_path(evals, self.examples, &cand, || bar.inc(1))?;
            let rank = Rank {
                correct: s.correct_count(),
                margin_sum: s.margin_sum,
                layer,
            };
            if best.as_ref().is_none_or(|(b, ..)| rank.beats(b)) {
                best = Some((rank, cand, s));
            }
            if let Some((b, ..)) = &best {
                bar.set_message(format!(
                    "{label}, best so far: drop layer {} → {:.1}%",
                    b.layer,
                    100.0 * b.correct as f64 / n.max(1) as f64
                ));
            }
        }
        bar.finish_and_clear();
        let (rank, path, s) = best.context("no layer left to remove")?;
        Ok(s.point(&path, Some(rank.layer)))
    }
}

/// The cached curve of `key`, when there is a sound one (anything else is reported and ignored).
fn read_cache(file: &std::path::Path, key: &CurveKey, layers: usize) -> Option<Vec<CurvePoint>> {
    let text = std::fs::read_to_string(file).ok()?;
    let c: Cached = match serde_json::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "ignoring the unreadable pruning cache {}: {e}",
                file.display()
            );
            return None;
        }
    };
    let chained = c.points.first().is_some_and(|p| p.len == layers)
        && c.points.windows(2).all(|w| w[1].len + 1 == w[0].len);
    if c.key != *key || !chained {
        eprintln!(
            "ignoring the pruning cache {}: another key or a broken curve",
            file.display()
        );
        return None;
    }
    Some(c.points)
}

/// Stores a curve (atomically, [`drllm_records::atomic`]); a failure is only reported: the
/// cache saves time, the result stands without it.
fn write_cache(file: &std::path::Path, key: &CurveKey, points: &[CurvePoint]) {
    let write = || -> anyhow::Result<()> {
        let dir = file.parent().context("cache file without folder")?;
        std::fs::create_dir_all(dir)?;
        let c = Cached {
            key: key.clone(),
            points: points.to_vec(),
        };
        let json = serde_json::to_string_pretty(&c)?;
        drllm_records::atomic::write_atomically(file, |tmp| std::fs::write(tmp, &json))?;
        Ok(())
    };
    if let Err(e) = write() {
        eprintln!(
            "could not cache the pruning curve in {}: {e:#}",
            file.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rank(correct: usize, margin_sum: f64, layer: u16) -> Rank {
        Rank {
            correct,
            margin_sum,
            layer,
        }
    }

    #[test]
    fn ranks_by_accuracy_then_margin_then_lower_layer() {
        assert!(rank(5, -9.0, 20).beats(&rank(4, 9.0, 1)));
        assert!(rank(5, 1.5, 20).beats(&rank(5, 1.0, 1)));
        assert!(rank(5, 1.0, 3).beats(&rank(5, 1.0, 4)));
        assert!(!rank(5, 1.0, 4).beats(&rank(5, 1.0, 3)));
        assert!(!rank(5, 1.0, 3).beats(&rank(5, 1.0, 3)));
    }

    fn key() -> CurveKey {
        CurveKey {
            model_fingerprint: "f".repeat(32),
            dataset: "arc_easy".into(),
            split: "dev".into(),
            limit: Some(5),
            reward: "choice-loglik".into(),
            length_normalized: false,
            style: "Base".into(),
            numerics: "exact=false".into(),
            examples_hash: "e".repeat(32),
            removable: None,
        }
    }

    fn point(len: usize) -> CurvePoint {
        CurvePoint {
            len,
            path: (0..len as u16).collect(),
            removed_layer: (len < 4).then_some(len as u16),
            accuracy: 0.5,
            correct: 1,
            examples: 2,
            mean_margin: Some(0.25),
        }
    }

    #[test]
    fn every_key_field_names_another_file() {
        let k = key();
        assert_eq!(k.file(), key().file());
        let variants = [
            CurveKey {
                split: "test".into(),
                ..key()
            },
            CurveKey {
                limit: None,
                ..key()
            },
            CurveKey {
                length_normalized: true,
                ..key()
            },
            CurveKey {
                reward: "generate".into(),
                ..key()
            },
            CurveKey {
                examples_hash: "d".repeat(32),
                ..key()
            },
            CurveKey {
                removable: Some(vec![17, 26]),
                ..key()
            },
        ];
        for v in variants {
            assert_ne!(v.file(), k.file(), "{v:?}");
        }
    }

    #[test]
    fn cache_round_trips_and_rejects_foreign_or_broken_curves() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/c.json");
        let points: Vec<_> = (2..=4).rev().map(point).collect();
        write_cache(&file, &key(), &points);
        assert_eq!(read_cache(&file, &key(), 4), Some(points.clone()));
        let other = CurveKey {
            split: "test".into(),
            ..key()
        };
        assert_eq!(read_cache(&file, &other, 4), None, "another key");
        assert_eq!(read_cache(&file, &key(), 5), None, "another depth");
        write_cache(&file, &key(), &[point(4), point(2)]);
        assert_eq!(read_cache(&file, &key(), 4), None, "a gap in the curve");
        std::fs::write(&file, "{").unwrap();
        assert_eq!(read_cache(&file, &key(), 4), None, "not JSON");
    }
}
