//! The search: length-aware Monte Carlo Tree Search over layer paths (DESIGN.md "The search").
//! [`mcts`] holds the tree mechanics, generic over the reward so they can be tested without a model.

pub mod judge;
pub mod mcts;
pub mod run;

pub use judge::{Counters, PathJudge};
pub use mcts::{Action, Judged, Mcts, NodeView, SearchOutcome, StopRule};
pub use run::{agrees, judge, search_example, ExampleSearch, DEFAULT_REUSE_BUDGET};
