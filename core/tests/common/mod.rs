//! Tiny random models for the tests: see `drllm_core::testing`.
#![allow(unused_imports)]

pub use drllm_core::testing::*;
