//! The job a coordinator runs: which examples to search (datasets, splits, limits), with which
//! model, reward and search settings, where the Parquet goes, and how examples are leased. Read
//! from TOML; its identity (a hash of the parsed spec) ties a state directory to one job.

use std::path::PathBuf;

use drllm_contract::Example;
use drllm_contract::{PromptStyle, RewardMode, RewardSettings, RunSettings, SearchConfig};
use drllm_proto::size::DEFAULT_MAX_MESSAGE_BYTES;
use drllm_tasks::{load_dataset, DatasetSpec};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job file {file}: {message}")]
    Parse { file: String, message: String },
    #[error("job file {file}: dataset #{index} (`{name}`): {message}")]
    Dataset {
        file: String,
        index: usize,
        name: String,
        message: String,
    },
}

/// One slice of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSlice {
    /// arc_easy, arc_challenge, dart, dart-1 … dart-5, or a .jsonl file.
    pub name: String,
    #[serde(default = "default_split")]
    pub split: String,
    /// Only the first N examples.
    pub limit: Option<usize>,
}

fn default_split() -> String {
    "train".into()
}

/// A search job (`deploy/local/run.sh` writes one; README "Distributed search" shows every key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub datasets: Vec<DatasetSlice>,
    /// Model spec workers load (a name, path or hub id); informational for the coordinator.
    #[serde(default = "default_model")]
    pub model: String,
    /// blake3 fingerprint workers' weights must have; empty: the first worker's is pinned.
    #[serde(default)]
    pub model_fingerprint: String,
    /// choice-loglik or generate.
    #[serde(default = "default_reward")]
    pub reward: RewardMode,
    /// Prompt style, instruct or base; unset: the model's default (instruct with a chat
    /// template). The optional reward keys are left out of the job's identity when unset, so
    /// state folders of jobs written before they existed still resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<PromptStyle>,
    /// generate: stop once the verdict is fixed (default true; never changes a verdict).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub early_stop: bool,
    /// choice-loglik: judge by `acc_norm` instead of `acc`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub length_normalized: bool,
    #[serde(default)]
    pub search: SearchConfig,
    /// Folder for the Parquet parts.
    pub output_dir: PathBuf,
    /// Examples per lease.
    #[serde(default = "default_shard")]
    pub shard_size: u32,
    /// How long a lease lasts without a heartbeat, seconds.
    #[serde(default = "default_ttl")]
    pub lease_ttl_secs: u64,
    /// A part file is written once this many results wait (or every `flush_secs`).
    #[serde(default = "default_part_size")]
    pub part_size: usize,
    #[serde(default = "default_flush_secs")]
    pub flush_secs: f64,
    /// The largest gRPC message the coordinator and its workers accept, MiB (default 4, gRPC's
    /// own). Examples that cannot travel within it fail alone at load; leases are packed under
    /// it. Not part of the job's identity: raise it and resume with the same state, and the
    /// examples it refused before are pending again.
    #[serde(default, skip_serializing)]
    pub max_message_mib: Option<f64>,
}

/// Bounds of `max_message_mib`: 64 KiB (smaller cannot carry a record) to 2047 MiB.
const MIN_MESSAGE_MIB: f64 = 0.0625;
const MAX_MESSAGE_MIB: f64 = 2047.0;

fn default_model() -> String {
    drllm_contract::DEFAULT_MODEL.into()
}
fn default_reward() -> RewardMode {
    RewardMode::ChoiceLoglik
}
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn default_shard() -> u32 {
    4
}
fn default_ttl() -> u64 {
    300
}
fn default_part_size() -> usize {
    1000
}
fn default_flush_secs() -> f64 {
    5.0
}

impl JobSpec {
    /// Parses and checks a spec; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, JobError> {
        let parse = |message: String| JobError::Parse {
            file: file.to_string(),
            message,
        };
        let spec: JobSpec = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
        if spec.datasets.is_empty() {
            return Err(parse(
                "`datasets` is empty: add at least one [[datasets]]".into(),
            ));
        }
        if spec.shard_size == 0 || spec.lease_ttl_secs == 0 || spec.part_size == 0 {
            return Err(parse(
                "`shard_size`, `lease_ttl_secs` and `part_size` must be at least 1".into(),
            ));
        }
        if !spec.flush_secs.is_finite() || spec.flush_secs <= 0.0 {
            return Err(parse("`flush_secs` must be positive".into()));
        }
        if let Some(m) = spec.max_message_mib {
            if !(m.is_finite() && (MIN_MESSAGE_MIB..=MAX_MESSAGE_MIB).contains(&m)) {
                return Err(parse(format!(
                    "`max_message_mib` must be between {MIN_MESSAGE_MIB} and {MAX_MESSAGE_MIB} \
                     (protobuf's own limit is 2 GiB), got {m}"
                )));
            }
        }
        Ok(spec)
    }

    /// The largest message both sides accept, bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_mib.map_or(DEFAULT_MAX_MESSAGE_BYTES, |m| {
            (m * (1u64 << 20) as f64) as usize
        })
    }

    /// The settings every worker searches with and every record carries.
    pub fn settings(&self) -> RunSettings {
        RunSettings {
            reward: RewardSettings {
                mode: self.reward,
                style: self.style,
                early_stop: self.early_stop,
                length_normalized: self.length_normalized,
            },
            search: self.search.clone(),
        }
    }

    /// The job's identity: blake3 of its canonical JSON.
    pub fn hash(&self) -> String {
        let json = serde_json::to_string(self).expect("a job spec serializes");
        blake3::hash(json.as_bytes()).to_hex()[..32].to_string()
    }

    /// Every example of the job, in order (the order fixes their keys).
    #[cfg(test)]
    pub fn examples(&self, file: &str) -> Result<Vec<Example>, JobError> {
        Ok(self
            .sourced_examples(file)?
            .into_iter()
            .map(|(e, _)| e)
            .collect())
    }

    /// Every example of the job in order, each with where it comes from (`file:line`).
    pub fn sourced_examples(&self, file: &str) -> Result<Vec<(Example, String)>, JobError> {
        let mut out = Vec::new();
        for (index, d) in self.datasets.iter().enumerate() {
            let err = |message: String| JobError::Dataset {
                file: file.to_string(),
                index: index + 1,
                name: d.name.clone(),
                message,
            };
            let spec: DatasetSpec = d
                .name
                .parse()
                .map_err(|e: drllm_tasks::DataError| err(e.to_string()))?;
            let report =
                load_dataset(&spec, &d.split, d.limit, false).map_err(|e| err(e.to_string()))?;
            let origins = report.lines.iter().map(|l| format!("{}:{l}", report.file));
            out.extend(report.examples.into_iter().zip(origins));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_gets_defaults_and_bad_specs_say_what_is_wrong() {
        let spec = JobSpec::parse(
            "output_dir = \"out\"\n[[datasets]]\nname = \"arc_easy\"\nlimit = 3\n",
            "job.toml",
        )
        .unwrap();
        assert_eq!(spec.datasets[0].split, "train");
        assert_eq!(spec.search, SearchConfig::default());
        assert_eq!(spec.examples("job.toml").unwrap().len(), 3);
        let e = JobSpec::parse("output_dir = \"o\"\ndatasets = []\n", "j.toml").unwrap_err();
        assert!(e.to_string().contains("j.toml") && e.to_string().contains("datasets"));
        let e = JobSpec::parse("output_dir = 3\n", "j.toml").unwrap_err();
        assert!(e.to_string().contains("output_dir"), "{e}");
        let e = JobSpec::parse(
            "output_dir=\"o\"\nbogus=1\n[[datasets]]\nname=\"x\"\n",
            "j.toml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert_eq!(spec.max_message_bytes(), 4 << 20);
        let big = "output_dir=\"o\"\nmax_message_mib=16\n[[datasets]]\nname=\"arc_easy\"\n";
        let big = JobSpec::parse(big, "j.toml").unwrap();
        assert_eq!(big.max_message_bytes(), 16 << 20);
        // Not part of the identity: a state resumes under a raised limit.
        let same =
            JobSpec::parse("output_dir=\"o\"\n[[datasets]]\nname=\"arc_easy\"\n", "j").unwrap();
        assert_eq!(big.hash(), same.hash());
        for m in ["0", "-1", "nan", "4096"] {
            let t = format!("output_dir=\"o\"\nmax_message_mib={m}\n[[datasets]]\nname=\"x\"\n");
            let e = JobSpec::parse(&t, "j.toml").unwrap_err().to_string();
            assert!(
                e.contains("max_message_mib") && e.contains("j.toml"),
                "{m}: {e}"
            );
        }
        let bad =
            JobSpec::parse("output_dir=\"o\"\n[[datasets]]\nname=\"nope\"\n", "j.toml").unwrap();
        let e = bad.examples("j.toml").unwrap_err();
        assert!(e.to_string().contains("dataset #1 (`nope`)"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("DRLLM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
        ))]

        /// Fuzz target: any text, or a valid job file with characters replaced, parses or is
        /// refused with an error naming the file; never a panic.
        #[test]
        fn job_files_never_panic(
            text in ".{0,200}",
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<char>()), 0..6),
        ) {
            let valid = "output_dir = \"o\"\nshard_size = 2\n[[datasets]]\nname = \"arc_easy\"\nlimit = 3\n[search]\nnum_simulations = 4\nstrategy = \"probe\"\n";
            let mut edited: Vec<char> = valid.chars().collect();
            for (at, c) in edits {
                let n = edited.len();
                edited[at % n] = c;
            }
            let edited: String = edited.into_iter().collect();
            for t in [text.as_str(), edited.as_str()] {
                if let Err(e) = JobSpec::parse(t, "job.toml") {
                    proptest::prop_assert!(e.to_string().contains("job.toml"), "{e}");
                }
            }
        }
    }
}
