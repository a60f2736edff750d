//! drllm-tasks: what the search, the trainer and the evaluator agree an example is (datasets),
//! what the model sees (prompts), and whether its answer is right (the letter and MATH graders).
//! No model code: the reward that runs a model on a prompt lives in drllm-core.

#![warn(missing_docs)]

pub mod dataset;
pub mod letter;
pub mod math;
pub mod prompts;
mod py;

pub use dataset::{load_dataset, DataError, DatasetSpec, LoadReport};
