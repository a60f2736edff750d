//! The official Dr.LLM repository's search output (parameterlab/dr-llm, `data_generation.py`),
//! so that records can go to and come from it: one JSON object per run and dataset, with the
//! run's settings and aggregates and, per question, entries at the same index of parallel lists
//! (`questions`, `best_path`, `good_paths`, `original_correct`, …). A path is a list of layer
//! indices in execution order (a repeat is the same index twice), like our `best_path`; the
//! official `train.py` reads `model_name`, `dataset`, `questions`, `best_path`, `best_response`
//! (which holds the **gold answer**, not a model output) and `original_correct`.
//!
//! [`OfficialRun::read`] checks what a reader needs (the lists present and of one length) and
//! names the file and field otherwise; [`OfficialRun::from_records`] builds the file from our
//! records (found ones only, as the official `--is_train` keeps). Turning an official question
//! into a [`SearchRecord`] needs the model (its depth and fingerprint) and lives in the trainer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use drllm_contract::{SearchRecord, Strategy};

/// Why an official search file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OfficialError {
    /// The file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not JSON of the official format; serde's message names the field, line and column.
    #[error("{}: not an official Dr.LLM search file (data_generation.py output): {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Records that cannot be written in the official format.
    #[error("cannot export: {0}")]
    Export(String),
}

/// One official search file. Fields the official `train.py` does not need default when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfficialRun {
    /// A free label of the run (`mcts_parallel`).
    #[serde(default)]
    pub exp: String,
    /// 100 × mean of `original_correct`.
    #[serde(default)]
    pub original_accuracy: f64,
    /// 100 × mean of `mcts_correct`.
    #[serde(default)]
    pub mcts_accuracy: f64,
    /// 100 × mean of `improved_cases`.
    #[serde(default)]
    pub improved_cases_accuracy: f64,
    /// Mean of `path_lengths`.
    #[serde(default)]
    pub average_path_length: f64,
    /// Mean of `unique_layers`.
    #[serde(default)]
    pub average_unique_layers: f64,
    /// MCTS simulations per question.
    #[serde(default)]
    pub num_simulations: u64,
    /// UCB exploration constant (our `exploration`).
    #[serde(default)]
    pub exploration_constant: f64,
    /// Length penalty λ.
    #[serde(default)]
    pub length_penalty: f64,
    /// Probability of a random child at each selection step.
    #[serde(default)]
    pub random_prob: f64,
    /// Recorded by the official search but not used by it.
    #[serde(default)]
    pub max_path_length: u64,
    /// GPUs the official search ran on.
    #[serde(default)]
    pub world_size: u64,
    /// Questions asked for.
    #[serde(default)]
    pub num_samples: u64,
    /// `%Y-%m-%d %H:%M:%S`, the searching machine's local time.
    #[serde(default)]
    pub timestamp: String,
    /// Hugging Face id of the model searched; `train.py --model_id` must equal it.
    pub model_name: String,
    /// `arc_easy`, `arc_challenge`, `dart-1` … `dart-5`.
    pub dataset: String,
    /// Questions searched, the dropped ones (no good path) included.
    #[serde(default)]
    pub visited_samples: u64,
    /// Skip action sizes.
    #[serde(default)]
    pub skip_size: Vec<u64>,
    /// Repeat action sizes.
    #[serde(default)]
    pub repeat_size: Vec<u64>,
    /// Repeat counts.
    #[serde(default)]
    pub repeat_count: Vec<u64>,
    /// Per question: the full model is right (0/1).
    #[serde(deserialize_with = "flags")]
    pub original_correct: Vec<u8>,
    /// Per question: a good path was found (0/1); absent: every question (training files).
    #[serde(default, deserialize_with = "flags")]
    pub mcts_correct: Vec<u8>,
    /// Per question: found while the full model is wrong.
    #[serde(default)]
    pub improved_cases: Vec<bool>,
    /// Per question: `best_path`'s length.
    #[serde(default)]
    pub path_lengths: Vec<u64>,
    /// Per question: distinct layers of `best_path`.
    #[serde(default)]
    pub unique_layers: Vec<u64>,
    /// Per question: the best path (layer indices in execution order).
    pub best_path: Vec<Vec<u16>>,
    /// Per question: every good path, in the order first judged.
    #[serde(default)]
    pub good_paths: Vec<Vec<Vec<u16>>>,
    /// Per question: the gold answer.
    pub best_response: Vec<String>,
    /// Per question: the task prompt, before any chat template.
    pub questions: Vec<String>,
}

/// 0/1 flags written as integers or booleans.
fn flags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(u8),
    }
    let v = Vec::<Flag>::deserialize(d)?;
    v.into_iter()
        .map(|f| match f {
            Flag::Bool(b) => Ok(u8::from(b)),
            Flag::Int(i @ (0 | 1)) => Ok(i),
            Flag::Int(i) => Err(serde::de::Error::custom(format!("a 0/1 flag, found {i}"))),
        })
        .collect()
}

impl OfficialRun {
    /// Number of questions.
    pub fn len(&self) -> usize {
        self.questions.len()
    }

    /// No questions.
    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }

    /// Whether the official search's prompts for this model were chat-templated (its
    /// `get_is_instruct`: "instruct" in the name, or a Qwen3 that is not a base model).
    pub fn instruct(&self) -> bool {
        let n = self.model_name.to_lowercase();
        n.contains("instruct") || (n.contains("qwen3") && !n.contains("base"))
    }

    /// Reads a file, checking that every per-question list has one entry per question.
    pub fn read(path: &Path) -> Result<Self, OfficialError> {
        let text = std::fs::read_to_string(path).map_err(|source| OfficialError::Io {
            path: path.into(),
            source,
        })?;
        let format = |reason: String| OfficialError::Format {
            path: path.into(),
            reason,
        };
        let run: OfficialRun = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
        let n = run.len();
        let lens = [
            ("best_path", run.best_path.len()),
            ("best_response", run.best_response.len()),
            ("original_correct", run.original_correct.len()),
        ];
        let optional = [
            ("mcts_correct", run.mcts_correct.len()),
            ("good_paths", run.good_paths.len()),
            ("improved_cases", run.improved_cases.len()),
            ("path_lengths", run.path_lengths.len()),
            ("unique_layers", run.unique_layers.len()),
        ];
        let optional = optional.into_iter().filter(|&(_, len)| len > 0);
        for (key, len) in lens.into_iter().chain(optional) {
            if len != n {
                return Err(format(format!(
                    "`{key}` has {len} entries but `questions` has {n}: the lists are per \
                     question and must be of one length"
                )));
            }
        }
        Ok(run)
    }

    /// Writes the file (pretty JSON, fields in the official order) atomically.
    pub fn write(&self, path: &Path) -> Result<(), OfficialError> {
        let json = serde_json::to_string_pretty(self).expect("an official run serializes");
        crate::atomic::write_atomically(path, |tmp| std::fs::write(tmp, &json)).map_err(|e| {
            OfficialError::Io {
                path: path.into(),
                source: std::io::Error::other(e.to_string()),
            }
        })
    }

    /// The official file of `records` (one model, one dataset): the found ones, in order, with
    /// `best_response` = the gold answer as the official code writes it; `model_name` is what
    /// `train.py --model_id` will be given. Aggregates are computed as the official search does.
    pub fn from_records(
        records: &[SearchRecord],
        model_name: &str,
        timestamp: String,
    ) -> Result<Self, OfficialError> {
        let first = records
            .first()
            .ok_or_else(|| OfficialError::Export("no records".into()))?;
        for r in records {
            for (what, a, b) in [
                ("datasets", &r.dataset, &first.dataset),
                ("models", &r.model_fingerprint, &first.model_fingerprint),
            ] {
                if a != b {
                    return Err(OfficialError::Export(format!(
                        "the records mix {what} ({b} and {a}); an official file holds one model \
                         and one dataset: pass one dataset's parts (or --dataset)"
                    )));
                }
            }
        }
        let found: Vec<&SearchRecord> = records.iter().filter(|r| r.found).collect();
        let mean = |f: &dyn Fn(&SearchRecord) -> f64| {
            found.iter().map(|r| f(r)).sum::<f64>() / found.len().max(1) as f64
        };
        let search = &first.settings.search;
        Ok(Self {
            exp: match search.strategy {
                Strategy::Mcts => "drllm-mcts".into(),
                Strategy::Probe => "drllm-probe".into(),
                Strategy::ProbeSkips => "drllm-probe-skips".into(),
            },
            original_accuracy: 100.0 * mean(&|r| f64::from(u8::from(r.original_correct))),
            mcts_accuracy: 100.0,
            improved_cases_accuracy: 100.0 * mean(&|r| f64::from(u8::from(!r.original_correct))),
            average_path_length: mean(&|r| r.best_path.len() as f64),
            average_unique_layers: mean(&|r| f64::from(r.distinct_layers)),
            num_simulations: search.num_simulations as u64,
            exploration_constant: search.exploration,
            length_penalty: search.length_penalty,
            random_prob: search.random_prob,
            max_path_length: search.max_len_factor as u64 * u64::from(first.num_layers),
            world_size: 1,
            num_samples: found.len() as u64,
            timestamp,
            model_name: model_name.into(),
            dataset: first.dataset.clone(),
            visited_samples: records.len() as u64,
            skip_size: vec![1, 2],
            repeat_size: vec![1],
            repeat_count: vec![0, 1],
            original_correct: found.iter().map(|r| u8::from(r.original_correct)).collect(),
            mcts_correct: vec![1; found.len()],
            improved_cases: found.iter().map(|r| !r.original_correct).collect(),
            path_lengths: found.iter().map(|r| r.best_path.len() as u64).collect(),
            unique_layers: found.iter().map(|r| u64::from(r.distinct_layers)).collect(),
            best_path: found.iter().map(|r| r.best_path.clone()).collect(),
            good_paths: found.iter().map(|r| r.good_paths.clone()).collect(),
            best_response: found.iter().map(|r| r.gold.clone()).collect(),
            questions: found.iter().map(|r| r.question.clone()).collect(),
        })
    }
}

/// `%Y-%m-%d %H:%M:%S` (UTC) of milliseconds since the Unix epoch, as the official files stamp
/// their runs.
pub fn timestamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(timestamp(1_796_083_199_000), "2026-11-30 23:59:59");
    }

    #[test]
    fn a_file_with_lists_of_other_lengths_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.json");
        let body = r#"{"model_name": "m", "dataset": "arc_easy", "questions": ["a", "b"],
            "best_path": [[0, 1]], "best_response": ["A", "B"], "original_correct": [1, 0]}"#;
        std::fs::write(&p, body).unwrap();
        let e = OfficialRun::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("`best_path` has 1 entries but `questions` has 2"),
            "{e}"
        );
        std::fs::write(&p, r#"{"records": []}"#).unwrap();
        let e = OfficialRun::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("not an official Dr.LLM search file") && e.contains("model_name"),
            "{e}"
        );
        std::fs::write(
            &p,
            body.replace("[1, 0]", "[1, 3]")
                .replace("[[0, 1]]", "[[0], [1]]"),
        )
        .unwrap();
        let e = OfficialRun::read(&p).unwrap_err().to_string();
        assert!(e.contains("a 0/1 flag, found 3"), "{e}");
    }
}
