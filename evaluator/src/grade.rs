//! `evaluator grade`: the drllm graders applied to outputs of any system, line by line.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use drllm_tasks::{letter, math};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// JSONL input; each line {"pred": raw model output, "gold": answer, "kind": "math"|"letter"}.
    #[arg(long)]
    input: PathBuf,
    /// Where to write the graded lines (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Report and skip malformed lines instead of stopping at the first.
    #[arg(long)]
    skip_invalid: bool,
}

/// Grades one line; the error names the field.
pub fn grade_line(v: &mut Value) -> Result<(), String> {
    let get = |k: &str| -> Result<String, String> {
        match v.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(format!("field `{k}`: expected a string, found {other}")),
            None => Err(format!("field `{k}`: missing")),
        }
    };
    let (pred, gold, kind) = (get("pred")?, get("gold")?, get("kind")?);
    let (extracted, correct) = match kind.as_str() {
        "math" => {
            let b = math::extract_boxed(&pred);
            let ok = b.as_deref().is_some_and(|b| math::is_equiv(b, &gold));
            (b, ok)
        }
        "letter" => {
            let l = letter::extract(&pred);
            let g = gold.trim().chars().next();
            (
                l.map(String::from),
                g.is_some_and(|g| letter::grade(&pred, g)),
            )
        }
        other => return Err(format!("field `kind`: `{other}` is not `math` or `letter`")),
    };
    v["boxed"] = extracted.map_or(Value::Null, Value::String);
    v["correct"] = Value::Bool(correct);
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(&a.input).with_context(|| format!("opening {}", a.input.display()))?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let (mut graded, mut correct, mut skipped) = (0usize, 0usize, 0usize);
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", a.input.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let result = serde_json::from_str::<Value>(&line)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(|mut v| grade_line(&mut v).map(|()| v));
        match result {
            Ok(v) => {
                graded += 1;
                correct += usize::from(v["correct"] == Value::Bool(true));
                writeln!(out, "{v}")?;
            }
            Err(e) if a.skip_invalid => {
                skipped += 1;
                eprintln!("skipped {}:{}: {e}", a.input.display(), i + 1);
            }
            Err(e) => bail!("{}:{}: {e}", a.input.display(), i + 1),
        }
    }
    out.flush()?;
    eprintln!("graded {graded} lines, {correct} correct, {skipped} skipped");
    Ok(())
}
