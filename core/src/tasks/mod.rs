//! Tasks: datasets, prompts and graders — what the search, the trainer and the evaluator agree an
//! example is, what the model sees, and whether its answer is right.

pub mod dataset;
pub mod letter;
pub mod math;
pub(crate) mod math_eval;
pub(crate) mod math_expr;
pub(crate) mod math_latex;
pub mod prompts;
pub mod reward;

pub use dataset::{load_dataset, AnswerKind, DataError, DatasetSpec, Example, LoadReport};
pub use reward::{evaluate, Outcome, RewardMode};
