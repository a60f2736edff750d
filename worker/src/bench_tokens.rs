//! `worker bench-tokens`: does a token route save wall time? The prefill of real task prompts
//! (the fused prompt + choice rows that evaluation runs) along the full path against token routes
//! that skip a share of the token-layers at random (the first `--keep-first` layers always run),
//! under both treatments of a skipped token's keys. Realized speedup (full time over routed
//! time) is compared with the structural one (token-layers of the full path over those run).
//! Full and routed passes alternate per prompt so that machine noise hits both alike.

use std::time::Instant;

use candle_core::Tensor;
use drllm_core::tasks::reward::prepare;
use drllm_engine::{LayerPath, Route, SkippedKv};
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    #[command(flatten)]
    task: drllm_core::cli::TaskArgs,
    /// Split whose prompts are timed.
    #[arg(long, default_value = "train")]
    split: String,
    /// Shares of all token-layers skipped (the routable layers skip more to reach them).
    #[arg(long, value_delimiter = ',', default_value = "0,0.1,0.2,0.3,0.4,0.5")]
    skip: Vec<f64>,
    /// Layers every token runs before routing starts.
    #[arg(long, default_value_t = 4)]
    keep_first: usize,
    /// Timed rounds over all prompts (the median round per setting is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seed of the random token masks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Rows of prompt `i` that run `layer`, for a pass of `n` rows.
type Masks<'a> = &'a dyn Fn(usize, usize, usize) -> Vec<bool>;

/// One timed pass over the prompts' rows, along the full path (`masks` `None`) or along token
/// routes; returns seconds and token-layers run.
fn time_pass(
    lm: &drllm_engine::LoadedModel,
    preps: &[drllm_core::tasks::reward::Prepared],
    masks: Option<(Masks<'_>, SkippedKv)>,
) -> anyhow::Result<(f64, u64)> {
    let model = &lm.model;
    let full = LayerPath::full(model.num_layers());
    let mut ran = 0u64;
    let t = Instant::now();
    for (i, prep) in preps.iter().enumerate() {
        let x = prep.embed(lm)?;
        let n = x.dim(0)?;
        let mut slots = Vec::new();
        let rows = prep.rows(&mut slots);
        let pass = match masks {
            None => {
                ran += (n * model.num_layers()) as u64;
                let route = Route::Path {
                    path: &full,
                    from: 0,
                };
                model.run_path(x, rows, route, |_, _, _| ())?
            }
            Some((masks, kv)) => {
                let mut gate = |layer: usize, _: &Tensor| {
                    let run = masks(i, layer, n);
                    ran += run.iter().filter(|&&r| r).count() as u64;
                    Ok(run)
                };
                let route = Route::Tokens {
                    gate: &mut gate,
                    kv,
                };
                model.run_path(x, rows, route, |_, _, _| ())?
            }
        };
        // The LM head over the scored rows, as evaluation runs it.
        let t0 = prep.prompt_ids.len() - 1;
        model.head(&pass.hidden.narrow(0, t0, n - t0)?)?;
    }
    Ok((t.elapsed().as_secs_f64(), ran))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let lm = a.model.load()?;
    let opts = a.task.reward_options(&lm)?;
    let examples = a.task.examples(&a.split)?;
    let preps = examples
        .iter()
        .map(|ex| prepare(&lm, ex, &opts))
        .collect::<Result<Vec<_>, _>>()?;
    let layers = lm.model.num_layers();
    anyhow::ensure!(
        a.keep_first < layers,
        "--keep-first {} leaves no layer of {layers} to route",
        a.keep_first
    );
    let rows: usize = preps.iter().map(|p| p.segments().rows()).sum();
    eprintln!(
        "{} prompts, {rows} rows, {layers} layers, {} rounds, {} threads",
        preps.len(),
        a.rounds,
        drllm_engine::init_cpu_threads()
    );
    // Masks fixed per (prompt, layer, seed) so every round runs the same work.
    let masks = |skip: f64, i: usize, layer: usize, n: usize| -> Vec<bool> {
        let p = skip * layers as f64 / (layers - a.keep_first) as f64;
        let mut rng = StdRng::seed_from_u64(a.seed ^ ((i as u64) << 32) ^ layer as u64);
        (0..n)
            .map(|_| layer < a.keep_first || !rng.random_bool(p.min(1.0)))
            .collect()
    };
    let mut out = Vec::new();
    for &skip in &a.skip {
        for kv in [SkippedKv::Project, SkippedKv::Mask] {
            let (mut full_t, mut routed_t, mut ran) = (Vec::new(), Vec::new(), 0);
            for round in 0..=a.rounds {
                let (f, _) = time_pass(&lm, &preps, None)?;
                let gate = |i: usize, layer: usize, n: usize| masks(skip, i, layer, n);
                let (r, n) = time_pass(&lm, &preps, Some((&gate, kv)))?;
                // Round 0 warms the caches and is not counted.
                if round > 0 {
                    full_t.push(f);
                    routed_t.push(r);
                    ran = n;
                }
            }
            let total = (rows * layers) as f64;
            let structural = total / ran as f64;
            let realized = median(full_t.clone()) / median(routed_t.clone());
            let line = serde_json::json!({
                "skip_target": skip, "skipped_kv": kv.name(),
                "skipped_share": 1.0 - ran as f64 / total,
                "full_s": median(full_t), "routed_s": median(routed_t),
                "structural_speedup": structural, "realized_speedup": realized,
                "realized_over_structural": realized / structural,
            });
            println!("{line}");
            out.push(line);
        }
    }
    Ok(())
}
