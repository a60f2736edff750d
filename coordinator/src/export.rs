//! `coordinator export`: a job's records in another project's format. `--format drllm-json`
//! writes the official Dr.LLM search output (parameterlab/dr-llm `data_generation.py`), which
//! the official `train.py` trains routers from ([`drllm_records::official`]).

use std::path::PathBuf;

use anyhow::Context;
use drllm_contract::SearchRecord;
use drllm_records::official::{timestamp, OfficialRun};

/// Formats `export` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Format {
    /// The official Dr.LLM search JSON (one model, one dataset per file; found questions only).
    DrllmJson,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum)]
    format: Format,
    /// Parquet parts: folders (a job's output_dir) or files.
    #[arg(required = true, num_args = 1..)]
    parts: Vec<PathBuf>,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// `model_name` in the file: the exact `--model_id` the official train.py will be given (a
    /// Hugging Face id); default: the records' model spec.
    #[arg(long)]
    model_name: Option<String>,
    /// Only the records of this dataset (an official file holds one).
    #[arg(long)]
    dataset: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let Format::DrllmJson = a.format;
    let mut records: Vec<SearchRecord> = Vec::new();
    for p in &a.parts {
        records.extend(
            drllm_records::read_records(p).with_context(|| format!("reading {}", p.display()))?,
        );
    }
    if let Some(d) = &a.dataset {
        records.retain(|r| &r.dataset == d);
        anyhow::ensure!(!records.is_empty(), "no records of dataset `{d}`");
    }
    let model = a
        .model_name
        .clone()
        .or_else(|| records.first().map(|r| r.model_id.clone()))
        .context("no records in the parts given")?;
    let newest = records.iter().map(|r| r.timestamp_ms).max().unwrap_or(0);
    let run = OfficialRun::from_records(&records, &model, timestamp(newest))?;
    let modes: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| r.settings.reward.mode.to_string())
        .collect();
    run.write(&a.out)?;
    eprintln!(
        "{}: {} of {} questions (the found ones), dataset {}, model_name {model}, reward {}",
        a.out.display(),
        run.len(),
        records.len(),
        run.dataset,
        modes.into_iter().collect::<Vec<_>>().join("+"),
    );
    if run.instruct() != records.iter().any(is_templated) {
        eprintln!(
            "note: the official train.py applies the chat template only when `instruct` is in \
             --model_id; these records' prompts were {}templated",
            if run.instruct() { "not " } else { "" }
        );
    }
    Ok(())
}

/// Whether a record's prompt went through the chat template (generate with instruct prompts).
fn is_templated(r: &SearchRecord) -> bool {
    use drllm_contract::{PromptStyle, RewardMode};
    r.settings.reward.mode == RewardMode::Generate
        && r.settings.reward.style != Some(PromptStyle::Base)
}
