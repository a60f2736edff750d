//! Datasets: ARC (Easy/Challenge), DART (MATH problems by level) and user JSONL files, parsed into
//! [`Example`]s with stable ids. The ARC and MATH files are embedded in the binary (vendored under
//! `data/`), so workers need no data folder. Bad lines are errors naming file, line and field; with
//! `skip_invalid` they are counted and reported instead, never dropped silently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use drllm_contract::{AnswerKind, Example};
use serde_json::Value;

/// Letter of choice `i`: A, B, C, …
pub fn letter(i: usize) -> char {
    (b'A' + i as u8) as char
}

/// A dataset that cannot be loaded, or one invalid line of it. `file` is the user's path, or
/// `data/…` for an embedded file; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// A field of a line is missing, empty, or has the wrong type or value.
    #[error("{file}:{line}: field `{field}`: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// The field's path, e.g. `question.choices[2].text`.
        field: String,
        /// What is wrong with the field.
        reason: String,
    },
    /// A line is not valid JSON.
    #[error("{file}:{line}: not valid JSON: {reason}")]
    Json {
        /// The file.
        file: String,
        /// The line, from 1.
        line: usize,
        /// The JSON parser's message.
        reason: String,
    },
    /// A line repeats the example id of an earlier valid line.
    #[error("{file}:{line}: duplicate id `{id}` (first on line {first})")]
    Duplicate {
        /// The file.
        file: String,
        /// The repeating line, from 1.
        line: usize,
        /// The example id, with its dataset prefix.
        id: String,
        /// The line the id first appeared on.
        first: usize,
    },
    /// A user file cannot be read.
    #[error("cannot read {file}: {reason}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error's message.
        reason: String,
    },
    /// A name that is neither a known dataset nor a JSONL path.
    #[error("unknown dataset `{0}`: use arc_easy, arc_challenge, dart, dart-1 … dart-5, or a path to a .jsonl file")]
    UnknownDataset(String),
    /// The dataset has no such split.
    #[error("dataset `{dataset}` has no split `{split}` (splits: {available})")]
    UnknownSplit {
        /// The dataset's name.
        dataset: String,
        /// The split asked for.
        split: String,
        /// The splits it has, comma-separated.
        available: String,
    },
}

/// A dataset name as users write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSpec {
    /// ARC-Easy (`arc_easy`), embedded; splits `train`, `dev` (or `validation`), `test`.
    ArcEasy,
    /// ARC-Challenge (`arc_challenge`), embedded; splits `train`, `dev` (or `validation`), `test`.
    ArcChallenge,
    /// MATH problems (`dart`, or `dart-1` … `dart-5` for one level), embedded; splits `train`,
    /// `validation` (or `test`). `None` = all levels.
    Dart(Option<u8>),
    /// A user JSONL file.
    Jsonl(PathBuf),
}

impl std::str::FromStr for DatasetSpec {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, DataError> {
        Ok(match s {
            "arc_easy" | "arc-easy" => DatasetSpec::ArcEasy,
            "arc_challenge" | "arc-challenge" => DatasetSpec::ArcChallenge,
            "dart" => DatasetSpec::Dart(None),
            _ => {
                if let Some(k) = s.strip_prefix("dart-").and_then(|k| k.parse::<u8>().ok()) {
                    if (1..=5).contains(&k) {
                        return Ok(DatasetSpec::Dart(Some(k)));
                    }
                }
                let path = s.strip_prefix("jsonl:").unwrap_or(s);
                if path.ends_with(".jsonl") || s.starts_with("jsonl:") {
                    DatasetSpec::Jsonl(PathBuf::from(path))
                } else {
                    return Err(DataError::UnknownDataset(s.to_string()));
                }
            }
        })
    }
}

impl DatasetSpec {
    /// The name examples carry in their `dataset` field.
    pub fn name(&self) -> String {
        match self {
            DatasetSpec::ArcEasy => "arc_easy".into(),
            DatasetSpec::ArcChallenge => "arc_challenge".into(),
            DatasetSpec::Dart(None) => "dart".into(),
            DatasetSpec::Dart(Some(k)) => format!("dart-{k}"),
            DatasetSpec::Jsonl(p) => format!(
                "jsonl:{}",
                p.file_stem().map_or("data".into(), |s| s.to_string_lossy())
            ),
        }
    }
}

/// Examples loaded, and the invalid lines skipped on request.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The valid examples in file order: of the requested level only, at most `limit`.
    pub examples: Vec<Example>,
    /// The file they come from (the user's path, or `data/…` for an embedded file).
    pub file: String,
    /// The line of each example in it, from 1, parallel to `examples`.
    pub lines: Vec<usize>,
    /// The invalid lines skipped instead of failing the load, in file order.
    pub skipped: Vec<DataError>,
}

macro_rules! embedded {
    ($path:literal) => {
        (
            concat!("data/", $path),
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/", $path)),
        )
    };
}

fn arc_file(challenge: bool, split: &str) -> Option<(&'static str, &'static str)> {
    Some(match (challenge, split) {
        (false, "train") => embedded!("arc/ARC-Easy-Train.jsonl"),
        (false, "dev" | "validation") => embedded!("arc/ARC-Easy-Dev.jsonl"),
        (false, "test") => embedded!("arc/ARC-Easy-Test.jsonl"),
        (true, "train") => embedded!("arc/ARC-Challenge-Train.jsonl"),
        (true, "dev" | "validation") => embedded!("arc/ARC-Challenge-Dev.jsonl"),
        (true, "test") => embedded!("arc/ARC-Challenge-Test.jsonl"),
        _ => return None,
    })
}

fn math_file(split: &str) -> Option<(&'static str, &'static str)> {
    Some(match split {
        "train" => embedded!("math/train.jsonl"),
        "validation" | "test" => embedded!("math/validation.jsonl"),
        _ => return None,
    })
}

/// Loads `split` of a dataset. Invalid lines of a user file are an error, or with `skip_invalid`
/// counted in the report (invalid lines of the embedded files always are). `limit` keeps the first
/// N valid examples.
pub fn load_dataset(
    spec: &DatasetSpec,
    split: &str,
    limit: Option<usize>,
    skip_invalid: bool,
) -> Result<LoadReport, DataError> {
    let name = spec.name();
    let unknown_split = |available: &str| DataError::UnknownSplit {
        dataset: name.clone(),
        split: split.to_string(),
        available: available.to_string(),
    };
    let (file, text, parse): (String, std::borrow::Cow<'static, str>, LineParser) = match spec {
        DatasetSpec::ArcEasy | DatasetSpec::ArcChallenge => {
            let (f, t) = arc_file(*spec == DatasetSpec::ArcChallenge, split)
                .ok_or_else(|| unknown_split("train, dev, test"))?;
            (f.to_string(), t.into(), parse_arc)
        }
        DatasetSpec::Dart(_) => {
            let (f, t) = math_file(split).ok_or_else(|| unknown_split("train, validation"))?;
            (f.to_string(), t.into(), parse_math)
        }
        DatasetSpec::Jsonl(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| DataError::Io {
                file: p.display().to_string(),
                reason: e.to_string(),
            })?;
            (p.display().to_string(), text.into(), parse_user)
        }
    };
    let level = match spec {
        DatasetSpec::Dart(l) => *l,
        _ => None,
    };
    let ctx = LineContext {
        dataset: name.clone(),
        split: split.to_string(),
        family: match spec {
            DatasetSpec::Dart(_) => "dart".to_string(),
            _ => name.clone(),
        },
    };
    // The embedded files are ours to vouch for but not to edit: their few defective lines (two
    // MATH problems without an answer) are always skipped and reported, never fatal.
    let skip = skip_invalid || !matches!(spec, DatasetSpec::Jsonl(_));
    parse_lines(&file, &text, &ctx, parse, level, limit, skip)
}

/// Parses one JSON line into an example; errors name the field.
type LineParser = fn(&Value, &LineContext) -> Result<Example, (String, String)>;

struct LineContext {
    dataset: String,
    split: String,
    /// Prefix of example ids.
    family: String,
}

fn parse_lines(
    file: &str,
    text: &str,
    ctx: &LineContext,
    parse: LineParser,
    level: Option<u8>,
    limit: Option<usize>,
    skip_invalid: bool,
) -> Result<LoadReport, DataError> {
    let mut report = LoadReport {
        file: file.to_string(),
        ..LoadReport::default()
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if limit.is_some_and(|n| report.examples.len() >= n) {
            break;
        }
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let result = serde_json::from_str::<Value>(line)
            .map_err(|e| DataError::Json {
                file: file.to_string(),
                line: lineno,
                reason: e.to_string(),
            })
            .and_then(|v| {
                parse(&v, ctx).map_err(|(field, reason)| DataError::Invalid {
                    file: file.to_string(),
                    line: lineno,
                    field,
                    reason,
                })
            })
            .and_then(|ex| match seen.get(&ex.id) {
                Some(&first) => Err(DataError::Duplicate {
                    file: file.to_string(),
                    line: lineno,
                    id: ex.id.clone(),
                    first,
                }),
                None => Ok(ex),
            });
        match result {
            Ok(ex) => {
                seen.insert(ex.id.clone(), lineno);
                if level.is_none() || ex.level == level {
                    report.examples.push(ex);
                    report.lines.push(lineno);
                }
            }
            Err(e) if skip_invalid => report.skipped.push(e),
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

type FieldResult<T> = Result<T, (String, String)>;

fn field<'a>(v: &'a Value, path: &str) -> FieldResult<&'a Value> {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur
            .get(part)
            .ok_or_else(|| (path.to_string(), "missing".to_string()))?;
    }
    Ok(cur)
}

fn string(v: &Value, path: &str) -> FieldResult<String> {
    match field(v, path)? {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err((path.into(), "empty".into())),
        // Ids and answers are sometimes numbers in user files.
        Value::Number(n) => Ok(n.to_string()),
        other => Err((path.into(), format!("expected a string, found {other}"))),
    }
}

fn parse_arc(v: &Value, ctx: &LineContext) -> FieldResult<Example> {
    let id = string(v, "id")?;
    let question = string(v, "question.stem")?;
    let choices = field(v, "question.choices")?.as_array().ok_or_else(|| {
        (
            "question.choices".to_string(),
            "expected an array".to_string(),
        )
    })?;
    if choices.len() < 2 {
        return Err((
            "question.choices".into(),
            format!("{} choices; at least 2 are needed", choices.len()),
        ));
    }
    let mut texts = Vec::with_capacity(choices.len());
    let mut labels = Vec::with_capacity(choices.len());
    for (i, c) in choices.iter().enumerate() {
        texts.push(string(c, "text").map_err(|(f, r)| (format!("question.choices[{i}].{f}"), r))?);
        labels
            .push(string(c, "label").map_err(|(f, r)| (format!("question.choices[{i}].{f}"), r))?);
    }
    let key = string(v, "answerKey")?;
    let gold = labels.iter().position(|l| *l == key).ok_or_else(|| {
        (
            "answerKey".to_string(),
            format!("`{key}` is not among the choice labels {labels:?}"),
        )
    })?;
    Ok(Example {
        id: format!("{}/{id}", ctx.family),
        dataset: ctx.dataset.clone(),
        split: ctx.split.clone(),
        question,
        choices: texts,
        answer: letter(gold).to_string(),
        kind: AnswerKind::Letter,
        level: None,
    })
}

fn parse_math(v: &Value, ctx: &LineContext) -> FieldResult<Example> {
    let level = match field(v, "level")?.as_str() {
        Some(s) => match s.strip_prefix("Level ").map(str::trim) {
            Some("?") => None,
            Some(k) => Some(
                k.parse::<u8>()
                    .ok()
                    .filter(|k| (1..=5).contains(k))
                    .ok_or_else(|| {
                        (
                            "level".to_string(),
                            format!("`{s}` is not Level 1 … Level 5 or Level ?"),
                        )
                    })?,
            ),
            None => return Err(("level".into(), format!("`{s}` is not `Level k`"))),
        },
        None => return Err(("level".into(), "expected a string".into())),
    };
    Ok(Example {
        id: format!("{}/{}", ctx.family, string(v, "unique_id")?),
        dataset: ctx.dataset.clone(),
        split: ctx.split.clone(),
        question: string(v, "problem")?,
        choices: Vec::new(),
        answer: string(v, "answer")?,
        kind: AnswerKind::Math,
        level,
    })
}

/// User format: `{"id", "question", "answer", "choices"?: [text, …], "kind"?: "letter"|"math"}`.
/// With choices, `answer` is a letter (A, B, …) or the text of one choice.
fn parse_user(v: &Value, ctx: &LineContext) -> FieldResult<Example> {
    let id = string(v, "id")?;
    let question = string(v, "question")?;
    let answer = string(v, "answer")?;
    let choices: Vec<String> = match v.get("choices") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, c)| match c {
                Value::String(s) => Ok(s.clone()),
                other => Err((
                    format!("choices[{i}]"),
                    format!("expected a string, found {other}"),
                )),
            })
            .collect::<FieldResult<_>>()?,
        Some(other) => {
            return Err((
                "choices".into(),
                format!("expected an array, found {other}"),
            ))
        }
    };
    let kind = match v.get("kind").and_then(|k| k.as_str()) {
        None => {
            if choices.is_empty() {
                AnswerKind::Math
            } else {
                AnswerKind::Letter
            }
        }
        Some("letter") => AnswerKind::Letter,
        Some("math") => AnswerKind::Math,
        Some(other) => {
            return Err((
                "kind".into(),
                format!("`{other}` is not `letter` or `math`"),
            ))
        }
    };
    let answer = match kind {
        AnswerKind::Math => answer,
        AnswerKind::Letter => {
            if choices.len() < 2 {
                return Err((
                    "choices".into(),
                    "a letter-graded example needs at least 2 choices".into(),
                ));
            }
            let by_letter = (0..choices.len()).find(|&i| answer.trim() == letter(i).to_string());
            let by_text = choices.iter().position(|c| c.trim() == answer.trim());
            match by_letter.or(by_text) {
                Some(i) => letter(i).to_string(),
                None => {
                    return Err((
                        "answer".into(),
                        format!(
                            "`{answer}` is neither a choice letter (A–{}) nor a choice text",
                            letter(choices.len() - 1)
                        ),
                    ))
                }
            }
        }
    };
    Ok(Example {
        id: format!("{}/{id}", ctx.family),
        dataset: ctx.dataset.clone(),
        split: ctx.split.clone(),
        question,
        choices,
        answer,
        kind,
        level: None,
    })
}

/// Reads a user JSONL file (for callers that have a path rather than a spec).
pub fn load_jsonl(path: &Path, skip_invalid: bool) -> Result<LoadReport, DataError> {
    load_dataset(
        &DatasetSpec::Jsonl(path.to_path_buf()),
        "all",
        None,
        skip_invalid,
    )
}
