//! Tasks: the datasets, prompts and graders of drllm-tasks (re-exported here), and the reward that
//! runs a model on them ([`reward`]).

pub use drllm_tasks::*;
pub mod reward;

pub use reward::{evaluate, Outcome, RewardMode};
