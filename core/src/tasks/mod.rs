//! The reward that runs a model on drllm-tasks' prompts and graders ([`reward`]).

pub mod reward;

pub use reward::{score_example, Outcome};
