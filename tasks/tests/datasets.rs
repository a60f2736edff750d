//! The embedded datasets load with their real sizes and quirks; user JSONL files get errors that
//! name file, line and field, or a skip report; no input makes a loader panic.

use std::io::Write;

use drllm_contract::AnswerKind;
use drllm_tasks::dataset::{load_jsonl, DataError, DatasetSpec};
use drllm_tasks::load_dataset;
use proptest::prelude::*;

fn count(spec: &str, split: &str) -> usize {
    load_dataset(&spec.parse().unwrap(), split, None, false)
        .unwrap()
        .examples
        .len()
}

#[test]
fn embedded_datasets_have_their_real_sizes() {
    assert_eq!(count("arc_easy", "train"), 2251);
    assert_eq!(count("arc_easy", "dev"), 570);
    assert_eq!(count("arc_easy", "test"), 2376);
    assert_eq!(count("arc_challenge", "train"), 1119);
    assert_eq!(count("arc_challenge", "dev"), 299);
    assert_eq!(count("arc_challenge", "test"), 1172);
    assert_eq!(count("dart", "validation"), 5000);
    // Two training problems have an empty answer: skipped and reported, naming their lines.
    let train = load_dataset(&DatasetSpec::Dart(None), "train", None, false).unwrap();
    assert_eq!(train.examples.len(), 7498);
    let lines: Vec<usize> = train
        .skipped
        .iter()
        .map(|e| match e {
            DataError::Invalid { line, field, .. } if field == "answer" => *line,
            other => panic!("unexpected {other}"),
        })
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.contains(&7037), "{lines:?}");
    // Two more say "Level ?": in `dart`, in no `dart-k`.
    let by_level: usize = (1..=5).map(|k| count(&format!("dart-{k}"), "train")).sum();
    assert_eq!(by_level, 7496);
    for k in 1..=5 {
        let r = load_dataset(&DatasetSpec::Dart(Some(k)), "validation", Some(3), false).unwrap();
        assert!(r
            .examples
            .iter()
            .all(|e| e.level == Some(k) && e.kind == AnswerKind::Math));
    }
}

#[test]
fn arc_quirks_are_normalised() {
    let all: Vec<_> = ["train", "dev", "test"]
        .iter()
        .flat_map(|s| {
            load_dataset(&DatasetSpec::ArcEasy, s, None, false)
                .unwrap()
                .examples
        })
        .collect();
    let first = &all[0];
    assert_eq!(first.id, "arc_easy/Mercury_7220990");
    assert_eq!(first.answer, "B");
    assert_eq!(
        first.choices[1],
        "a bacterial population in the bloodstream"
    );
    // Every gold is a letter among the re-lettered choices; 3- and 5-choice questions exist.
    assert!(all.iter().all(|e| e.gold_index().is_some()));
    assert!(all.iter().any(|e| e.choices.len() == 3));
    assert!(all.iter().any(|e| e.choices.len() == 5));
    // Numerically labelled items (`1`–`4` in the file) come out lettered.
    let raw = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../data/arc/ARC-Easy-Train.jsonl"
    ))
    .unwrap();
    let numeric = raw
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["answerKey"] == "3")
        .expect("a numerically labelled item");
    let id = format!("arc_easy/{}", numeric["id"].as_str().unwrap());
    let ex = all.iter().find(|e| e.id == id).unwrap();
    assert_eq!(ex.answer, "C");
}

fn write(lines: &[&str]) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new()
        .suffix(".jsonl")
        .tempfile()
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    f
}

#[test]
fn user_jsonl_errors_name_file_line_and_field() {
    let good = r#"{"id": "q1", "question": "2+2?", "answer": "4"}"#;
    type Expect = Box<dyn Fn(&DataError) -> bool>;
    let cases: Vec<(&str, Expect)> = vec![
        (
            "{not json",
            Box::new(|e| matches!(e, DataError::Json { line: 2, .. })),
        ),
        (
            r#"{"id": "q2", "answer": "1"}"#,
            Box::new(
                |e| matches!(e, DataError::Invalid { line: 2, field, .. } if field == "question"),
            ),
        ),
        (
            r#"{"id": "q1", "question": "again?", "answer": "1"}"#,
            Box::new(|e| {
                matches!(
                    e,
                    DataError::Duplicate {
                        line: 2,
                        first: 1,
                        ..
                    }
                )
            }),
        ),
        (
            r#"{"id": "q3", "question": "pick", "choices": ["x", "y"], "answer": "C"}"#,
            Box::new(
                |e| matches!(e, DataError::Invalid { line: 2, field, .. } if field == "answer"),
            ),
        ),
        (
            r#"{"id": "q4", "question": "pick", "choices": ["x", 7], "answer": "A"}"#,
            Box::new(|e| matches!(e, DataError::Invalid { field, .. } if field == "choices[1]")),
        ),
        (
            r#"{"id": "q5", "question": "k", "answer": "1", "kind": "essay"}"#,
            Box::new(|e| matches!(e, DataError::Invalid { field, .. } if field == "kind")),
        ),
    ];
    for (bad, is_expected) in cases {
        let f = write(&[good, bad]);
        let err = load_jsonl(f.path(), false).unwrap_err();
        assert!(is_expected(&err), "{bad}: got {err}");
        assert!(
            err.to_string().contains(&f.path().display().to_string()),
            "{err}"
        );
        // With skip_invalid the good line loads and the bad one is reported.
        let r = load_jsonl(f.path(), true).unwrap();
        assert_eq!(r.examples.len(), 1);
        assert_eq!(r.skipped.len(), 1);
        // Each example knows its line (the coordinator names `file:line` in its errors).
        assert_eq!(
            (r.file.as_str(), r.lines.as_slice()),
            (f.path().to_str().unwrap(), &[1][..])
        );
        let after_blank = write(&["", good]);
        assert_eq!(load_jsonl(after_blank.path(), true).unwrap().lines, [2]);
    }
}

#[test]
fn user_jsonl_choices_and_answers() {
    let f = write(&[
        r#"{"id": "a", "question": "Which?", "choices": ["red", "blue"], "answer": "blue"}"#,
        r#"{"id": 7, "question": "Which?", "choices": ["red", "blue"], "answer": "A"}"#,
        r#"{"id": "m", "question": "1+1", "answer": "2"}"#,
    ]);
    let ex = load_jsonl(f.path(), false).unwrap().examples;
    assert_eq!(
        (ex[0].answer.as_str(), ex[0].kind),
        ("B", AnswerKind::Letter)
    );
    assert_eq!(ex[1].id.rsplit('/').next(), Some("7"));
    assert_eq!(ex[2].kind, AnswerKind::Math);
}

#[test]
fn unknown_names_are_explained() {
    assert!(matches!(
        "squad".parse::<DatasetSpec>(),
        Err(DataError::UnknownDataset(_))
    ));
    assert!(matches!(
        "dart-6".parse::<DatasetSpec>(),
        Err(DataError::UnknownDataset(_))
    ));
    let err = load_dataset(&DatasetSpec::ArcEasy, "validationz", None, false).unwrap_err();
    assert!(err.to_string().contains("train, dev, test"), "{err}");
    let err = load_jsonl("/no/such/file.jsonl".as_ref(), false).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Arbitrary bytes and JSON-ish lines never panic the loader.
    #[test]
    fn loaders_never_panic(lines in proptest::collection::vec(
        prop_oneof![
            any::<String>(),
            "\\{\"id\": ?[0-9a-z\"]{0,4}, \"question\": ?\"[a-z]{0,3}\", \"answer\": ?[\"A-Z0-9]{0,3}(, \"choices\": \\[(\"[a-z]\",? ?){0,3}\\])?\\}",
        ],
        0..6,
    )) {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let f = write(&refs);
        let _ = load_jsonl(f.path(), false);
        let _ = load_jsonl(f.path(), true);
    }
}
