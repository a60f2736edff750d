//! The path-menu router end to end on the real default model: `trainer menu` builds a menu from a
//! diagnosis and fits its gate on ARC-Easy dev questions (each path labelled by whether it keeps
//! the full model's answer); `evaluator run` routes with it at both ends of the knob (τ = 1 is
//! the static model, τ = 0 always the cheapest path); `evaluator calibrate` leaves the gate's
//! questions out by itself; menus that cannot route are refused with the reason.

use std::path::Path;
use std::process::{Command, Output};

use drllm_core::router::PathMenu;
use drllm_engine::LoadOptions;
use serde_json::Value;

fn run(bin: &Path, args: &[&str]) -> Output {
    Command::new(bin)
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

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A diagnosis whose safest skips are layers 26 and 25, and the pair 17+18.
fn diagnosis(dir: &Path) -> String {
    let p = dir.join("diagnosis.json");
    let d = serde_json::json!({
        "questions": 5,
        "single_skips": [[26, 0.8], [25, 0.7], [3, 0.6]],
        "pair_skips": [[17, 0.6]],
    });
    std::fs::write(&p, d.to_string()).unwrap();
    p.to_string_lossy().into()
}

#[test]
fn a_menu_is_built_routed_at_both_ends_and_calibrated_on_other_questions() {
    // Fails (with how to get it) when the model is missing, unless skipping was asked for.
    if drllm_engine::testing::load_default_model_for_tests(&LoadOptions::default()).is_none() {
        return;
    }
    let (trainer, evaluator) = (
        Path::new(env!("CARGO_BIN_EXE_trainer")),
        drllm_tests::bin("evaluator"),
    );
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).to_string_lossy().to_string();
    let diag = diagnosis(dir.path());
    let base = ["menu", "--dataset", "arc_easy", "--split", "dev"];
    let menu_args = ["--diagnosis", &diag, "--singles", "2", "--pairs", "1"];
    let o = run(
        trainer,
        &[&base[..], &menu_args, &["--limit", "8", "--out", &p("m")]].concat(),
    );
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    ok(&o);
    let m = PathMenu::load(&dir.path().join("m")).unwrap();
    let names: Vec<&str> = m.paths.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["full", "skip-26", "skip-25", "skip-17+18"]);
    assert_eq!(m.gate_layer, 17, "the first layer a path leaves out");
    assert_eq!(m.training_questions.len(), 8);
    assert_eq!(
        m.paths[0].keep_rate, 1.0,
        "the full path keeps its own answer"
    );
    assert!(m.paths.iter().all(|p| (0.0..=1.0).contains(&p.keep_rate)));
    assert!(table.contains("| skip-17+18 | 28 |"), "{table}");

    // A skip before the gate cannot be routed: refused, naming the fix.
    let o = run(
        trainer,
        &[
            &base[..],
            &menu_args,
            &["--limit", "8", "--gate-layer", "20", "--out", &p("x")],
        ]
        .concat(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--gate-layer 17 or lower"),
        "{err}"
    );

    // τ = 0: always the cheapest path (28 layers); τ = 1: the static model.
    let eval = |knob: &str, out: &str| {
        let args = [
            "run",
            "--routers",
            &p("m"),
            "--dataset",
            "arc_easy",
            "--limit",
            "3",
        ];
        ok(&run(
            &evaluator,
            &[&args[..], &["--budget", knob, "--out", &p(out)]].concat(),
        ));
        json(&dir.path().join(out).join("report.json"))
    };
    let cheap = eval("0", "r0");
    assert_eq!(cheap["router_kind"], "path-menu");
    assert_eq!(cheap["overall"]["mean_path_len"], 28.0);
    let stat = eval("1", "r1");
    assert_eq!(stat["overall"]["mean_path_len"], 30.0);
    assert_eq!(
        stat["overall"]["routed_accuracy"],
        stat["overall"]["static_accuracy"]
    );
    let o = run(
        &evaluator,
        &[
            "run",
            "--routers",
            &p("m"),
            "--dataset",
            "arc_easy",
            "--limit",
            "1",
            "--budget=-0.5",
            "--out",
            &p("bad"),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("a path menu's threshold τ must be in [0, 1]"),
        "{err}"
    );

    // Calibration on the first 10 dev questions: the gate's 8 are left out, 2 remain.
    let cal = [
        "calibrate",
        "--routers",
        &p("m"),
        "--dataset",
        "arc_easy",
        "--split",
        "dev",
        "--limit",
        "10",
        "--grid",
        "1,0",
    ];
    ok(&run(&evaluator, &cal));
    let cert = json(&dir.path().join("m").join("certificate.json"));
    assert_eq!(cert["n"], 2);
    assert!(cert["calibration"]
        .as_str()
        .unwrap()
        .contains("8 questions"));
    assert_eq!(cert["points"][0]["mean_layers"], 30.0);
}
