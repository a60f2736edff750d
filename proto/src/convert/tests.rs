use super::*;
use drllm_contract::{
    AnswerKind, Example, Expansion, PromptStyle, RewardMode, RewardSettings, RunSettings,
    SearchConfig, SearchRecord, StopMode, Strategy, SuccessRule,
};
use proptest::prelude::*;
use prost::Message;

fn record() -> SearchRecord {
    SearchRecord {
        example_id: "arc_easy/x".into(),
        dataset: "arc_easy".into(),
        split: "train".into(),
        question: "Q?".into(),
        gold: "B".into(),
        model_id: "m".into(),
        model_fingerprint: "f".into(),
        num_layers: 4,
        original_correct: true,
        found: true,
        best_path: vec![0, 2, 2],
        best_decisions: vec![1, 0, 2, 0],
        distinct_layers: 2,
        good_paths: vec![vec![0, 1, 2, 3], vec![0, 2, 2], vec![]],
        good_margins: vec![0.5, f64::NEG_INFINITY, f64::NAN],
        original_margin: Some(f64::INFINITY),
        best_response: Some("B".into()),
        simulations: 7,
        distinct_paths: 5,
        layer_executions: 1234,
        wall_seconds: 0.5,
        settings: RunSettings::default(),
        worker_id: "w".into(),
        timestamp_ms: -5,
    }
}

/// Every named choice and non-default number survives the trip through the protocol.
#[test]
fn run_settings_round_trip_and_unknown_values_are_refused() {
    let base = RunSettings::default();
    let mut variants = vec![base.clone()];
    for (mode, style) in [
        (RewardMode::Generate, Some(PromptStyle::Base)),
        (RewardMode::ChoiceLoglik, Some(PromptStyle::Instruct)),
    ] {
        variants.push(RunSettings {
            reward: RewardSettings {
                mode,
                style,
                early_stop: false,
                length_normalized: true,
            },
            search: SearchConfig {
                num_simulations: 123,
                exploration: 0.25,
                length_penalty: 7.5,
                random_prob: 0.0,
                max_len_factor: 3,
                seed: u64::MAX,
                success: SuccessRule::Agree,
                min_margin: 2.5,
                agree_fraction: 0.25,
                stop: StopMode::Budget,
                expansion: Expansion::Tree,
                widen_exponent: 0.75,
                strategy: Strategy::ProbeSkips,
                max_skip: 1,
            },
        });
    }
    for s in variants {
        let m = v1::RunSettings::from(&s);
        assert_eq!(RunSettings::try_from(&m).unwrap(), s);
    }
    let mut m = v1::RunSettings::from(&base);
    m.reward.as_mut().unwrap().style = 9;
    let e = RunSettings::try_from(&m).unwrap_err().to_string();
    assert_eq!(e, "`reward.style` has the unknown value 9");
    m.reward = None;
    let e = RunSettings::try_from(&m).unwrap_err().to_string();
    assert_eq!(e, "`reward` is missing");
    let mut m = v1::RunSettings::from(&base);
    m.reward.as_mut().unwrap().mode = v1::RewardMode::Unspecified as i32;
    assert!(
        RunSettings::try_from(&m).is_err(),
        "an unset reward mode is refused"
    );
}

/// Records, non-finite margins included, come back bit for bit; bad values name their field.
#[test]
fn records_round_trip_and_bad_values_are_named() {
    let r = record();
    let bytes = v1::SearchRecord::from(&r).encode_to_vec();
    let back = decode_record(&v1::SearchRecord::decode(bytes.as_slice()).unwrap()).unwrap();
    assert_eq!(
        format!("{back:?}"),
        format!("{r:?}"),
        "NaN compares unequal, Debug does not"
    );
    let mut m = v1::SearchRecord::from(&r);
    m.num_layers = 70_000;
    assert_eq!(
        decode_record(&m).unwrap_err().to_string(),
        "`num_layers` is 70000, more than 65535"
    );
    let mut m = v1::SearchRecord::from(&r);
    m.best_decisions = vec![1, 1, 3, 1];
    let e = decode_record(&m).unwrap_err();
    assert_eq!(e.field, "best_decisions");
    let mut m = v1::SearchRecord::from(&r);
    m.good_paths[1].layers[0] = 4;
    assert_eq!(decode_record(&m).unwrap_err().field, "good_paths");
    let mut m = v1::SearchRecord::from(&r);
    m.settings
        .as_mut()
        .unwrap()
        .search
        .as_mut()
        .unwrap()
        .strategy = 7;
    assert_eq!(
        decode_record(&m).unwrap_err().field,
        "settings.search.strategy"
    );
}

#[test]
fn examples_round_trip_and_bad_ones_are_named() {
    let ex = Example {
        id: "arc_easy/x".into(),
        dataset: "arc_easy".into(),
        split: "test".into(),
        question: "Which?".into(),
        choices: vec!["a".into(), "b".into()],
        answer: "B".into(),
        kind: AnswerKind::Letter,
        level: Some(3),
    };
    let m = v1::Example::from(&ex);
    assert_eq!(decode_example(&m).unwrap(), ex);
    let mut bad = m.clone();
    bad.answer = "C".into();
    assert_eq!(decode_example(&bad).unwrap_err().field, "answer");
    let mut bad = m;
    bad.level = Some(300);
    assert_eq!(decode_example(&bad).unwrap_err().field, "level");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("DRLLM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    /// Fuzz target: whatever bytes arrive, decoding a record, an example or settings answers
    /// with a value or an error, never a panic.
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(m) = v1::SearchRecord::decode(bytes.as_slice()) {
            let _ = decode_record(&m);
        }
        if let Ok(m) = v1::Example::decode(bytes.as_slice()) {
            let _ = decode_example(&m);
        }
        if let Ok(m) = v1::RunSettings::decode(bytes.as_slice()) {
            let _ = RunSettings::try_from(&m);
        }
    }

    /// Fuzz target: a valid record's encoding with bytes flipped decodes or is refused.
    #[test]
    fn mutated_records_never_panic(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let mut bytes = v1::SearchRecord::from(&record()).encode_to_vec();
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x;
        }
        if let Ok(m) = v1::SearchRecord::decode(bytes.as_slice()) {
            let _ = decode_record(&m);
        }
    }
}
