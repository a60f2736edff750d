//! Length-aware MCTS over layer paths, exactly as the paper's search runs it: actions skip one or
//! two consecutive path positions or repeat one position; selection follows UCB with a length
//! penalty (or, with a small probability, a uniformly random child) down to a leaf; a leaf that was
//! visited before is expanded by one untried action; the new node's path is evaluated (each path
//! once per example); rewards propagate to the root; the search stops early once a wrong answer is
//! fixed or a correct path two positions shorter than the model is found.
//!
//! Beyond the paper (issue 14; the paper's behaviour stays the default, named `paper`):
//! - [`StopMode::Budget`] spends every simulation instead of stopping at the first shorter or
//!   fixing path, so a question collects many good paths;
//! - [`Expansion::Tree`] lets a node that still has untried actions grow another child while it
//!   has fewer than `visits^widen_exponent` children (progressive widening), so the tree branches
//!   and UCB with the length penalty chooses between edits, where the paper's rule (expand only
//!   leaves) makes the tree a chain of one random edit per simulation;
//! - [`Strategy::Probe`] replaces the tree search by judging every one-step edit of the full path
//!   ([`Strategy::ProbeSkips`]: every skip edit);
//! - the reward is a [`Judged`] verdict: good or not, with the gold choice's margin when the
//!   reward has one (the success rule that decides "good" lives with the caller, `run.rs`).
//!
//! Deliberate differences from the reference code: children know the model's real depth (the
//! reference builds them for 28 layers), a repeat never makes a layer run three times, and the
//! no-op "repeat zero times" actions are not generated (DESIGN.md states the rules this way).

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use drllm_contract::{Expansion, SearchConfig, StopMode, Strategy};
use drllm_engine::path::LayerPath;

/// A path's verdict: good or not, and (choice-loglik) the gold choice's margin under the path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    /// The path counts as a success (reward 1).
    pub good: bool,
    /// The gold choice's margin under the path; `None` when the reward has none.
    pub margin: Option<f64>,
}

impl From<bool> for Judged {
    fn from(good: bool) -> Self {
        Self { good, margin: None }
    }
}

/// An edit of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Drop `size` (1 to the setting `max_skip`, the paper's 2) consecutive positions starting
    /// at `start`.
    Skip {
        /// First position dropped.
        start: usize,
        /// Positions dropped.
        size: usize,
    },
    /// Run the layer at position `pos` once more, right after itself.
    Repeat {
        /// The position whose layer runs again.
        pos: usize,
    },
}

impl Action {
    fn apply(self, path: &LayerPath) -> LayerPath {
        let mut layers = path.layers().to_vec();
        match self {
            Action::Skip { start, size } => {
                layers.drain(start..start + size);
            }
            Action::Repeat { pos } => layers.insert(pos + 1, layers[pos]),
        }
        LayerPath::new(layers, path.num_layers()).expect("actions keep paths valid")
    }
}

/// Why a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopRule {
    /// A correct path was found for an example the full model got wrong.
    FixedWrongAnswer,
    /// A correct path at least two positions shorter than the model was found.
    ShorterCorrectPath,
    /// The simulation budget ran out.
    Budget,
}

struct Node {
    path: LayerPath,
    parent: Option<usize>,
    children: Vec<usize>,
    untried: Vec<Action>,
    visits: u32,
    reward_sum: f64,
}

/// Read-only view of a tree node, for inspection and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    /// The node's path.
    pub path: LayerPath,
    /// Index of the parent node; `None` for the root (the full path, index 0).
    pub parent: Option<usize>,
    /// Indices of the child nodes, in the order they were added.
    pub children: Vec<usize>,
    /// Simulations that passed through the node.
    pub visits: u32,
    /// Rewards (0 or 1 each) of those simulations, summed.
    pub reward_sum: f64,
}

/// What one search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// Whether the full path is good.
    pub original_good: bool,
    /// Paths with reward 1, in the order they were first evaluated.
    pub good_paths: Vec<LayerPath>,
    /// The good paths' margins, in the same order (`None` where the reward has no margin).
    pub good_margins: Vec<Option<f64>>,
    /// The full path's margin, when the reward has one.
    pub original_margin: Option<f64>,
    /// Shortest good path (ties: fewer distinct layers, then first found); the full path if none.
    pub best_path: LayerPath,
    /// Whether any judged path was good, the full path included.
    pub found: bool,
    /// Simulations run (MCTS), or edits judged (probe).
    pub simulations: usize,
    /// Distinct paths whose reward was computed (the full path included).
    pub distinct_paths: usize,
    /// Why the search ended.
    pub stop: StopRule,
}

/// One search over the paths of a model with `num_layers` layers.
pub struct Mcts {
    cfg: SearchConfig,
    num_layers: usize,
    rng: StdRng,
    nodes: Vec<Node>,
    rewards: HashMap<Vec<u16>, Judged>,
    /// Evaluation order of the paths, for deterministic good-path lists.
    order: Vec<LayerPath>,
}

impl Mcts {
    /// A search whose RNG is seeded with `cfg.seed` itself.
    pub fn new(num_layers: usize, cfg: SearchConfig) -> Self {
        let seed = cfg.seed;
        Self::with_rng_seed(num_layers, cfg, seed)
    }

    /// The search of example `example_id`: its RNG stream is derived from `cfg.seed` and the id.
    pub fn for_example(num_layers: usize, cfg: SearchConfig, example_id: &str) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&cfg.seed.to_le_bytes());
        h.update(example_id.as_bytes());
        let seed = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"));
        Self::with_rng_seed(num_layers, cfg, seed)
    }

    fn with_rng_seed(num_layers: usize, cfg: SearchConfig, seed: u64) -> Self {
        let rng = StdRng::seed_from_u64(seed);
        let mut m = Self {
            cfg,
            num_layers,
            rng,
            nodes: Vec::new(),
            rewards: HashMap::new(),
            order: Vec::new(),
        };
        m.add_node(LayerPath::full(num_layers), None);
        m
    }

    /// The actions a path allows, shuffled by the search's RNG.
    fn actions(&mut self, path: &LayerPath) -> Vec<Action> {
        let n = path.len();
        let counts = path.counts();
        let max_len = self.cfg.max_len_factor * self.num_layers;
        let max_skip = self.cfg.max_skip as usize;
        let mut actions: Vec<Action> = (0..n)
            .flat_map(|start| {
                (1..=max_skip)
                    .filter(move |size| start + size <= n)
                    .map(move |size| Action::Skip { start, size })
            })
            .collect();
        if n < max_len {
            actions.extend(
                (0..n)
                    .filter(|&pos| counts[path.layers()[pos] as usize] < 2)
                    .map(|pos| Action::Repeat { pos }),
            );
        }
        actions.shuffle(&mut self.rng);
        actions
    }

    fn add_node(&mut self, path: LayerPath, parent: Option<usize>) -> usize {
        let untried = self.actions(&path);
        self.nodes.push(Node {
            path,
            parent,
            children: Vec::new(),
            untried,
            visits: 0,
            reward_sum: 0.0,
        });
        let id = self.nodes.len() - 1;
        if let Some(p) = parent {
            self.nodes[p].children.push(id);
        }
        id
    }

    fn ucb(&self, id: usize, total: usize) -> f64 {
        let n = &self.nodes[id];
        if n.visits == 0 {
            return f64::INFINITY;
        }
        let v = n.visits as f64;
        n.reward_sum / v + self.cfg.exploration * ((total as f64).ln() / v).sqrt()
            - self.cfg.length_penalty * (n.path.len() as f64 / self.num_layers as f64)
    }

    /// Whether tree expansion grows node `id` now instead of descending further.
    fn widens(&self, id: usize) -> bool {
        let n = &self.nodes[id];
        self.cfg.expansion == Expansion::Tree
            && n.visits > 0
            && !n.untried.is_empty()
            && (n.children.len() as f64) < (n.visits as f64).powf(self.cfg.widen_exponent).ceil()
    }

    fn select(&mut self, total: usize) -> usize {
        let mut id = 0;
        while !self.nodes[id].children.is_empty() && !self.widens(id) {
            let children = &self.nodes[id].children;
            id = if self.rng.random::<f64>() < self.cfg.random_prob {
                children[self.rng.random_range(0..children.len())]
            } else {
                // The first child with the largest score, as Python's max() picks.
                let mut best = children[0];
                for &c in &children[1..] {
                    if self.ucb(c, total) > self.ucb(best, total) {
                        best = c;
                    }
                }
                best
            };
        }
        id
    }

    fn evaluate<E, J: Into<Judged>>(
        &mut self,
        path: &LayerPath,
        reward: &mut impl FnMut(&LayerPath) -> Result<J, E>,
    ) -> Result<bool, E> {
        if let Some(r) = self.rewards.get(path.layers()) {
            return Ok(r.good);
        }
        let r = reward(path)?.into();
        self.rewards.insert(path.layers().to_vec(), r);
        self.order.push(path.clone());
        Ok(r.good)
    }

    /// The simulations: returns how many ran and why they stopped.
    fn simulate<E, J: Into<Judged>>(
        &mut self,
        original: bool,
        reward: &mut impl FnMut(&LayerPath) -> Result<J, E>,
    ) -> Result<(usize, StopRule), E> {
        let l = self.num_layers;
        let early = self.cfg.stop == StopMode::Paper;
        let mut best_len = l;
        for sim in 0..self.cfg.num_simulations {
            let mut id = self.select(sim + 1);
            if self.nodes[id].visits > 0 {
                if let Some(action) = self.nodes[id].untried.pop() {
                    let path = action.apply(&self.nodes[id].path);
                    id = self.add_node(path, Some(id));
                }
            }
            let path = self.nodes[id].path.clone();
            let r = self.evaluate(&path, reward)?;
            if r && path.len() < best_len {
                best_len = path.len();
            }
            self.backpropagate(id, r);
            if early && r && !original {
                return Ok((sim + 1, StopRule::FixedWrongAnswer));
            }
            if early && r && best_len + 2 <= l {
                return Ok((sim + 1, StopRule::ShorterCorrectPath));
            }
        }
        Ok((self.cfg.num_simulations, StopRule::Budget))
    }

    /// Every one-step edit of the full path (only the skips with `skips_only`), judged once each
    /// (children of the root); returns how many there were.
    fn probe<E, J: Into<Judged>>(
        &mut self,
        skips_only: bool,
        reward: &mut impl FnMut(&LayerPath) -> Result<J, E>,
    ) -> Result<usize, E> {
        let root = self.nodes[0].path.clone();
        // In their (seeded) shuffled order.
        let mut edits = std::mem::take(&mut self.nodes[0].untried);
        if skips_only {
            edits.retain(|a| matches!(a, Action::Skip { .. }));
        }
        for action in edits.iter().rev() {
            let id = self.add_node(action.apply(&root), Some(0));
            let path = self.nodes[id].path.clone();
            let r = self.evaluate(&path, reward)?;
            self.backpropagate(id, r);
        }
        Ok(edits.len())
    }

    fn backpropagate(&mut self, leaf: usize, good: bool) {
        let mut cur = Some(leaf);
        while let Some(c) = cur {
            self.nodes[c].visits += 1;
            self.nodes[c].reward_sum += f64::from(u8::from(good));
            cur = self.nodes[c].parent;
        }
    }

    /// Runs the search; `reward` judges the model along a path (a `bool`: whether it is right,
    /// or a [`Judged`] with the margin). The full path is judged first.
    pub fn run<E, J: Into<Judged>>(
        mut self,
        mut reward: impl FnMut(&LayerPath) -> Result<J, E>,
    ) -> Result<(SearchOutcome, Vec<NodeView>), E> {
        let l = self.num_layers;
        let original = self.evaluate(&LayerPath::full(l), &mut reward)?;
        let (simulations, stop) = match self.cfg.strategy {
            Strategy::Mcts => self.simulate(original, &mut reward)?,
            Strategy::Probe => (self.probe(false, &mut reward)?, StopRule::Budget),
            Strategy::ProbeSkips => (self.probe(true, &mut reward)?, StopRule::Budget),
        };
        let good_paths: Vec<LayerPath> = self
            .order
            .iter()
            .filter(|p| self.rewards[p.layers()].good)
            .cloned()
            .collect();
        let good_margins = good_paths
            .iter()
            .map(|p| self.rewards[p.layers()].margin)
            .collect();
        let original_margin = self.rewards[LayerPath::full(l).layers()].margin;
        let best_path = good_paths
            .iter()
            .min_by_key(|p| (p.len(), p.distinct_layers()))
            .cloned()
            .unwrap_or_else(|| LayerPath::full(l));
        let outcome = SearchOutcome {
            original_good: original,
            found: !good_paths.is_empty(),
            good_paths,
            good_margins,
            original_margin,
            best_path,
            simulations,
            distinct_paths: self.rewards.len(),
            stop,
        };
        let views = self
            .nodes
            .into_iter()
            .map(|n| NodeView {
                path: n.path,
                parent: n.parent,
                children: n.children,
                visits: n.visits,
                reward_sum: n.reward_sum,
            })
            .collect();
        Ok((outcome, views))
    }
}
