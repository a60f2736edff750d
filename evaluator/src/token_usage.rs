//! `evaluator token-usage`: where a token router spends its compute. For each question it runs
//! the full model (each row's loss on its own token) and the routed pass (each row's layers
//! run), then reports the mean layers run per token category: the shared prefix every prompt
//! starts with, punctuation, stop words, rare tokens (seen once in the set),
//! high-loss tokens (the top tenth under the full model), the choices' continuation rows and the
//! prompt's last token. Also the share of token-layers saved over all rows and over the rows
//! after the shared prefix (which a prefix cache would make free anyway). Writes usage.json,
//! usage.md and usage.svg.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use candle_core::{Tensor, D};
use drllm_core::tasks::reward::{prepare, Prepared};
use drllm_engine::{LayerPath, LoadedModel, Route, RowMeta};
use serde::Serialize;

use crate::router::Router;

#[derive(clap::Args)]
pub struct Args {
    /// A token router checkpoint folder (`trainer tokens`).
    #[arg(long)]
    routers: PathBuf,
    /// The skip threshold τ; default: the certified point, else 0.5.
    #[arg(long)]
    budget: Option<f32>,
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    #[command(flatten)]
    task: drllm_core::cli::TaskArgs,
    #[arg(long, default_value = "dev")]
    split: String,
    /// Folder for usage.json, usage.md and usage.svg.
    #[arg(long)]
    out: PathBuf,
}

/// Rows of one question: token, category flags, loss under the full model, layers run.
struct Row {
    id: u32,
    loss: Option<f32>,
    ran: u8,
    cont: bool,
    last_prompt: bool,
}

/// One category's share of the rows and mean layers run.
#[derive(Debug, Clone, Serialize)]
pub struct Category {
    pub name: &'static str,
    pub rows: usize,
    pub mean_layers: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub router: String,
    pub knob: f32,
    pub questions: usize,
    pub rows: usize,
    pub layers: usize,
    pub shared_prefix_tokens: usize,
    /// Share of token-layers saved over every row.
    pub saved_all: f64,
    /// Over the rows after the shared prefix.
    pub saved_after_prefix: f64,
    pub categories: Vec<Category>,
}

const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "at", "for", "by", "with", "and", "or", "is", "are",
    "was", "were", "be", "it", "its", "this", "that", "as", "from", "which", "what", "can", "do",
    "does", "not", "most", "their", "they", "has", "have", "will", "would", "how", "when",
];

/// Each row's loss on its own token under the full model: `-log p(row's token | the rows
/// before it in its sequence)`; `None` for the first row.
fn row_losses(lm: &LoadedModel, prep: &Prepared) -> anyhow::Result<Vec<Option<f32>>> {
    let model = &lm.model;
    let full = LayerPath::full(model.num_layers());
    let mut slots = Vec::new();
    let route = Route::Path {
        path: &full,
        from: 0,
    };
    let pass = model.run_path(prep.embed(lm)?, prep.rows(&mut slots), route, |_, _, _| ())?;
    let lp = candle_nn::ops::log_softmax(&model.head(&pass.hidden)?, D::Minus1)?;
    let lp = lp.to_vec2::<f32>()?;
    let meta = RowMeta::segments(prep.segments());
    let t = prep.prompt_ids.len();
    let ids = prep.row_ids();
    Ok((0..ids.len())
        .map(|i| {
            let prev = match (i, meta.seg[i]) {
                (0, _) => return None,
                (_, 0) => i - 1,
                _ if meta.seg[i - 1] != meta.seg[i] => t - 1,
                _ => i - 1,
            };
            Some(-lp[prev][ids[i] as usize])
        })
        .collect())
}

/// The rows of `prep` with their layers run along `router`'s token route at `knob`.
fn routed_rows(
    lm: &LoadedModel,
    router: &drllm_core::router::TokenRouter,
    knob: f32,
    prep: &Prepared,
) -> anyhow::Result<Vec<Row>> {
    let model = &lm.model;
    let ids = prep.row_ids();
    let mut ran = vec![0u8; ids.len()];
    let mut gate = router.gate(knob);
    let mut decide = |layer: usize, x: &Tensor| {
        let run = gate.decide(layer, x)?;
        for (r, &f) in ran.iter_mut().zip(&run) {
            *r += u8::from(f);
        }
        Ok(run)
    };
    let mut slots = Vec::new();
    let route = Route::Tokens {
        gate: &mut decide,
        kv: router.kv(),
    };
    model.run_path(prep.embed(lm)?, prep.rows(&mut slots), route, |_, _, _| ())?;
    let losses = row_losses(lm, prep)?;
    let t = prep.prompt_ids.len();
    Ok(ids
        .iter()
        .enumerate()
        .map(|(i, &id)| Row {
            id,
            loss: losses[i],
            ran: ran[i],
            cont: i >= t,
            last_prompt: i + 1 == t,
        })
        .collect())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let lm = a.model.load()?;
    let router = Router::load(&a.routers, &lm)?;
    let Router::Token(tr) = &router else {
        anyhow::bail!(
            "{}: token-usage needs a token router (`trainer tokens`), this is a {} checkpoint",
            a.routers.display(),
            router.kind()
        );
    };
    let op = crate::certify::operating_point(&a.routers, &router, a.budget);
    // Without a certificate, the trained operating point.
    let knob = match (a.budget, op) {
        (Some(b), _) => b,
        (None, Ok(op)) if op.certificate.is_some() => op.knob,
        (None, _) => 0.5,
    };
    let opts = a.task.reward_options(&lm)?;
    let examples = a.task.examples(&a.split)?;
    let bar = drllm_core::cli::progress_bar(examples.len());
    let mut per_q = Vec::with_capacity(examples.len());
    let mut prompts = Vec::with_capacity(examples.len());
    for ex in &examples {
        let prep = prepare(&lm, ex, &opts).with_context(|| format!("example {}", ex.id))?;
        per_q.push(routed_rows(&lm, tr, knob, &prep)?);
        prompts.push(prep.prompt_ids.clone());
        bar.inc(1);
    }
    bar.finish_and_clear();
    let usage = summarize(&lm, &a, knob, &per_q, &prompts)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    std::fs::write(
        a.out.join("usage.json"),
        serde_json::to_string_pretty(&usage)?,
    )?;
    std::fs::write(a.out.join("usage.md"), markdown(&usage))?;
    plot(&usage, &a.out.join("usage.svg")).map_err(|e| anyhow::anyhow!("usage.svg: {e}"))?;
    println!("{}", serde_json::to_string(&usage)?);
    Ok(())
}

fn shared_prefix(prompts: &[Vec<u32>]) -> usize {
    let first = &prompts[0];
    prompts.iter().fold(first.len(), |n, p| {
        n.min(first.iter().zip(p).take_while(|(a, b)| a == b).count())
    })
}

fn summarize(
    lm: &LoadedModel,
    a: &Args,
    knob: f32,
    per_q: &[Vec<Row>],
    prompts: &[Vec<u32>],
) -> anyhow::Result<Usage> {
    let layers = lm.model.num_layers();
    let prefix = shared_prefix(prompts);
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for r in per_q.iter().flatten() {
        *counts.entry(r.id).or_default() += 1;
    }
    let mut losses: Vec<f32> = per_q.iter().flatten().filter_map(|r| r.loss).collect();
    losses.sort_by(f32::total_cmp);
    let high = losses
        .get(losses.len() * 9 / 10)
        .copied()
        .unwrap_or(f32::INFINITY);
    let mut text = HashMap::new();
    for &id in counts.keys() {
        text.insert(id, lm.tokenizer.decode(&[id])?);
    }
    type Test<'a> = Box<dyn Fn(usize, &Row) -> bool + 'a>;
    let is = |id: u32, f: &dyn Fn(&str) -> bool| f(text[&id].trim());
    let tests: Vec<(&'static str, Test)> = vec![
        ("all tokens", Box::new(|_, _| true)),
        ("shared prefix", Box::new(|i, _| i < prefix)),
        ("after the shared prefix", Box::new(|i, _| i >= prefix)),
        (
            "punctuation",
            Box::new(|_, r| {
                is(r.id, &|s| {
                    !s.is_empty() && s.chars().all(|c| c.is_ascii_punctuation())
                })
            }),
        ),
        (
            "stop words",
            Box::new(|_, r| is(r.id, &|s| STOP_WORDS.contains(&s.to_lowercase().as_str()))),
        ),
        (
            "rare (once in the set)",
            Box::new(|_, r| counts[&r.id] == 1),
        ),
        (
            "high loss (top 10%)",
            Box::new(|_, r| r.loss.is_some_and(|l| l >= high)),
        ),
        ("choice continuations", Box::new(|_, r| r.cont)),
        ("last prompt token", Box::new(|_, r| r.last_prompt)),
    ];
    let categories = tests
        .iter()
        .map(|(name, test)| {
            let rows: Vec<u8> = per_q
                .iter()
                .flat_map(|q| {
                    q.iter()
                        .enumerate()
                        .filter(|(i, r)| test(*i, r))
                        .map(|(_, r)| r.ran)
                })
                .collect();
            Category {
                name,
                rows: rows.len(),
                mean_layers: rows.iter().map(|&r| r as f64).sum::<f64>() / rows.len().max(1) as f64,
            }
        })
        .collect::<Vec<_>>();
    let saved = |c: &Category| 1.0 - c.mean_layers / layers as f64;
    Ok(Usage {
        router: a.routers.display().to_string(),
        knob,
        questions: per_q.len(),
        rows: categories[0].rows,
        layers,
        shared_prefix_tokens: prefix,
        saved_all: saved(&categories[0]),
        saved_after_prefix: saved(&categories[2]),
        categories,
    })
}

fn markdown(u: &Usage) -> String {
    let mut s = format!(
        "Token router {} at τ = {}: {} questions, {} rows, shared prefix {} tokens; token-layers \
         saved {:.1}% over all rows, {:.1}% after the shared prefix.\n\n\
         | tokens | rows | mean layers run (of {}) |\n| --- | --- | --- |\n",
        u.router,
        u.knob,
        u.questions,
        u.rows,
        u.shared_prefix_tokens,
        100.0 * u.saved_all,
        100.0 * u.saved_after_prefix,
        u.layers
    );
    for c in &u.categories {
        let mean = match c.rows {
            0 => "–".to_string(),
            _ => format!("{:.2}", c.mean_layers),
        };
        s += &format!("| {} | {} | {mean} |\n", c.name, c.rows);
    }
    s
}

fn plot(u: &Usage, path: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (760, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = u.categories.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Where the token router runs layers (τ = {})", u.knob),
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d(0f64..u.layers as f64, (0..n).into_segmented())?;
    chart
        .configure_mesh()
        .x_desc("mean layers run per token")
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => u.categories.get(*i).map_or("", |c| c.name).into(),
            _ => String::new(),
        })
        .draw()?;
    let c = RGBColor(33, 102, 172);
    chart.draw_series(u.categories.iter().enumerate().map(|(i, cat)| {
        Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (cat.mean_layers, SegmentValue::Exact(i + 1)),
            ],
            c.mix(0.7).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}
