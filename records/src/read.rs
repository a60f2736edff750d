//! Reading search records back from Parquet (one file, or every `*.parquet` of a folder, e.g. a
//! coordinator's parts) and summarising them: what `worker search`, `coordinator summarize` and
//! the trainer read.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, TimestampMillisecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ListArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::record::{SearchRecord, READABLE_SCHEMA_VERSIONS};
use crate::settings::{PromptStyle, RewardMode, RewardSettings, RunSettings, SearchConfig};
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

/// Typed access to a batch's columns; every error names the column.
struct Columns<'a>(&'a RecordBatch);

type Res<T> = std::result::Result<T, String>;

impl Columns<'_> {
    fn col(&self, n: &str) -> Res<&dyn Array> {
        self.0
            .column_by_name(n)
            .map(|c| c.as_ref())
            .ok_or_else(|| format!("no column `{n}`"))
    }

    /// A string column; `None` for null entries.
    fn opt_strings(&self, n: &str) -> Res<Vec<Option<String>>> {
        let a = self
            .col(n)?
            .as_string_opt::<i32>()
            .ok_or(format!("`{n}` is not a string column"))?;
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
            .collect())
    }

    /// A string column; null entries read as empty.
    fn strings(&self, n: &str) -> Res<Vec<String>> {
        Ok(self
            .opt_strings(n)?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect())
    }

    fn prim<T: arrow_array::ArrowPrimitiveType>(&self, n: &str) -> Res<Vec<T::Native>> {
        let a = self
            .col(n)?
            .as_primitive_opt::<T>()
            .ok_or(format!("`{n}` has the wrong type"))?;
        Ok(a.values().to_vec())
    }

    fn bools(&self, n: &str) -> Res<Vec<bool>> {
        let a = self
            .col(n)?
            .as_boolean_opt()
            .ok_or(format!("`{n}` is not boolean"))?;
        Ok((0..a.len()).map(|i| a.value(i)).collect())
    }

    /// A boolean column of a later schema version: `default` everywhere when it is absent.
    fn bools_or(&self, n: &str, default: bool) -> Res<Vec<bool>> {
        match self.0.column_by_name(n) {
            Some(_) => self.bools(n),
            None => Ok(vec![default; self.0.num_rows()]),
        }
    }

    /// A list column (read once; rows are taken with [`row`]).
    fn lists(&self, n: &str) -> Res<&ListArray> {
        self.col(n)?
            .as_list_opt::<i32>()
            .ok_or(format!("`{n}` is not a list"))
    }
}

/// Row `i` of list column `n` (`l`), as values of `T`.
fn row<T: arrow_array::ArrowPrimitiveType>(
    l: &ListArray,
    n: &str,
    i: usize,
) -> Res<Vec<T::Native>> {
    let v = l.value(i);
    let p = v
        .as_primitive_opt::<T>()
        .ok_or(format!("`{n}` has the wrong type"))?;
    Ok(p.values().to_vec())
}

/// Row `i` of `good_paths` (`l`, a list of lists of u16).
fn good_paths_row(l: &ListArray, i: usize) -> Res<Vec<Vec<u16>>> {
    let goods = l.value(i);
    let inner = goods
        .as_list_opt::<i32>()
        .ok_or("`good_paths` is not a list of lists")?;
    (0..inner.len())
        .map(|j| row::<UInt16Type>(inner, "good_paths", j))
        .collect()
}

/// Each row's run settings: the reward columns (those schema 3 added default to what earlier
/// searches ran with) and the search configuration's JSON.
fn settings(c: &Columns<'_>) -> Res<Vec<RunSettings>> {
    let modes = c.strings("reward_mode")?;
    let configs = c.strings("search_config")?;
    let styles = match c.0.column_by_name("prompt_style") {
        Some(_) => c.opt_strings("prompt_style")?,
        None => vec![None; c.0.num_rows()],
    };
    let early = c.bools_or("early_stop", true)?;
    let normalized = c.bools_or("length_normalized", false)?;
    (0..c.0.num_rows())
        .map(|i| {
            let row = |e: String| format!("row {i}: {e}");
            let search: SearchConfig = match configs[i].trim() {
                "" | "{}" => SearchConfig::default(),
                json => serde_json::from_str(json)
                    .map_err(|e| row(format!("`search_config` {json}: {e}")))?,
            };
            let style = styles[i]
                .as_deref()
                .map(str::parse::<PromptStyle>)
                .transpose()
                .map_err(|e| row(format!("`prompt_style`: {e}")))?;
            let mode: RewardMode = modes[i]
                .parse()
                .map_err(|e| row(format!("`reward_mode`: {e}")))?;
            Ok(RunSettings {
                reward: RewardSettings {
                    mode,
                    style,
                    early_stop: early[i],
                    length_normalized: normalized[i],
                },
                search,
            })
        })
        .collect()
}

fn batch_records(b: &RecordBatch) -> Res<Vec<SearchRecord>> {
    let c = Columns(b);
    let (ids, datasets, splits) = (
        c.strings("example_id")?,
        c.strings("dataset")?,
        c.strings("split")?,
    );
    let (questions, golds) = (c.strings("question")?, c.strings("gold")?);
    let (models, fps) = (c.strings("model_id")?, c.strings("model_fingerprint")?);
    let (responses, workers) = (c.opt_strings("best_response")?, c.strings("worker_id")?);
    let settings = settings(&c)?;
    let layers = c.prim::<UInt16Type>("num_layers")?;
    let distinct_layers = c.prim::<UInt16Type>("distinct_layers")?;
    let sims = c.prim::<UInt32Type>("simulations")?;
    let paths = c.prim::<UInt32Type>("distinct_paths")?;
    let execs = c.prim::<UInt64Type>("layer_executions")?;
    let wall = c.prim::<Float64Type>("wall_seconds")?;
    let ts = c.prim::<TimestampMillisecondType>("timestamp")?;
    let (orig, found) = (c.bools("original_correct")?, c.bools("found")?);
    // Schema 2 columns; absent from schema-1 files.
    let (best, dec, good) = (
        c.lists("best_path")?,
        c.lists("best_decisions")?,
        c.lists("good_paths")?,
    );
    let margins = match b.column_by_name("good_margins") {
        Some(_) => Some(c.lists("good_margins")?),
        None => None,
    };
    let orig_margin = b
        .column_by_name("original_margin")
        .map(|c| {
            c.as_primitive_opt::<Float64Type>()
                .cloned()
                .ok_or("`original_margin` has the wrong type")
        })
        .transpose()?;
    let mut out = Vec::with_capacity(b.num_rows());
    for (i, settings) in settings.into_iter().enumerate() {
        out.push(SearchRecord {
            example_id: ids[i].clone(),
            dataset: datasets[i].clone(),
            split: splits[i].clone(),
            question: questions[i].clone(),
            gold: golds[i].clone(),
            model_id: models[i].clone(),
            model_fingerprint: fps[i].clone(),
            num_layers: layers[i],
            original_correct: orig[i],
            found: found[i],
            best_path: row::<UInt16Type>(best, "best_path", i)?,
            best_decisions: row::<UInt8Type>(dec, "best_decisions", i)?,
            distinct_layers: distinct_layers[i],
            good_paths: good_paths_row(good, i)?,
            good_margins: match margins {
                Some(m) => row::<Float64Type>(m, "good_margins", i)?,
                None => Vec::new(),
            },
            original_margin: orig_margin
                .as_ref()
                .and_then(|a| a.is_valid(i).then(|| a.value(i))),
            best_response: responses[i].clone(),
            simulations: sims[i],
            distinct_paths: paths[i],
            layer_executions: execs[i],
            wall_seconds: wall[i],
            settings,
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
        use crate::record::{to_batch, write_batch};
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
