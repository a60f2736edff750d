//! The search: length-aware Monte Carlo Tree Search over layer paths (DESIGN.md "The search").
//! [`mcts`] holds the tree mechanics, generic over the reward so they can be tested without a model.

pub mod mcts;

pub use mcts::{Action, Mcts, NodeView, SearchConfig, SearchOutcome, StopRule};
