//! Fuzz targets (proptest): the record reader on arbitrary and on corrupted Parquet bytes, and the
//! official-format reader on arbitrary and corrupted JSON, answer with a value or an error naming
//! the file, never a panic. `DRLLM_FUZZ_CASES` sets the cases per target (CI: the default).

use std::io::Write;

use drllm_contract::{RunSettings, SearchRecord};
use drllm_records::official::OfficialRun;
use drllm_records::{read_records, write_parquet};
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("DRLLM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(i: u16) -> SearchRecord {
    SearchRecord {
        example_id: format!("arc_easy/{i}"),
        dataset: "arc_easy".into(),
        gold: "B".into(),
        num_layers: 4,
        found: true,
        best_path: vec![0, 1, 3],
        best_decisions: vec![1, 1, 0, 1],
        distinct_layers: 3,
        good_paths: vec![vec![0, 1, 3], vec![]],
        good_margins: vec![0.5, f64::NEG_INFINITY],
        original_margin: Some(f64::NAN),
        best_response: (i % 2 == 0).then(|| "B".into()),
        settings: RunSettings::default(),
        ..SearchRecord::default()
    }
}

/// A valid records file's bytes.
fn valid_parquet() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.parquet");
    write_parquet(&f, &[record(0), record(1), record(2)]).unwrap();
    std::fs::read(f).unwrap()
}

/// Reads `bytes` as a records file: never a panic; an error names the file.
fn read_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut f = tempfile::Builder::new()
        .suffix(".parquet")
        .tempfile()
        .unwrap();
    f.write_all(bytes).unwrap();
    if let Err(e) = read_records(f.path()) {
        let name = f.path().file_name().unwrap().to_string_lossy().to_string();
        prop_assert!(e.to_string().contains(&name), "{e}");
    }
    Ok(())
}

fn flip(mut bytes: Vec<u8>, flips: &[(usize, u8)]) -> Vec<u8> {
    let n = bytes.len();
    for &(at, x) in flips {
        bytes[at % n] ^= x.max(1);
    }
    bytes
}

#[test]
fn non_finite_margins_survive_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("r.parquet");
    write_parquet(&f, &[record(0)]).unwrap();
    let back = read_records(&f).unwrap();
    assert_eq!(back[0].good_margins[1], f64::NEG_INFINITY);
    assert!(back[0].original_margin.unwrap().is_nan());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn the_record_reader_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        magic in any::<bool>(),
    ) {
        // With the Parquet magic at both ends, the reader goes as far as the footer.
        let bytes = if magic { [b"PAR1".as_slice(), &bytes, b"PAR1"].concat() } else { bytes };
        read_bytes(&bytes)?;
    }

    #[test]
    fn the_record_reader_never_panics_on_a_corrupted_file(
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in prop::option::of(any::<usize>()),
    ) {
        let mut bytes = flip(valid_parquet(), &flips);
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        read_bytes(&bytes)?;
    }

    #[test]
    fn the_official_reader_never_panics(
        text in ".{0,300}",
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
    ) {
        let valid = OfficialRun::from_records(&[record(0), record(2)], "m", "2026-01-01".into());
        let json = serde_json::to_vec(&valid.unwrap()).unwrap();
        for bytes in [text.into_bytes(), flip(json, &flips)] {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(&bytes).unwrap();
            let _ = OfficialRun::read(f.path());
        }
    }
}
