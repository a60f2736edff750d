//! Reading search records back from Parquet (one file, or every `*.parquet` of a folder, e.g. a
//! coordinator's parts) and summarising them: what `worker search`, `coordinator summarize` and
//! the trainer read.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use drllm_contract::record::COLUMNS;
use drllm_contract::{SearchRecord, READABLE_SCHEMA_VERSIONS};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{RecordError as Error, Result};

/// The Parquet files `path` names: itself, or the `*.parquet` files of a folder, sorted.
pub fn parquet_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    Ok(files)
}

/// Every record of every file `path` names.
pub fn read_records(path: &Path) -> Result<Vec<SearchRecord>> {
    let mut out = Vec::new();
    for f in parquet_files(path)? {
        out.extend(read_file(&f)?);
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<Vec<SearchRecord>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    read_from(file).map_err(|what| Error::Invalid(format!("{}: {what}", path.display())))
}

/// The records of one Parquet file's bytes (`File`, or bytes in memory); an error says what is
/// wrong, never a panic, whatever the bytes. The Parquet reader asserts on some damaged footers
/// (a negative column offset); those are checked first, and any other panic of the reader on
/// damaged bytes becomes an error too.
pub fn read_from<R: parquet::file::reader::ChunkReader + 'static>(
    file: R,
) -> std::result::Result<Vec<SearchRecord>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_unguarded(file))).unwrap_or_else(
        |p| {
            let why = (p.downcast_ref::<String>().map(String::as_str))
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(format!("damaged file: the Parquet reader failed ({why})"))
        },
    )
}

fn read_unguarded<R: parquet::file::reader::ChunkReader + 'static>(
    file: R,
) -> std::result::Result<Vec<SearchRecord>, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    for (g, rg) in builder.metadata().row_groups().iter().enumerate() {
        for c in rg.columns() {
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            if start < 0 || c.compressed_size() < 0 {
                return Err(format!(
                    "damaged file: row group {g}, column `{}` has a negative offset or size",
                    c.column_path()
                ));
            }
        }
    }
    let version = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == "drllm.schema_version"))
        .and_then(|k| k.value.clone());
    let v = version
        .as_deref()
        .filter(|v| READABLE_SCHEMA_VERSIONS.contains(v))
        .and_then(|v| v.parse::<u8>().ok())
        .ok_or_else(|| {
            format!(
                "record schema version {version:?}, this build reads {READABLE_SCHEMA_VERSIONS:?}"
            )
        })?;
    let mut out = Vec::new();
    for batch in builder.build().map_err(|e| e.to_string())? {
        out.extend(batch_records(&batch.map_err(|e| e.to_string())?, v)?);
    }
    Ok(out)
}

/// The records of one batch of a schema-`version` file: each column of the table that version
/// has is read into its cells and stored; the columns it predates keep the defaults (what those
/// searches ran with).
fn batch_records(b: &RecordBatch, version: u8) -> std::result::Result<Vec<SearchRecord>, String> {
    let mut out = vec![SearchRecord::default(); b.num_rows()];
    for c in COLUMNS {
        let Some(array) = b.column_by_name(c.name) else {
            if c.since <= version {
                return Err(format!("no column `{}`", c.name));
            }
            continue;
        };
        let cells = crate::columns::cells(c.kind, array.as_ref())
            .map_err(|e| format!("column `{}` {e}", c.name))?;
        for (i, (r, cell)) in out.iter_mut().zip(cells).enumerate() {
            (c.set)(r, cell).map_err(|e| format!("row {i}: `{}`: {e}", c.name))?;
        }
    }
    Ok(out)
}

/// The summary `worker search` prints and `coordinator summarize` prints for a job's parts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Number of records.
    pub examples: usize,
    /// Model depth L, from the first record (0 when there are none).
    pub layers: u16,
    /// Records whose full model answers correctly.
    pub original_correct: usize,
    /// Records with a good path.
    pub found: usize,
    /// `found / examples`, in 0–1 (0 when there are no records).
    pub found_rate: f64,
    /// Records with a good path whose full model answers wrongly (answers fixed).
    pub improved_from_wrong: usize,
    /// Mean length of the best paths, in positions (0 when there are no records).
    pub mean_best_path_len: f64,
    /// Simulations, summed over the records.
    pub simulations: u64,
    /// Distinct paths judged, summed over the records.
    pub distinct_paths: u64,
    /// Tokens × layers executed, summed over the records.
    pub layer_executions: u64,
    /// `layer_executions / simulations` (0 when no simulation ran).
    pub layer_executions_per_simulation: f64,
    /// Sum of the examples' search times, in seconds.
    pub search_seconds: f64,
}

impl Summary {
    /// Summarises `records`.
    pub fn of(records: &[SearchRecord]) -> Self {
        let n = records.len();
        let count = |f: fn(&SearchRecord) -> bool| records.iter().filter(|r| f(r)).count();
        let found = count(|r| r.found);
        let sims: u64 = records.iter().map(|r| r.simulations as u64).sum();
        let execs: u64 = records.iter().map(|r| r.layer_executions).sum();
        let per = |x: f64, d: f64| if d > 0.0 { x / d } else { 0.0 };
        Self {
            examples: n,
            layers: records.first().map_or(0, |r| r.num_layers),
            original_correct: count(|r| r.original_correct),
            found,
            found_rate: per(found as f64, n as f64),
            improved_from_wrong: count(|r| r.found && !r.original_correct),
            mean_best_path_len: per(
                records.iter().map(|r| r.best_path.len()).sum::<usize>() as f64,
                n as f64,
            ),
            simulations: sims,
            distinct_paths: records.iter().map(|r| r.distinct_paths as u64).sum(),
            layer_executions: execs,
            layer_executions_per_simulation: per(execs as f64, sims as f64),
            search_seconds: records.iter().map(|r| r.wall_seconds).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write_parquet;
    use drllm_contract::{PromptStyle, RewardMode, RewardSettings, RunSettings, SearchConfig};

    fn record(i: u16, response: Option<&str>) -> SearchRecord {
        SearchRecord {
            example_id: format!("ex{i}"),
            dataset: "arc_easy".into(),
            split: "train".into(),
            question: "Q?".into(),
            gold: "B".into(),
            model_id: "m".into(),
            model_fingerprint: "f".into(),
            num_layers: 4,
            original_correct: i % 2 == 0,
            found: true,
            best_path: vec![0, 2, 2 + i % 2],
            best_decisions: vec![1, 0, 1 + (i % 2) as u8, 0],
            distinct_layers: 2,
            good_paths: vec![vec![0, 1, 2, 3], vec![0, 2, 2 + i % 2], vec![]],
            good_margins: vec![0.5, 1.25 + i as f64, -2.0],
            original_margin: (i % 2 == 0).then_some(0.5),
            best_response: response.map(String::from),
            simulations: 7 + i as u32,
            distinct_paths: 5,
            layer_executions: 1234,
            wall_seconds: 0.5,
            settings: RunSettings {
                reward: RewardSettings {
                    style: (i % 2 == 1).then_some(PromptStyle::Base),
                    length_normalized: i == 2,
                    ..RewardSettings::new(RewardMode::Generate)
                },
                search: SearchConfig {
                    seed: i as u64,
                    ..SearchConfig::default()
                },
            },
            worker_id: "w".into(),
            timestamp_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn records_round_trip_through_parquet_and_summarise() {
        let dir = tempfile::tempdir().unwrap();
        let a = vec![record(0, Some("Answer: B")), record(1, None)];
        let b = vec![record(2, None)];
        write_parquet(&dir.path().join("part-000000.parquet"), &a).unwrap();
        write_parquet(&dir.path().join("part-000001.parquet"), &b).unwrap();
        let back = read_records(dir.path()).unwrap();
        assert_eq!(back, [a, b].concat());
        let s = Summary::of(&back);
        assert_eq!(
            (
                s.examples,
                s.original_correct,
                s.found,
                s.improved_from_wrong
            ),
            (3, 2, 3, 1)
        );
        assert_eq!(s.simulations, 7 + 8 + 9);
        assert!((s.mean_best_path_len - 3.0).abs() < 1e-12);
        std::fs::write(dir.path().join("x.parquet"), b"not parquet").unwrap();
        let e = read_records(dir.path()).unwrap_err().to_string();
        assert!(e.contains("x.parquet"), "{e}");
    }

    #[test]
    fn schema_1_and_2_files_still_read() {
        use crate::write::{to_batch, write_batch};
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![record(0, None), record(1, Some("B"))];
        let batch = to_batch(&recs).unwrap();
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| {
                let n = batch.schema().field(i).name().clone();
                ![
                    "good_margins",
                    "original_margin",
                    "prompt_style",
                    "early_stop",
                    "length_normalized",
                ]
                .contains(&n.as_str())
            })
            .collect();
        let v1 = batch.project(&keep).unwrap();
        let f = dir.path().join("v1.parquet");
        write_batch(&f, &v1, "1", None).unwrap();
        let back = read_records(&f).unwrap();
        // The settings schema 3 added read as what those searches ran with.
        let old = |r: SearchRecord| SearchRecord {
            settings: RunSettings {
                reward: RewardSettings::new(r.settings.reward.mode),
                ..r.settings.clone()
            },
            ..r
        };
        let want: Vec<SearchRecord> = recs
            .iter()
            .cloned()
            .map(|r| SearchRecord {
                good_margins: vec![],
                original_margin: None,
                ..old(r)
            })
            .collect();
        assert_eq!(back, want);
        // Schema 2: margins, no prompt style, early stop or length normalisation.
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| {
                let n = batch.schema().field(i).name().clone();
                !["prompt_style", "early_stop", "length_normalized"].contains(&n.as_str())
            })
            .collect();
        let v2 = batch.project(&keep).unwrap();
        write_batch(&f, &v2, "2", None).unwrap();
        let back = read_records(&f).unwrap();
        assert_eq!(back, recs.iter().cloned().map(old).collect::<Vec<_>>());
        assert_ne!(
            back, recs,
            "the test records carry non-default reward settings"
        );
        // An unknown version is refused by name.
        write_batch(&f, &v1, "9", None).unwrap();
        let e = read_records(&f).unwrap_err().to_string();
        assert!(e.contains("\"9\""), "{e}");
    }

    #[test]
    fn unreadable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.parquet"), b"not parquet").unwrap();
        let e = read_records(dir.path()).unwrap_err().to_string();
        assert!(e.contains("x.parquet"), "{e}");
    }
}
