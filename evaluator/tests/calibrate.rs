//! `evaluator calibrate` on the real default model and ARC-Easy dev, with routers whose paths are
//! known (they skip layer 7 below budget 0, and every layer below −0.75): the certificate lists
//! every grid point with the layers it runs, fixed-sequence testing keeps the points that lose
//! little and stops at the one that loses much; `evaluator run` then runs the certified point by
//! default and says whether its risk held, runs the static model when nothing is certified, and
//! refuses a certificate of other router weights. Calibrating on test, or on train without the
//! routers' records, is refused.

use std::path::Path;
use std::process::{Command, Output};

use drllm_core::router::RouterConfig;
use drllm_engine::LoadOptions;
use serde_json::Value;

const L: usize = 30;
const D: usize = 576;

fn evaluator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evaluator"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    err
}

fn refused(o: &Output, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains(want),
        "want `{want}` in:\n{err}"
    );
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn calibrate_refuses_test_and_unexcluded_train() {
    let base = ["calibrate", "--routers", "nowhere", "--dataset", "arc_easy"];
    refused(
        &evaluator(&[&base[..], &["--split", "dev", "--split", "test"]].concat()),
        "calibrating on the test questions",
    );
    refused(
        &evaluator(&[&base[..], &["--split", "train"]].concat()),
        "--split train needs --exclude-records",
    );
    refused(
        &evaluator(&[&base[..], &["--split", "dev", "--grid", "0.5,0.6"]].concat()),
        "--grid must be decreasing",
    );
}

#[test]
fn calibrate_certifies_and_run_uses_the_certified_point() {
    let Some(lm) = drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).to_string_lossy().to_string();
    let ckpt = dir.path().join("skip7");
    RouterConfig::new("default", &lm.fingerprint, L, D, 8, drllm_tests::training())
        .save(&ckpt, &drllm_tests::constant_routers(L, D, &[7]))
        .unwrap();
    let run = [
        "run",
        "--routers",
        &p("skip7"),
        "--dataset",
        "arc_easy",
        "--limit",
        "6",
    ];

    // No certificate: the static model, said so.
    let err = ok(&evaluator(&[&run[..], &["--out", &p("rep0")]].concat()));
    assert!(
        err.contains("has no certificate: the static model runs"),
        "{err}"
    );
    let report = json(&dir.path().join("rep0/report.json"));
    assert_eq!(report["budget"], 0.5);
    assert_eq!(report["overall"]["mean_path_len"], 30.0);
    assert_eq!(report["certificate"], Value::Null);

    // Disagreement with the full model at most 40%, at level 0.1, on 40 dev questions.
    let calibrate = |delta: &str| {
        let o = evaluator(&[
            "calibrate",
            "--routers",
            &p("skip7"),
            "--dataset",
            "arc_easy",
            "--split",
            "dev",
            "--limit",
            "40",
            "--risk",
            "disagree",
            "--delta",
            delta,
            "--epsilon",
            "0.1",
            "--grid",
            "0.5,0.2,-0.2,-0.8",
        ]);
        ok(&o);
        (
            String::from_utf8(o.stdout).unwrap(),
            json(&ckpt.join("certificate.json")),
        )
    };
    let (table, cert) = calibrate("0.4");
    let pts = cert["points"].as_array().unwrap();
    let layers: Vec<f64> = pts
        .iter()
        .map(|p| p["mean_layers"].as_f64().unwrap())
        .collect();
    assert_eq!(layers, [30.0, 30.0, 29.0, 0.0], "{cert:#}");
    // The static point and the one that runs the full path cannot disagree with the full model.
    assert_eq!(
        (
            pts[0]["empirical_risk"].as_f64(),
            pts[1]["empirical_risk"].as_f64()
        ),
        (Some(0.0), Some(0.0))
    );
    // Running no layer at all disagrees with most answers: its p-value fails, the walk stops.
    assert!(pts[3]["empirical_risk"].as_f64().unwrap() > 0.5, "{cert:#}");
    assert_eq!(pts[3]["certified"], false);
    let skip7_risk = pts[2]["empirical_risk"].as_f64().unwrap();
    assert!(skip7_risk < 0.3, "{cert:#}");
    assert_eq!(pts[2]["certified"], true, "{cert:#}");
    assert_eq!(cert["chosen"], 2);
    assert_eq!(
        (cert["n"].as_u64(), cert["risk"].as_str()),
        (Some(40), Some("disagree"))
    );
    assert!(
        table.contains("| -0.2 | 29.00 |") && table.contains("**chosen**"),
        "{table}"
    );
    let svg = std::fs::read_to_string(ckpt.join("certificate.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<circle"), "{svg}");

    // `run` takes the certified point and reports whether the risk held on its questions.
    let err = ok(&evaluator(&[&run[..], &["--out", &p("rep1")]].concat()));
    assert!(err.contains("knob -0.2: certified"), "{err}");
    let report = json(&dir.path().join("rep1/report.json"));
    assert_eq!(report["overall"]["mean_path_len"], 29.0);
    let held = &report["certificate"];
    assert_eq!(
        (
            held["evaluated_questions"].as_u64(),
            held["budget"].as_f64()
        ),
        (Some(6), Some(-0.2))
    );
    let risk = held["evaluated_risk"].as_f64().unwrap();
    assert_eq!(held["held"], risk <= 0.4);
    let md = std::fs::read_to_string(dir.path().join("rep1/report.md")).unwrap();
    assert!(md.contains("Certificate: risk Disagree ≤ 0.4"), "{md}");

    // A tolerance 40 questions cannot certify even for the static model: nothing is kept.
    let (_, cert) = calibrate("0.001");
    assert_eq!(cert["chosen"], Value::Null);
    // The walk stopped at the static point: the other three never ran.
    assert_eq!(cert["points"].as_array().unwrap().len(), 1, "{cert:#}");
    assert_eq!(cert["untested"], serde_json::json!([0.2, -0.2, -0.8]));
    let err = ok(&evaluator(&[&run[..], &["--out", &p("rep2")]].concat()));
    assert!(
        err.contains("the certificate keeps no routed point"),
        "{err}"
    );

    // Retrained routers: the certificate no longer applies.
    drllm_tests::constant_routers(L, D, &[8])
        .named_tensors()
        .map(|t| candle_core::safetensors::save(&t, ckpt.join("routers.safetensors")).unwrap())
        .unwrap();
    refused(
        &evaluator(&[&run[..], &["--out", &p("rep3")]].concat()),
        "the routers were retrained after calibration",
    );
    ok(&evaluator(
        &[&run[..], &["--out", &p("rep3"), "--budget", "-0.5"]].concat(),
    ));
}
