//! drllm-core: what runs on top of the engine ([`drllm_engine`]) — the rewards that judge a
//! model on a task example under a layer path ([`tasks::reward`]), the length-aware MCTS over
//! layer paths ([`search`]), and the per-layer routers' network, checkpoints and routed
//! inference ([`router`]). Training-only pieces (the backward step, the loss) live in the
//! trainer.

#![warn(missing_docs)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod router;
pub mod search;
pub mod tasks;

pub use error::{Error, Result};
