//! `worker parity`: the engine against a reference file (`../shared/reference` format) on any
//! device: per prompt and layer path, the largest logit difference over the reference's top-10,
//! the top-1 and the greedy tokens. Exit status 1 when any path is off, so a GPU host's first
//! check is one command.

use std::path::PathBuf;

use anyhow::Context;
use drllm_engine::reference::{check, read};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// Reference outputs (JSON), e.g. ../shared/reference/smollm2_135m_q4_1.json.
    #[arg(long)]
    reference: PathBuf,
    /// Largest allowed |ours − reference| logit. The reference is exact float32: with `--exact`
    /// 0.02 holds on the CPU; engines that quantize activations move logits by up to ~1.
    #[arg(long, default_value_t = 0.02)]
    tolerance: f32,
}

pub fn run(a: Args) -> anyhow::Result<std::process::ExitCode> {
    let prompts = read(&a.reference)?;
    let lm = a.model.load()?;
    let t = std::time::Instant::now();
    let reports = check(&lm, &prompts).context("running the reference prompts")?;
    let failed = reports.iter().filter(|r| !r.passes(a.tolerance)).count();
    for r in &reports {
        eprintln!(
            "{:<6} {:<16} {:<16} max |Δlogit| {:.4}  top-1 {}  greedy {}{}",
            if r.passes(a.tolerance) {
                "ok"
            } else {
                "FAILED"
            },
            r.prompt,
            r.path,
            r.max_logit_diff,
            r.top1_match,
            r.greedy_match,
            if r.ids_match {
                ""
            } else {
                "  (token ids differ)"
            }
        );
    }
    let max = reports
        .iter()
        .map(|r| r.max_logit_diff)
        .fold(0f32, f32::max);
    println!(
        "{}",
        serde_json::json!({"device": a.model.device.to_string(), "exact": a.model.exact,
            "paths": reports.len(), "failed": failed, "max_logit_diff": max,
            "tolerance": a.tolerance, "seconds": t.elapsed().as_secs_f64(), "reports": reports})
    );
    Ok(if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
