//! The reward that runs a model on drllm-tasks' prompts and graders ([`reward`]).

pub mod prompt_cache;
pub mod reward;

pub use prompt_cache::PromptCache;
pub use reward::{score_example, score_example_with, Outcome};
