//! Writing search records as Parquet: one column per entry of the contract's column table,
//! built by [`crate::columns`]. Files are written to a temporary name, fsynced and renamed, so a
//! reader never sees half a file. The schema version and the run settings go into the file
//! metadata.

use std::fs::File;
use std::path::Path;

use arrow_array::{ArrayRef, RecordBatch};
use drllm_contract::record::COLUMNS;
use drllm_contract::{RunSettings, SearchRecord, SCHEMA_VERSION};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::{RecordError as Error, Result};

pub(crate) fn to_batch(records: &[SearchRecord]) -> Result<RecordBatch> {
    let columns = COLUMNS
        .iter()
        .map(|c| {
            let array = crate::columns::build(c.kind, records.iter().map(c.get))
                .map_err(|e| Error::Output(format!("column `{}`: {e}", c.name)))?;
            Ok((c.name, array))
        })
        .collect::<Result<Vec<(&str, ArrayRef)>>>()?;
    RecordBatch::try_from_iter(columns).map_err(|e| Error::Output(format!("building records: {e}")))
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
