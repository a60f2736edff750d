//! The search's output record, one per searched example, and the table of its columns. The
//! table ([`COLUMNS`]) is the one description of the record schema: the Parquet writer and reader
//! (drllm-records) walk it, README's "Search records" table is checked against it, and each
//! column says which schema version added it. A new column is a field of [`SearchRecord`], its
//! name in [`search_record_fields!`] and its row in [`COLUMNS`] (plus its protocol field).

use crate::settings::{RunSettings, SearchConfig};

/// Version of the record schema, stored as `drllm.schema_version` in every file. Version 2 added
/// `good_margins` and `original_margin`; version 3 the rest of the run settings
/// (`prompt_style`, `early_stop`, `length_normalized`). Readers still accept versions 1 and 2
/// (the missing columns read as empty / null / the defaults those searches ran with).
pub const SCHEMA_VERSION: &str = "3";
/// Every schema version this build reads.
pub const READABLE_SCHEMA_VERSIONS: [&str; 3] = ["1", "2", "3"];

/// One searched example.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchRecord {
    /// Stable id: dataset family + source id, e.g. `arc_easy/Mercury_7220990`.
    pub example_id: String,
    /// Dataset name as requested (`arc_easy`, `dart-3`, `jsonl:questions`).
    pub dataset: String,
    /// Split the example comes from (`train`, `test`, …).
    pub split: String,
    /// The task prompt, before any chat template.
    pub question: String,
    /// Gold answer: a choice letter, or LaTeX for MATH.
    pub gold: String,
    /// The model spec the search ran, as the user named it.
    pub model_id: String,
    /// blake3 of the weight files (32 hex digits).
    pub model_fingerprint: String,
    /// Number of layers L of the model; the full path is `0..L`.
    pub num_layers: u16,
    /// Whether the full model (every layer once, in order) answers correctly.
    pub original_correct: bool,
    /// Whether any path the search judged, the full path included, was good (reward 1).
    pub found: bool,
    /// Layer indices of the best path in execution order: the shortest good path (ties: fewer
    /// distinct layers, then first found), or the full path when none was found.
    pub best_path: Vec<u16>,
    /// Per layer: 0 skip, 1 execute, 2 repeat (length L).
    pub best_decisions: Vec<u8>,
    /// Number of distinct layers `best_path` executes.
    pub distinct_layers: u16,
    /// Every good path (reward 1) as layer indices, in the order first judged.
    pub good_paths: Vec<Vec<u16>>,
    /// choice-loglik: each good path's gold margin (gold choice's score minus the best other's),
    /// aligned with `good_paths`; empty when the reward has no margin (generate, schema 1).
    pub good_margins: Vec<f64>,
    /// choice-loglik: the full path's gold margin (> 0 iff it is right); `None` for generate
    /// and schema 1.
    pub original_margin: Option<f64>,
    /// generate mode: the response under the best path; `None` for choice-loglik.
    pub best_response: Option<String>,
    /// Simulations run (under the probe strategy: paths probed).
    pub simulations: u32,
    /// Distinct paths whose reward was computed, the full path included.
    pub distinct_paths: u32,
    /// Tokens × layers actually executed by the whole search.
    pub layer_executions: u64,
    /// Search time of the example, in seconds.
    pub wall_seconds: f64,
    /// The settings the search ran with. In Parquet: `reward_mode` (text), `prompt_style`
    /// (text, null when not recorded), `early_stop`, `length_normalized` and `search_config`
    /// (the search hyper-parameters as JSON).
    pub settings: RunSettings,
    /// The worker that searched the example.
    pub worker_id: String,
    /// Milliseconds since the Unix epoch, UTC.
    pub timestamp_ms: i64,
}

/// Calls the macro `$m` with the name of every [`SearchRecord`] field (see
/// [`search_config_fields!`](crate::search_config_fields)): the protocol converts records field
/// by field from this list, and a field missing here fails to compile there.
#[macro_export]
macro_rules! search_record_fields {
    ($m:ident) => {
        $m! {
            example_id,
            dataset,
            split,
            question,
            gold,
            model_id,
            model_fingerprint,
            num_layers,
            original_correct,
            found,
            best_path,
            best_decisions,
            distinct_layers,
            good_paths,
            good_margins,
            original_margin,
            best_response,
            simulations,
            distinct_paths,
            layer_executions,
            wall_seconds,
            settings,
            worker_id,
            timestamp_ms
        }
    };
}

/// The type of a column's cells, which decides its Parquet type (drllm-records maps each kind
/// to one Arrow type) and its entry in README's schema table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text.
    Str,
    /// UTF-8 text or null.
    OptStr,
    /// Boolean.
    Bool,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// 64-bit float.
    F64,
    /// 64-bit float or null.
    OptF64,
    /// List of unsigned 16-bit integers (a path).
    U16s,
    /// List of unsigned 8-bit integers (per-layer decisions).
    U8s,
    /// List of lists of unsigned 16-bit integers (paths).
    Paths,
    /// List of 64-bit floats.
    F64s,
    /// Milliseconds since the Unix epoch, UTC.
    TimestampMs,
}

impl Kind {
    /// The type as README's schema table writes it.
    pub fn readme_type(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::OptStr => "string, nullable",
            Kind::Bool => "bool",
            Kind::U16 => "uint16",
            Kind::U32 => "uint32",
            Kind::U64 => "uint64",
            Kind::F64 => "float64",
            Kind::OptF64 => "float64, nullable",
            Kind::U16s => "list<uint16>",
            Kind::U8s => "list<uint8>",
            Kind::Paths => "list<list<uint16>>",
            Kind::F64s => "list<float64>",
            Kind::TimestampMs => "timestamp[ms, UTC]",
        }
    }
}

/// One cell: a column's value for one record.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Cell {
    Str(String),
    OptStr(Option<String>),
    Bool(bool),
    U16(u16),
    U32(u32),
    U64(u64),
    F64(f64),
    OptF64(Option<f64>),
    U16s(Vec<u16>),
    U8s(Vec<u8>),
    Paths(Vec<Vec<u16>>),
    F64s(Vec<f64>),
    TimestampMs(i64),
}

impl Cell {
    /// The kind of this cell.
    pub fn kind(&self) -> Kind {
        match self {
            Cell::Str(_) => Kind::Str,
            Cell::OptStr(_) => Kind::OptStr,
            Cell::Bool(_) => Kind::Bool,
            Cell::U16(_) => Kind::U16,
            Cell::U32(_) => Kind::U32,
            Cell::U64(_) => Kind::U64,
            Cell::F64(_) => Kind::F64,
            Cell::OptF64(_) => Kind::OptF64,
            Cell::U16s(_) => Kind::U16s,
            Cell::U8s(_) => Kind::U8s,
            Cell::Paths(_) => Kind::Paths,
            Cell::F64s(_) => Kind::F64s,
            Cell::TimestampMs(_) => Kind::TimestampMs,
        }
    }
}

/// One column of the record schema.
pub struct Column {
    /// Its name in Parquet.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// The schema version that added it: files of older versions lack it, and their records
    /// keep [`SearchRecord::default`]'s value (what those searches ran with).
    pub since: u8,
    /// The record's cell.
    pub get: fn(&SearchRecord) -> Cell,
    /// Stores a cell read back (of this column's kind) in the record; an error says what is
    /// wrong with the value. Derived columns (`best_path_len`) ignore it.
    pub set: fn(&mut SearchRecord, Cell) -> Result<(), String>,
}

/// A column that mirrors one field: `col!(name, Kind, since, |r| field-expr)`.
macro_rules! col {
    ($name:literal, $kind:ident, $since:literal, |$r:ident| $($field:ident).+) => {
        Column {
            name: $name,
            kind: Kind::$kind,
            since: $since,
            get: |$r| Cell::$kind($r.$($field).+.clone()),
            set: |$r, c| match c {
                Cell::$kind(v) => {
                    $r.$($field).+ = v;
                    Ok(())
                }
                other => Err(format!("expected {:?}, got {:?}", Kind::$kind, other.kind())),
            },
        }
    };
}

/// A text column holding a named choice (`reward_mode`, `prompt_style`).
fn parse_cell<T: std::str::FromStr<Err = String>>(c: Cell) -> Result<Option<T>, String> {
    match c {
        Cell::Str(s) => s.parse().map(Some),
        Cell::OptStr(s) => s.map(|s| s.parse()).transpose(),
        other => Err(format!("expected text, got {:?}", other.kind())),
    }
}

/// The record schema, in file order (README "Search records").
pub const COLUMNS: &[Column] = &[
    col!("example_id", Str, 1, |r| example_id),
    col!("dataset", Str, 1, |r| dataset),
    col!("split", Str, 1, |r| split),
    col!("question", Str, 1, |r| question),
    col!("gold", Str, 1, |r| gold),
    col!("model_id", Str, 1, |r| model_id),
    col!("model_fingerprint", Str, 1, |r| model_fingerprint),
    Column {
        name: "reward_mode",
        kind: Kind::Str,
        since: 1,
        get: |r| Cell::Str(r.settings.reward.mode.to_string()),
        set: |r, c| {
            r.settings.reward.mode = parse_cell(c)?.ok_or("no reward mode")?;
            Ok(())
        },
    },
    Column {
        name: "prompt_style",
        kind: Kind::OptStr,
        since: 3,
        get: |r| Cell::OptStr(r.settings.reward.style.map(|s| s.to_string())),
        set: |r, c| {
            r.settings.reward.style = parse_cell(c)?;
            Ok(())
        },
    },
    col!("early_stop", Bool, 3, |r| settings.reward.early_stop),
    col!("length_normalized", Bool, 3, |r| settings
        .reward
        .length_normalized),
    col!("num_layers", U16, 1, |r| num_layers),
    col!("original_correct", Bool, 1, |r| original_correct),
    col!("found", Bool, 1, |r| found),
    col!("best_path", U16s, 1, |r| best_path),
    col!("best_decisions", U8s, 1, |r| best_decisions),
    Column {
        name: "best_path_len",
        kind: Kind::U16,
        since: 1,
        get: |r| Cell::U16(r.best_path.len().min(u16::MAX as usize) as u16),
        set: |_, _| Ok(()),
    },
    col!("distinct_layers", U16, 1, |r| distinct_layers),
    col!("good_paths", Paths, 1, |r| good_paths),
    col!("good_margins", F64s, 2, |r| good_margins),
    col!("original_margin", OptF64, 2, |r| original_margin),
    col!("best_response", OptStr, 1, |r| best_response),
    col!("simulations", U32, 1, |r| simulations),
    col!("distinct_paths", U32, 1, |r| distinct_paths),
    col!("layer_executions", U64, 1, |r| layer_executions),
    col!("wall_seconds", F64, 1, |r| wall_seconds),
    Column {
        name: "search_config",
        kind: Kind::Str,
        since: 1,
        get: |r| Cell::Str(serde_json::to_string(&r.settings.search).expect("serializes")),
        set: |r, c| {
            r.settings.search = match c {
                Cell::Str(s) if matches!(s.trim(), "" | "{}") => SearchConfig::default(),
                Cell::Str(s) => serde_json::from_str(&s).map_err(|e| format!("{s}: {e}"))?,
                other => return Err(format!("expected text, got {:?}", other.kind())),
            };
            Ok(())
        },
    },
    col!("worker_id", Str, 1, |r| worker_id),
    col!("timestamp", TimestampMs, 1, |r| timestamp_ms),
];

/// A record that breaks the schema's rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("record of `{example}`: `{field}` {problem}")]
pub struct InvalidRecord {
    /// The record's example id.
    pub example: String,
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl SearchRecord {
    /// Checks what every reader relies on: an id, per-layer decisions of the model's depth
    /// (0 skip, 1 execute, 2 repeat), paths that stay inside the model, margins aligned with the
    /// good paths, finite times. Non-finite margins are allowed (a model can score a choice at
    /// minus infinity) and survive Parquet and the protocol.
    pub fn validate(&self) -> Result<(), InvalidRecord> {
        let bad = |field: &'static str, problem: String| InvalidRecord {
            example: self.example_id.clone(),
            field,
            problem,
        };
        let l = self.num_layers;
        if self.example_id.is_empty() {
            return Err(bad("example_id", "is empty".into()));
        }
        if l == 0 {
            return Err(bad("num_layers", "is 0".into()));
        }
        if self.best_decisions.len() != l as usize {
            return Err(bad(
                "best_decisions",
                format!("has {} entries for {l} layers", self.best_decisions.len()),
            ));
        }
        if let Some(d) = self.best_decisions.iter().find(|&&d| d > 2) {
            return Err(bad(
                "best_decisions",
                format!("holds {d} (0 skip, 1 execute, 2 repeat)"),
            ));
        }
        let outside = |p: &[u16]| p.iter().copied().find(|&x| x >= l);
        if let Some(x) = outside(&self.best_path) {
            return Err(bad(
                "best_path",
                format!("names layer {x} of a {l}-layer model"),
            ));
        }
        if let Some(x) = self.good_paths.iter().find_map(|p| outside(p)) {
            return Err(bad(
                "good_paths",
                format!("names layer {x} of a {l}-layer model"),
            ));
        }
        if self.distinct_layers > l {
            return Err(bad(
                "distinct_layers",
                format!("is {} for {l} layers", self.distinct_layers),
            ));
        }
        let (m, g) = (self.good_margins.len(), self.good_paths.len());
        if m != 0 && m != g {
            return Err(bad(
                "good_margins",
                format!("has {m} entries for {g} good paths"),
            ));
        }
        if !(self.wall_seconds.is_finite() && self.wall_seconds >= 0.0) {
            return Err(bad("wall_seconds", format!("is {}", self.wall_seconds)));
        }
        Ok(())
    }
}
