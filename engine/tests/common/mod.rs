//! Tiny random models for the tests: see `drllm_engine::testing`.
#![allow(unused_imports)]

pub use drllm_engine::testing::*;
