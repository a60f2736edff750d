//! Training examples from search records: reads Parquet files or folders, keeps the records of the
//! loaded model (same weight fingerprint and layer count), optionally only those whose search
//! found a correct path and whose best path is long enough, keeps one record per question, splits
//! the questions into train and validation (seeded, by question), and tokenizes each prompt the
//! way the search did, and turns each record into per-layer targets: the best path's decisions
//! (the paper) or a distribution from all its good paths ([`Targets::Soft`]).

use std::collections::HashSet;
use std::path::PathBuf;

use drllm_contract::RewardSettings;
use drllm_contract::SearchRecord;
use drllm_core::router::{decision_labels, majority, Targets};
use drllm_core::tasks::reward::{encode_prompt, RewardOptions};
use drllm_engine::LoadedModel;
use drllm_records::read_records;
use serde::Serialize;

use crate::{Error, Result};

/// One training example: a prompt, the path its router inputs are teacher-forced along, and the
/// per-layer target distributions.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The record's question (its prompt before any chat template).
    pub question: String,
    /// The prompt's token ids, as the record's search read them.
    pub prompt_ids: Vec<u32>,
    /// Per layer: 0 skip, 1 execute, 2 repeat — the teacher-forced path (the best path, or the
    /// weighted majority of the soft targets).
    pub target: Vec<u8>,
    /// Per layer: probability of skip, execute, repeat (one-hot of `target` for best-path
    /// targets).
    pub labels: Vec<[f32; 3]>,
}

impl Example {
    /// Identity in the feature cache: what the teacher-forced pass reads.
    pub fn key(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        for id in &self.prompt_ids {
            h.update(&id.to_le_bytes());
        }
        h.update(&[0xff]);
        h.update(&self.target);
        h.finalize()
    }
}

/// Which records to keep.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The loaded model's weight fingerprint: records of other weights are left out.
    pub fingerprint: String,
    /// The loaded model's depth L.
    pub num_layers: usize,
    /// Keep only records whose search found a good path.
    pub found_only: bool,
    /// Leave out records whose best path is shorter than this many positions.
    pub min_path_len: usize,
}

/// What the selection kept and left out, for the log and the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Selection {
    /// Records read.
    pub records: usize,
    /// Left out: searched on other weights or another depth.
    pub other_model: usize,
    /// Left out: no good path found (with `found_only`).
    pub not_found: usize,
    /// Left out: best path shorter than `min_path_len`.
    pub too_short: usize,
    /// Left out: a later record of a question already kept.
    pub duplicate_questions: usize,
    /// Records kept.
    pub kept: usize,
}

/// Every record under `paths` (files or folders of `*.parquet`).
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<SearchRecord>> {
    let mut out = Vec::new();
    for p in paths {
        let input = |reason: String| Error::Input {
            path: p.display().to_string(),
            reason,
        };
        if !p.exists() {
            return Err(input("no such file or folder".into()));
        }
        let recs = read_records(p).map_err(|e| input(e.to_string()))?;
        if recs.is_empty() {
            return Err(input(
                "holds no search records (an empty file, or a folder without .parquet files)"
                    .into(),
            ));
        }
        out.extend(recs);
    }
    Ok(out)
}

/// Keeps the records `f` asks for, one per question (the first read).
pub fn select(records: Vec<SearchRecord>, f: &Filter) -> Result<(Vec<SearchRecord>, Selection)> {
    let mut s = Selection {
        records: records.len(),
        ..Default::default()
    };
    let mut other = HashSet::new();
    let mut seen = HashSet::new();
    let mut kept = Vec::new();
    for r in records {
        if r.model_fingerprint != f.fingerprint || r.num_layers as usize != f.num_layers {
            other.insert(format!("{} ({} layers)", r.model_fingerprint, r.num_layers));
            s.other_model += 1;
        } else if f.found_only && !r.found {
            s.not_found += 1;
        } else if r.best_path.len() < f.min_path_len {
            s.too_short += 1;
        } else if !seen.insert(r.question.clone()) {
            s.duplicate_questions += 1;
        } else {
            kept.push(r);
        }
    }
    s.kept = kept.len();
    if kept.is_empty() {
        let mut why = format!(
            "no record to train on: of {} records, {} are of another model, {} found no path, {} have a best path shorter than {}",
            s.records, s.other_model, s.not_found, s.too_short, f.min_path_len
        );
        if !other.is_empty() {
            let mut o: Vec<String> = other.into_iter().collect();
            o.sort();
            why += &format!(
                " (the loaded model is {} with {} layers; the records are of {}: load that model with --model)",
                f.fingerprint,
                f.num_layers,
                o.join(", ")
            );
        }
        return Err(Error::Selection(why));
    }
    Ok((kept, s))
}

/// The reward settings (resolved on `lm`) all `records` were searched with, for the checkpoint
/// to record; `None` when they differ (each record is still tokenized as its search did).
pub fn common_reward(lm: &LoadedModel, records: &[SearchRecord]) -> Result<Option<RewardSettings>> {
    let mut seen: Option<RewardSettings> = None;
    for r in records {
        let s = RewardOptions::resolve(lm, &r.settings.reward)?.settings();
        let s = RewardSettings {
            // Early stop never changes a verdict; it is not part of what the routers read.
            early_stop: true,
            ..s
        };
        match seen {
            None => seen = Some(s),
            Some(p) if p != s => {
                tracing::warn!(first = ?p, other = ?s, example = %r.example_id, "records were searched with different reward settings; the checkpoint records none");
                return Ok(None);
            }
            _ => {}
        }
    }
    Ok(seen)
}

/// Whether `question` goes to validation: a seeded hash, so a question lands on the same side
/// whatever the order or number of records.
pub fn is_validation(question: &str, val_fraction: f64, seed: u64) -> bool {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(question.as_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    (x as f64 / u64::MAX as f64) < val_fraction
}

/// Tokenizes a record's prompt as its search did, checks its decisions and builds its targets.
pub fn example(lm: &LoadedModel, r: &SearchRecord, targets: Targets) -> Result<Example> {
    let bad = |reason: String| Error::Record {
        example: r.example_id.clone(),
        reason,
    };
    let opts = RewardOptions::resolve(lm, &r.settings.reward).map_err(|e| bad(e.to_string()))?;
    let layers = lm.model.num_layers();
    if r.best_decisions.len() != layers || r.best_decisions.iter().any(|&d| d > 2) {
        return Err(bad(format!(
            "best_decisions {:?} is not {layers} values of 0 (skip), 1 (execute) or 2 (repeat)",
            r.best_decisions
        )));
    }
    let labels = soft_labels(r, targets).map_err(bad)?;
    Ok(Example {
        question: r.question.clone(),
        prompt_ids: encode_prompt(lm, &r.question, &opts)?,
        target: labels.iter().map(|&q| majority(q)).collect(),
        labels,
    })
}

/// Per-layer target distributions of a record: its best path one-hot ([`Targets::Best`], and a
/// record without good paths), else a distribution over skip / execute / repeat from its good
/// paths ([`Targets::Soft`]).
pub fn soft_labels(
    r: &SearchRecord,
    targets: Targets,
) -> std::result::Result<Vec<[f32; 3]>, String> {
    let Targets::Soft {
        beta,
        full_weight,
        margin_weight,
    } = targets
    else {
        return Ok(decision_labels(&r.best_decisions));
    };
    let l = r.num_layers as usize;
    if r.good_paths.is_empty() {
        return Ok(decision_labels(&r.best_decisions));
    }
    let shortest = r.good_paths.iter().map(Vec::len).min().unwrap_or(l);
    let margins = (r.good_margins.len() == r.good_paths.len()).then_some(&r.good_margins);
    let mut weights = Vec::with_capacity(r.good_paths.len());
    let mut counts = Vec::with_capacity(r.good_paths.len());
    for (i, p) in r.good_paths.iter().enumerate() {
        let path = drllm_engine::LayerPath::new(p.clone(), l)
            .map_err(|e| format!("good path #{i} {p:?}: {e}"))?;
        let full = p.len() == l && path.counts().iter().all(|&c| c == 1);
        let mut w = (-beta * p.len() as f64 / l as f64).exp();
        if full && shortest < l {
            w *= full_weight;
        }
        if let Some(m) = margins.map(|m| m[i]).filter(|m| m.is_finite()) {
            w *= (margin_weight * m.clamp(-10.0, 10.0)).exp();
        }
        weights.push(w);
        counts.push(path.counts());
    }
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(format!(
            "good-path weights sum to {total}: check --soft-beta and --soft-full-weight"
        ));
    }
    let mut labels = vec![[0f32; 3]; l];
    for (w, c) in weights.iter().zip(&counts) {
        for (q, &k) in labels.iter_mut().zip(c) {
            q[k.min(2) as usize] += (w / total) as f32;
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(good: Vec<Vec<u16>>, margins: Vec<f64>) -> SearchRecord {
        SearchRecord {
            example_id: "e".into(),
            dataset: "arc_easy".into(),
            split: "train".into(),
            question: "Q".into(),
            gold: "A".into(),
            model_id: "m".into(),
            model_fingerprint: "f".into(),
            num_layers: 4,
            original_correct: true,
            found: !good.is_empty(),
            best_path: vec![0, 1, 2, 3],
            best_decisions: vec![1, 1, 1, 1],
            distinct_layers: 4,
            good_paths: good,
            good_margins: margins,
            original_margin: Some(1.0),
            best_response: None,
            simulations: 1,
            distinct_paths: 1,
            layer_executions: 0,
            wall_seconds: 0.0,
            settings: Default::default(),
            worker_id: "w".into(),
            timestamp_ms: 0,
        }
    }

    const SOFT: Targets = Targets::Soft {
        beta: 4.0,
        full_weight: 0.5,
        margin_weight: 0.0,
    };

    #[test]
    fn soft_labels_weigh_shorter_paths_more_and_the_full_path_less() {
        // Full path, skip 1 (len 3), skip 1 and 2 (len 2), repeat 3 (len 5).
        let r = record(
            vec![
                vec![0, 1, 2, 3],
                vec![0, 2, 3],
                vec![0, 3],
                vec![0, 1, 2, 3, 3],
            ],
            vec![],
        );
        let q = soft_labels(&r, SOFT).unwrap();
        let w = [
            0.5 * (-4.0f64).exp(),
            (-3.0f64).exp(),
            (-2.0f64).exp(),
            (-5.0f64).exp(),
        ];
        let t: f64 = w.iter().sum();
        for l in &q {
            assert!((l.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{l:?}");
        }
        // Layer 1 is skipped by paths 2 and 3; layer 3 repeated by path 4 only.
        assert!((q[1][0] as f64 - (w[1] + w[2]) / t).abs() < 1e-6, "{q:?}");
        assert!((q[2][0] as f64 - w[2] / t).abs() < 1e-6);
        assert!((q[3][2] as f64 - w[3] / t).abs() < 1e-6);
        assert_eq!(q[0], [0.0, 1.0, 0.0]);
        // The majority is the teacher path: the short paths dominate (skip 1 and 2), execute 3.
        let m: Vec<u8> = q.iter().map(|&x| majority(x)).collect();
        assert_eq!(m, [1, 0, 0, 1]);
    }

    #[test]
    fn margins_shift_the_weights_and_unfound_records_keep_the_full_path() {
        let r = record(vec![vec![0, 2, 3], vec![0, 1, 3]], vec![0.1, 2.0]);
        let plain = soft_labels(&r, SOFT).unwrap();
        assert!((plain[1][0] - 0.5).abs() < 1e-6 && (plain[2][0] - 0.5).abs() < 1e-6);
        let by_margin = Targets::Soft {
            beta: 4.0,
            full_weight: 0.5,
            margin_weight: 1.0,
        };
        let q = soft_labels(&r, by_margin).unwrap();
        assert!(q[2][0] > 0.8, "the path that wins by 2.0 dominates: {q:?}");
        let none = record(vec![], vec![]);
        assert_eq!(soft_labels(&none, SOFT).unwrap(), vec![[0.0, 1.0, 0.0]; 4]);
        // A path that is not valid for the model is named.
        let bad = record(vec![vec![0, 9]], vec![]);
        assert!(soft_labels(&bad, SOFT)
            .unwrap_err()
            .contains("good path #0"));
    }
}
