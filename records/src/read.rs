//! Reading search records back from Parquet (one file, or every `*.parquet` of a folder, e.g. a
//! coordinator's parts) and summarising them: what `worker search`, `coordinator summarize` and
//! the trainer read.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, TimestampMillisecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::record::{SearchRecord, READABLE_SCHEMA_VERSIONS};
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
    let bad = |what: String| Error::Invalid(format!("{}: {what}", path.display()));
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
    let version = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == "drllm.schema_version"))
        .and_then(|k| k.value.clone());
    if !version
        .as_deref()
        .is_some_and(|v| READABLE_SCHEMA_VERSIONS.contains(&v))
    {
        return Err(bad(format!(
            "record schema version {version:?}, this build reads {READABLE_SCHEMA_VERSIONS:?}"
        )));
    }
    let mut out = Vec::new();
    for batch in builder.build().map_err(|e| bad(e.to_string()))? {
        let b = batch.map_err(|e| bad(e.to_string()))?;
        out.extend(batch_records(&b).map_err(bad)?);
    }
    Ok(out)
}

fn batch_records(b: &RecordBatch) -> std::result::Result<Vec<SearchRecord>, String> {
    let col = |n: &str| {
        b.column_by_name(n)
            .cloned()
            .ok_or_else(|| format!("no column `{n}`"))
    };
    let s = |n: &str| -> std::result::Result<Vec<Option<String>>, String> {
        let c = col(n)?;
        let a = c
            .as_string_opt::<i32>()
            .ok_or(format!("`{n}` is not a string column"))?;
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
            .collect())
    };
    let req = |v: Vec<Option<String>>| {
        v.into_iter()
            .map(Option::unwrap_or_default)
            .collect::<Vec<_>>()
    };
    macro_rules! prim {
        ($n:expr, $t:ty) => {{
            let c = col($n)?;
            let a = c
                .as_primitive_opt::<$t>()
                .ok_or(format!("`{}` has the wrong type", $n))?;
            a.values().to_vec()
        }};
    }
    let list16 = |a: &dyn Array, i: usize| -> Vec<u16> {
        a.as_list::<i32>()
            .value(i)
            .as_primitive::<UInt16Type>()
            .values()
            .to_vec()
    };
    let bools = |n: &str| -> std::result::Result<Vec<bool>, String> {
        let c = col(n)?;
        let a = c.as_boolean_opt().ok_or(format!("`{n}` is not boolean"))?;
        Ok((0..a.len()).map(|i| a.value(i)).collect())
    };
    let (ids, datasets, splits) = (req(s("example_id")?), req(s("dataset")?), req(s("split")?));
    let (questions, golds, models) = (req(s("question")?), req(s("gold")?), req(s("model_id")?));
    let (fps, modes) = (req(s("model_fingerprint")?), req(s("reward_mode")?));
    let (responses, configs, workers) = (
        s("best_response")?,
        req(s("search_config")?),
        req(s("worker_id")?),
    );
    let layers = prim!("num_layers", UInt16Type);
    let distinct_layers = prim!("distinct_layers", UInt16Type);
    let sims = prim!("simulations", UInt32Type);
    let paths = prim!("distinct_paths", UInt32Type);
    let execs = prim!("layer_executions", UInt64Type);
    let wall = prim!("wall_seconds", Float64Type);
    let ts = prim!("timestamp", TimestampMillisecondType);
    let (orig, found) = (bools("original_correct")?, bools("found")?);
    let (best, dec, good) = (
        col("best_path")?,
        col("best_decisions")?,
        col("good_paths")?,
    );
    // Schema 2 columns; absent from schema-1 files.
    let margins = b.column_by_name("good_margins");
    let orig_margin = b
        .column_by_name("original_margin")
        .map(|c| {
            c.as_primitive_opt::<Float64Type>()
                .cloned()
                .ok_or("`original_margin` has the wrong type")
        })
        .transpose()?;
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let goods = good.as_list::<i32>().value(i);
        let good_margins = match margins {
            Some(m) => m
                .as_list_opt::<i32>()
                .ok_or("`good_margins` is not a list")?
                .value(i)
                .as_primitive_opt::<Float64Type>()
                .ok_or("`good_margins` has the wrong type")?
                .values()
                .to_vec(),
            None => Vec::new(),
        };
        out.push(SearchRecord {
            example_id: ids[i].clone(),
            dataset: datasets[i].clone(),
            split: splits[i].clone(),
            question: questions[i].clone(),
            gold: golds[i].clone(),
            model_id: models[i].clone(),
            model_fingerprint: fps[i].clone(),
            num_layers: layers[i],
            reward_mode: modes[i].clone(),
            original_correct: orig[i],
            found: found[i],
            best_path: list16(best.as_ref(), i),
            best_decisions: dec
                .as_list::<i32>()
                .value(i)
                .as_primitive::<UInt8Type>()
                .values()
                .to_vec(),
            distinct_layers: distinct_layers[i],
            good_paths: (0..goods.len())
                .map(|j| list16(goods.as_ref(), j))
                .collect(),
            good_margins,
            original_margin: orig_margin
                .as_ref()
                .and_then(|a| a.is_valid(i).then(|| a.value(i))),
            best_response: responses[i].clone(),
            simulations: sims[i],
            distinct_paths: paths[i],
            layer_executions: execs[i],
            wall_seconds: wall[i],
            search_config: configs[i].clone(),
            worker_id: workers[i].clone(),
            timestamp_ms: ts[i],
        });
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
            reward_mode: "choice-loglik".into(),
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
            search_config: "{}".into(),
            worker_id: "w".into(),
            timestamp_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn records_round_trip_through_parquet_and_summarise() {
        let dir = tempfile::tempdir().unwrap();
        let a = vec![record(0, Some("Answer: B")), record(1, None)];
        let b = vec![record(2, None)];
        write_parquet(&dir.path().join("part-000000.parquet"), &a, "{}").unwrap();
        write_parquet(&dir.path().join("part-000001.parquet"), &b, "{}").unwrap();
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
    fn schema_1_files_without_margins_still_read() {
        use crate::record::{to_batch, write_batch};
        let dir = tempfile::tempdir().unwrap();
        let recs = vec![record(0, None), record(1, Some("B"))];
        let batch = to_batch(&recs).unwrap();
        let keep: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| {
                let n = batch.schema().field(i).name().clone();
                n != "good_margins" && n != "original_margin"
            })
            .collect();
        let v1 = batch.project(&keep).unwrap();
        let f = dir.path().join("v1.parquet");
        write_batch(&f, &v1, "1", "{}").unwrap();
        let back = read_records(&f).unwrap();
        let want: Vec<SearchRecord> = recs
            .into_iter()
            .map(|r| SearchRecord {
                good_margins: vec![],
                original_margin: None,
                ..r
            })
            .collect();
        assert_eq!(back, want);
        // An unknown version is refused by name.
        write_batch(&f, &v1, "9", "{}").unwrap();
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
