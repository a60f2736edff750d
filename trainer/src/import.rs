//! `trainer import-drllm`: the official Dr.LLM search output (parameterlab/dr-llm
//! `data_generation.py`, read by [`drllm_records::official`]) as our Parquet records, so that
//! `trainer train` fits routers from searches people already ran. Each question becomes a record
//! of the model named with `--model` (its fingerprint and depth; every path is checked against
//! that depth), with the settings the official search ran with: generate reward, the prompt
//! style its `get_is_instruct` picks from `model_name`, and its MCTS constants.

use std::path::PathBuf;

use anyhow::Context;
use drllm_contract::{
    PromptStyle, RewardMode, RewardSettings, RunSettings, SearchConfig, SearchRecord,
};
use drllm_core::tasks::reward::RewardOptions;
use drllm_engine::{LayerPath, LoadedModel};
use drllm_records::official::OfficialRun;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The official search output: one JSON object with `model_name`, `dataset`, `questions`,
    /// `best_path`, `good_paths`, `best_response`, `original_correct`, `mcts_correct`, ….
    file: PathBuf,
    /// The model the records are for: the official `model_name`'s weights as drllm loads them
    /// (paths are checked against its depth; the trainer checks its fingerprint).
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// Folder to write the records into (`official-<file name>.parquet`).
    #[arg(long)]
    out: PathBuf,
    /// The split to record (the official search runs on training questions).
    #[arg(long, default_value = "train")]
    split: String,
    /// Leave out (and report) questions whose paths this model cannot run (a layer out of range
    /// or run more than twice, a path out of order) instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let run = OfficialRun::read(&a.file)?;
    anyhow::ensure!(!run.is_empty(), "{}: no questions", a.file.display());
    let lm = a.model.load()?;
    let settings = settings(&run);
    // Refuses instruct prompts for a model without a chat template.
    RewardOptions::resolve(&lm, &settings.reward)
        .with_context(|| format!("the official prompts of `{}`", run.model_name))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (mut records, mut skipped) = (Vec::new(), 0);
    for k in 0..run.len() {
        match record(&run, k, &lm, &a, &settings, now) {
            Ok(r) => records.push(r),
            Err(e) if a.skip_invalid => {
                skipped += 1;
                eprintln!("skipped {}: {e}", a.file.display());
            }
            Err(e) => anyhow::bail!(
                "{}: {e} (--skip-invalid leaves such questions out)",
                a.file.display()
            ),
        }
    }
    anyhow::ensure!(
        !records.is_empty(),
        "{}: every question was skipped",
        a.file.display()
    );
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let stem = a
        .file
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy());
    let out = a.out.join(format!("official-{stem}.parquet"));
    drllm_records::write_parquet(&out, &records)?;
    let mut summary = serde_json::to_value(drllm_records::Summary::of(&records))?;
    summary["parquet"] = serde_json::json!(out);
    summary["skipped"] = serde_json::json!(skipped);
    summary["official_model_name"] = serde_json::json!(run.model_name);
    println!("{summary}");
    Ok(())
}

/// The settings the official search ran with.
fn settings(run: &OfficialRun) -> RunSettings {
    RunSettings {
        reward: RewardSettings {
            style: Some(match run.instruct() {
                true => PromptStyle::Instruct,
                false => PromptStyle::Base,
            }),
            ..RewardSettings::new(RewardMode::Generate)
        },
        search: SearchConfig {
            num_simulations: run.num_simulations as usize,
            exploration: run.exploration_constant,
            length_penalty: run.length_penalty,
            random_prob: run.random_prob,
            max_len_factor: 2,
            ..SearchConfig::default()
        },
    }
}

/// Question `k` as a record; the error names the question and the field.
fn record(
    run: &OfficialRun,
    k: usize,
    lm: &LoadedModel,
    a: &Args,
    settings: &RunSettings,
    now: i64,
) -> Result<SearchRecord, String> {
    let layers = lm.model.num_layers();
    let path = |field: &str, p: &[u16]| {
        LayerPath::new(p.to_vec(), layers)
            .map_err(|e| format!("question {k}: `{field}`: {e} (the model has {layers} layers)"))
    };
    let best = path("best_path", &run.best_path[k])?;
    let found = run.mcts_correct.get(k).is_none_or(|&f| f == 1);
    let good_paths = match run.good_paths.get(k) {
        Some(good) => good
            .iter()
            .map(|p| path("good_paths", p).map(|p| p.layers().to_vec()))
            .collect::<Result<Vec<_>, _>>()?,
        None if found => vec![best.layers().to_vec()],
        None => Vec::new(),
    };
    let question = &run.questions[k];
    let hash = blake3::hash(question.as_bytes()).to_hex();
    Ok(SearchRecord {
        example_id: format!("{}/official-{}", run.dataset, &hash[..16]),
        dataset: run.dataset.clone(),
        split: a.split.clone(),
        question: question.clone(),
        gold: run.best_response[k].clone(),
        model_id: a.model.model.clone(),
        model_fingerprint: lm.fingerprint.clone(),
        num_layers: layers as u16,
        original_correct: run.original_correct[k] == 1,
        found,
        best_decisions: best.counts(),
        distinct_layers: best.distinct_layers() as u16,
        best_path: best.layers().to_vec(),
        good_paths,
        good_margins: Vec::new(),
        original_margin: None,
        best_response: None,
        simulations: 0,
        distinct_paths: 0,
        layer_executions: 0,
        wall_seconds: 0.0,
        settings: settings.clone(),
        worker_id: format!("official-import:{}", run.model_name),
        timestamp_ms: now,
    })
}
