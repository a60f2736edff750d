//! The search's output record — one row per searched example — and its Parquet files. Files are
//! written to a temporary name, fsynced and renamed, so a reader never sees half a file. The
//! schema (README "Search records") is versioned in the file metadata.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, ListBuilder, StringBuilder, TimestampMillisecondBuilder,
    UInt16Builder, UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::settings::{RunSettings, SearchConfig};
use crate::{RecordError as Error, Result};

/// Version of the record schema, stored as `drllm.schema_version` in every file. Version 2 added
/// `good_margins` and `original_margin`; version 3 the rest of the run settings
/// (`prompt_style`, `early_stop`, `length_normalized`). Readers still accept versions 1 and 2
/// (the missing columns read as empty / null / the defaults those searches ran with).
pub const SCHEMA_VERSION: &str = "3";
/// Every schema version this build reads.
pub const READABLE_SCHEMA_VERSIONS: [&str; 3] = ["1", "2", "3"];

/// One searched example.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchRecord {
    /// Stable id: dataset family + source id, e.g. `arc_easy/Mercury_7220990`.
    pub example_id: String,
    /// Dataset name as requested (`arc_easy`, `dart-3`, `jsonl:questions`).
    pub dataset: String,
    /// Split the example comes from (`train`, `test`, …).
    pub split: String,
    /// The task prompt, before any chat template.
    pub question: String,
    /// Gold answer: a choice letter, or LaTeX for MATH.
    pub gold: String,
    /// The model spec the search ran, as the user named it.
    pub model_id: String,
    /// blake3 of the weight files (32 hex digits).
    pub model_fingerprint: String,
    /// Number of layers L of the model; the full path is `0..L`.
    pub num_layers: u16,
    /// Whether the full model (every layer once, in order) answers correctly.
    pub original_correct: bool,
    /// Whether any path the search judged, the full path included, was good (reward 1).
    pub found: bool,
    /// Layer indices of the best path in execution order: the shortest good path (ties: fewer
    /// distinct layers, then first found), or the full path when none was found.
    pub best_path: Vec<u16>,
    /// Per layer: 0 skip, 1 execute, 2 repeat (length L).
    pub best_decisions: Vec<u8>,
    /// Number of distinct layers `best_path` executes.
    pub distinct_layers: u16,
    /// Every good path (reward 1) as layer indices, in the order first judged.
    pub good_paths: Vec<Vec<u16>>,
    /// choice-loglik: each good path's gold margin (gold choice's score minus the best other's),
    /// aligned with `good_paths`; empty when the reward has no margin (generate, schema 1).
    #[serde(default)]
    pub good_margins: Vec<f64>,
    /// choice-loglik: the full path's gold margin (> 0 iff it is right); `None` for generate
    /// and schema 1.
    #[serde(default)]
    pub original_margin: Option<f64>,
    /// generate mode: the response under the best path; `None` for choice-loglik.
    pub best_response: Option<String>,
    /// Simulations run (under the probe strategy: paths probed).
    pub simulations: u32,
    /// Distinct paths whose reward was computed, the full path included.
    pub distinct_paths: u32,
    /// Tokens × layers actually executed by the whole search.
    pub layer_executions: u64,
    /// Search time of the example, in seconds.
    pub wall_seconds: f64,
    /// The settings the search ran with. In Parquet: `reward_mode` (text), `prompt_style`
    /// (text, null when not recorded), `early_stop`, `length_normalized` and `search_config`
    /// (the search hyper-parameters as JSON).
    pub settings: RunSettings,
    /// The worker that searched the example.
    pub worker_id: String,
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp_ms: i64,
}

pub(crate) fn to_batch(records: &[SearchRecord]) -> Result<RecordBatch> {
    let s = |f: fn(&SearchRecord) -> &str| {
        let mut b = StringBuilder::new();
        records.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let strings = [
        ("example_id", s(|r| &r.example_id)),
        ("dataset", s(|r| &r.dataset)),
        ("split", s(|r| &r.split)),
        ("question", s(|r| &r.question)),
        ("gold", s(|r| &r.gold)),
        ("model_id", s(|r| &r.model_id)),
        ("model_fingerprint", s(|r| &r.model_fingerprint)),
    ];
    let u16s = |f: fn(&SearchRecord) -> u16| {
        let mut b = UInt16Builder::new();
        records.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let bools = |f: fn(&SearchRecord) -> bool| {
        let mut b = BooleanBuilder::new();
        records.iter().for_each(|r| b.append_value(f(r)));
        Arc::new(b.finish()) as ArrayRef
    };
    let rows = row_columns(records)?;
    let mut columns: Vec<(&str, ArrayRef)> = strings.into_iter().collect();
    columns.extend([
        ("reward_mode", rows.mode),
        ("prompt_style", rows.style),
        ("early_stop", bools(|r| r.settings.reward.early_stop)),
        (
            "length_normalized",
            bools(|r| r.settings.reward.length_normalized),
        ),
        ("num_layers", u16s(|r| r.num_layers)),
        ("original_correct", bools(|r| r.original_correct)),
        ("found", bools(|r| r.found)),
        ("best_path", rows.best_path),
        ("best_decisions", rows.decisions),
        ("best_path_len", u16s(|r| r.best_path.len() as u16)),
        ("distinct_layers", u16s(|r| r.distinct_layers)),
        ("good_paths", rows.good),
        ("good_margins", rows.margins),
        ("original_margin", rows.orig_margin),
        ("best_response", rows.response),
        ("simulations", rows.sims),
        ("distinct_paths", rows.distinct),
        ("layer_executions", rows.execs),
        ("wall_seconds", rows.wall),
        ("search_config", rows.config),
        ("worker_id", rows.worker),
        ("timestamp", rows.ts),
    ]);
    RecordBatch::try_from_iter(columns).map_err(|e| Error::Output(format!("building records: {e}")))
}

/// The columns built row by row (lists, optional values, the settings).
struct RowColumns {
    mode: ArrayRef,
    style: ArrayRef,
    best_path: ArrayRef,
    decisions: ArrayRef,
    good: ArrayRef,
    margins: ArrayRef,
    orig_margin: ArrayRef,
    response: ArrayRef,
    sims: ArrayRef,
    distinct: ArrayRef,
    execs: ArrayRef,
    wall: ArrayRef,
    config: ArrayRef,
    worker: ArrayRef,
    ts: ArrayRef,
}

fn row_columns(records: &[SearchRecord]) -> Result<RowColumns> {
    let mut best_path = ListBuilder::new(UInt16Builder::new());
    let mut decisions = ListBuilder::new(UInt8Builder::new());
    let mut good = ListBuilder::new(ListBuilder::new(UInt16Builder::new()));
    let mut margins = ListBuilder::new(Float64Builder::new());
    let mut orig_margin = Float64Builder::new();
    let mut response = StringBuilder::new();
    let (mut sims, mut distinct) = (UInt32Builder::new(), UInt32Builder::new());
    let mut execs = UInt64Builder::new();
    let mut wall = Float64Builder::new();
    let (mut config, mut worker) = (StringBuilder::new(), StringBuilder::new());
    let (mut mode, mut style) = (StringBuilder::new(), StringBuilder::new());
    let mut ts = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut last: Option<(&SearchConfig, String)> = None;
    for r in records {
        best_path.append_value(r.best_path.iter().map(|&l| Some(l)));
        decisions.append_value(r.best_decisions.iter().map(|&d| Some(d)));
        for p in &r.good_paths {
            good.values().append_value(p.iter().map(|&l| Some(l)));
        }
        good.append(true);
        margins.append_value(r.good_margins.iter().map(|&m| Some(m)));
        orig_margin.append_option(r.original_margin);
        response.append_option(r.best_response.as_deref());
        sims.append_value(r.simulations);
        distinct.append_value(r.distinct_paths);
        execs.append_value(r.layer_executions);
        wall.append_value(r.wall_seconds);
        // A part's records share one configuration: serialize it once per change.
        if last.as_ref().is_none_or(|(c, _)| *c != &r.settings.search) {
            let json = serde_json::to_string(&r.settings.search)
                .map_err(|e| Error::Output(format!("search config of {}: {e}", r.example_id)))?;
            last = Some((&r.settings.search, json));
        }
        config.append_value(last.as_ref().map_or("", |(_, j)| j.as_str()));
        mode.append_value(r.settings.reward.mode.to_string());
        style.append_option(r.settings.reward.style.map(|s| s.to_string()));
        worker.append_value(&r.worker_id);
        ts.append_value(r.timestamp_ms);
    }
    Ok(RowColumns {
        mode: Arc::new(mode.finish()),
        style: Arc::new(style.finish()),
        best_path: Arc::new(best_path.finish()),
        decisions: Arc::new(decisions.finish()),
        good: Arc::new(good.finish()),
        margins: Arc::new(margins.finish()),
        orig_margin: Arc::new(orig_margin.finish()),
        response: Arc::new(response.finish()),
        sims: Arc::new(sims.finish()),
        distinct: Arc::new(distinct.finish()),
        execs: Arc::new(execs.finish()),
        wall: Arc::new(wall.finish()),
        config: Arc::new(config.finish()),
        worker: Arc::new(worker.finish()),
        ts: Arc::new(ts.finish()),
    })
}

/// Writes `records` to `path` atomically (temporary file, fsync, rename). The first record's
/// run settings (JSON) go into the file metadata next to the schema version.
pub fn write_parquet(path: &Path, records: &[SearchRecord]) -> Result<()> {
    let settings = records.first().map(|r| &r.settings);
    write_batch(path, &to_batch(records)?, SCHEMA_VERSION, settings)
}

/// Writes one batch of records atomically under a given schema version (tests write older ones).
pub(crate) fn write_batch(
    path: &Path,
    batch: &RecordBatch,
    version: &str,
    settings: Option<&RunSettings>,
) -> Result<()> {
    let bad =
        |e: serde_json::Error| Error::Output(format!("{}: run settings: {e}", path.display()));
    let search = serde_json::to_string(&settings.map(|s| &s.search)).map_err(bad)?;
    let all = serde_json::to_string(&settings).map_err(bad)?;
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![
            KeyValue::new("drllm.schema_version".into(), version.to_string()),
            // `search_config` since schema 1 (null when the file has no records); the whole
            // settings since schema 3.
            KeyValue::new("drllm.search_config".into(), search),
            KeyValue::new("drllm.run_settings".into(), all),
        ]))
        .build();
    crate::atomic::write_atomically(path, |tmp| -> std::result::Result<(), String> {
        let file = File::create(tmp).map_err(|e| e.to_string())?;
        let mut w =
            ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(|e| e.to_string())?;
        w.write(batch).map_err(|e| e.to_string())?;
        w.close().map_err(|e| e.to_string())?;
        Ok(())
    })
    .map_err(|e| Error::Output(e.to_string()))
}
