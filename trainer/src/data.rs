//! Training examples from search records: reads Parquet files or folders, keeps the records of the
//! loaded model (same weight fingerprint and layer count), optionally only those whose search
//! found a correct path and whose best path is long enough, keeps one record per question, splits
//! the questions into train and validation (seeded, by question), and tokenizes each prompt the
//! way the search did.

use std::collections::HashSet;
use std::path::PathBuf;

use drllm_core::search::{read_records, SearchRecord};
use drllm_core::tasks::reward::{encode_prompt, RewardOptions};
use drllm_core::tasks::RewardMode;
use drllm_core::LoadedModel;
use serde::Serialize;

use crate::{Error, Result};

/// One training example: a prompt and the per-layer decisions of its best path.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub question: String,
    pub prompt_ids: Vec<u32>,
    /// Per layer: 0 skip, 1 execute, 2 repeat.
    pub target: Vec<u8>,
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
    pub fingerprint: String,
    pub num_layers: usize,
    pub found_only: bool,
    pub min_path_len: usize,
}

/// What the selection kept and left out, for the log and the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Selection {
    pub records: usize,
    pub other_model: usize,
    pub not_found: usize,
    pub too_short: usize,
    pub duplicate_questions: usize,
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

/// Whether `question` goes to validation: a seeded hash, so a question lands on the same side
/// whatever the order or number of records.
pub fn is_validation(question: &str, val_fraction: f64, seed: u64) -> bool {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(question.as_bytes());
    let x = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
    (x as f64 / u64::MAX as f64) < val_fraction
}

/// Tokenizes a record's prompt as its search did and checks its decisions.
pub fn example(lm: &LoadedModel, r: &SearchRecord) -> Result<Example> {
    let bad = |reason: String| Error::Record {
        example: r.example_id.clone(),
        reason,
    };
    let mode: RewardMode = r.reward_mode.parse().map_err(bad)?;
    let opts = RewardOptions::for_model(lm, mode);
    let layers = lm.model.num_layers();
    if r.best_decisions.len() != layers || r.best_decisions.iter().any(|&d| d > 2) {
        return Err(bad(format!(
            "best_decisions {:?} is not {layers} values of 0 (skip), 1 (execute) or 2 (repeat)",
            r.best_decisions
        )));
    }
    Ok(Example {
        question: r.question.clone(),
        prompt_ids: encode_prompt(lm, &r.question, &opts)?,
        target: r.best_decisions.clone(),
    })
}
