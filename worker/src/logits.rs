//! `worker logits`: the engine's answer for one prompt, as JSON, so anyone can compare it with
//! another implementation (llama.cpp, transformers) under any layer path.

use std::path::PathBuf;

use anyhow::Context;
use drllm_engine::reference::{last_logits, top};
use drllm_engine::{greedy, PathSpec};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: drllm_core::cli::ModelArgs,
    /// File holding the prompt text (used verbatim; special tokens like <|im_start|> are parsed).
    #[arg(long)]
    prompt_file: PathBuf,
    /// Treat the file as a user message and apply the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Layer path, e.g. `0,1,1,2,4` (skip 3, repeat 1); default: every layer once.
    #[arg(long)]
    path: Option<PathSpec>,
    /// How many of the largest next-token logits to print.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Greedy tokens to generate after the prompt (stops early at the model's EOS).
    #[arg(long, default_value_t = 0)]
    greedy: usize,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.prompt_file)
        .with_context(|| format!("reading prompt file {}", a.prompt_file.display()))?;
    let lm = a.model.load()?;
    let text = if a.chat {
        lm.tokenizer.apply_chat(text.trim_end_matches('\n'))?
    } else {
        text
    };
    let ids = lm.tokenizer.encode(&text, false)?;
    let n = lm.model.num_layers();
    let path = match &a.path {
        Some(p) => p.resolve(n).context("--path")?,
        None => drllm_engine::LayerPath::full(n),
    };
    let top = top(&last_logits(&lm.model, &ids, &path)?, a.top);
    let gen = if a.greedy > 0 {
        greedy(&lm.model, &ids, &path, a.greedy, |_| false)?.tokens
    } else {
        Vec::new()
    };
    let out = serde_json::json!({
        "model": lm.id,
        "path": path.layers(),
        "ids": ids,
        "top": top,
        "greedy": gen,
        "greedy_text": lm.tokenizer.decode(&gen)?,
    });
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
