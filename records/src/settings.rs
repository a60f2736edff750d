//! The settings a search ran with, as one typed struct ([`RunSettings`]) that the job spec, the
//! gRPC protocol, the workers and every record carry: how answers were judged
//! ([`RewardSettings`]: reward mode, prompt style, early stop, length normalisation) and the
//! search hyper-parameters ([`SearchConfig`]) with their named choices. Defaults are the paper's.
//! The trainer and the evaluator tokenize and judge as the recorded settings say.

/// Name of the default model (fetched by scripts/fetch-model.sh), the model a job runs unless it
/// names another.
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// How the model's answer under a path is judged. Parsed from and shown as `generate` or
/// `choice-loglik`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardMode {
    /// Chat-templated prompt, greedy generation, the paper's grader.
    Generate,
    /// Highest summed log-probability of the choice continuations (multiple choice only).
    ChoiceLoglik,
}

impl std::str::FromStr for RewardMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "generate" => Ok(RewardMode::Generate),
            "choice-loglik" | "choice_loglik" => Ok(RewardMode::ChoiceLoglik),
            other => Err(format!(
                "unknown reward mode `{other}` (generate, choice-loglik)"
            )),
        }
    }
}

impl std::fmt::Display for RewardMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RewardMode::Generate => "generate",
            RewardMode::ChoiceLoglik => "choice-loglik",
        })
    }
}

/// The prompts a model reads. Parsed from and shown as `instruct` or `base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptStyle {
    /// Instructions on the answer's format; `generate` puts the prompt through the model's chat
    /// template.
    Instruct,
    /// Plain text that ends where the answer begins (MATH: two worked examples, then an open
    /// `\boxed{`).
    Base,
}

impl std::fmt::Display for PromptStyle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PromptStyle::Instruct => "instruct",
            PromptStyle::Base => "base",
        })
    }
}

/// How answers are judged: everything that changes the tokens a path reads or its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSettings {
    /// Greedy generation with the paper's grader, or the choices' log-likelihoods.
    pub mode: RewardMode,
    /// The prompt style; `None`: the model's default (instruct when it has a chat template).
    /// Records of schema versions 1 and 2 did not record it and read as `None`: their searches
    /// used the model's default unless `worker search --style` said otherwise.
    #[serde(default)]
    pub style: Option<PromptStyle>,
    /// generate: stop once the grader's verdict can no longer change (never changes a verdict).
    #[serde(default = "yes")]
    pub early_stop: bool,
    /// choice-loglik: judge by `acc_norm` (log-probability per byte) instead of `acc`.
    #[serde(default)]
    pub length_normalized: bool,
}

fn yes() -> bool {
    true
}

impl RewardSettings {
    /// `mode` with the model's default style, early stop on, `acc`.
    pub fn new(mode: RewardMode) -> Self {
        Self {
            mode,
            style: None,
            early_stop: true,
            length_normalized: false,
        }
    }
}

impl Default for RewardSettings {
    fn default() -> Self {
        Self::new(RewardMode::ChoiceLoglik)
    }
}

/// Everything a search ran with: one struct sent to every worker and recorded with every result.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// How answers were judged.
    #[serde(default)]
    pub reward: RewardSettings,
    /// The search's hyper-parameters.
    #[serde(default)]
    pub search: SearchConfig,
}

/// Search hyper-parameters (defaults are the paper's).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// MCTS simulations per example, each judging at most one new path; the paper's stop rule
    /// may end the search sooner. Unused by [`Strategy::Probe`].
    pub num_simulations: usize,
    /// UCB exploration constant: the weight of `sqrt(ln(n) / visits)` in a child's score, `n`
    /// being the simulation's number (from 1).
    pub exploration: f64,
    /// Subtracted from a child's UCB score times its path length as a fraction of the model's
    /// depth (positions / L), so shorter paths score higher.
    pub length_penalty: f64,
    /// Probability (0–1), at each step down the tree, of picking a child uniformly at random
    /// instead of by UCB score.
    pub random_prob: f64,
    /// Longest path allowed, as a multiple of the model's depth.
    pub max_len_factor: usize,
    /// Seeds the shuffling of untried actions and the random selections. Each example's search
    /// draws from its own stream, derived from this seed and the example's id (drllm-core's
    /// `Mcts::for_example`): examples explore in different orders (as the paper's sequential run
    /// over one seeded RNG does), and an example's search is the same on any worker.
    pub seed: u64,
    /// When a path counts as good (the paper: the answer is correct).
    pub success: SuccessRule,
    /// Margin rule: the least margin (nats of summed log-probability, or per byte under
    /// `acc_norm`) by which a path must make the gold choice win when the full model is wrong.
    pub min_margin: f64,
    /// Agree rule (κ): the fraction of the full model's own margin (its pick's score minus the
    /// best other choice's) a path must keep for the same pick (choice-loglik).
    pub agree_fraction: f64,
    /// When the search ends (the paper: at the first fixing or two-shorter good path).
    pub stop: StopMode,
    /// How the tree grows (the paper: only leaves are expanded).
    pub expansion: Expansion,
    /// Tree expansion: a node may have up to `ceil(visits^widen_exponent)` children.
    pub widen_exponent: f64,
    /// MCTS (the paper), or probing every one-step edit of the full path.
    pub strategy: Strategy,
}

/// How paths are chosen for evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The paper's length-aware MCTS.
    #[default]
    Mcts,
    /// No tree search: every one-step edit of the full path (each skip of one or two
    /// consecutive layers, each repeat: about 3L paths, most sharing long prefixes) is judged
    /// once, which gives per-question, per-layer counterfactual labels. `num_simulations`,
    /// `stop` and `expansion` do not apply.
    Probe,
    /// [`Strategy::Probe`] without the repeats: every skip of one or two consecutive layers
    /// (about 2L paths). The labels `trainer diagnose` reads, at about half the probe's cost.
    ProbeSkips,
}

/// When a path is good (its reward is 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SuccessRule {
    /// The paper's rule: the answer under the path is correct. Under choice-loglik a 4-way pick
    /// is right a quarter of the time by chance, so short broken paths count as good.
    #[default]
    Correct,
    /// choice-loglik only: the gold choice wins by a margin — at least the full model's own margin
    /// when the full model is right (a path may not make the model less sure), at least
    /// `min_margin` when it is wrong.
    Margin,
    /// A path is good when it keeps the full model's answer, right or wrong: choice-loglik, the
    /// same pick by at least `agree_fraction` × the full model's own margin; generate, the same
    /// extracted answer. Needs no gold labels, and fixes of wrong answers earn nothing: routers
    /// learn where skipping is harmless, which chance cannot fake.
    Agree,
}

/// When a search ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopMode {
    /// The paper's: at the first good path that fixes a wrong answer or is two positions shorter.
    #[default]
    Paper,
    /// Spend every simulation.
    Budget,
}

/// How the tree grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expansion {
    /// The paper's: a visited leaf gets one child; inner nodes never grow.
    #[default]
    Paper,
    /// Progressive widening: a visited node with untried actions grows a child while it has fewer
    /// than `ceil(visits^widen_exponent)` children.
    Tree,
}

macro_rules! parse_names {
    ($t:ty, $($name:literal => $v:expr),+) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($v),)+
                    other => Err(format!(
                        "unknown value `{other}` (one of: {})",
                        [$($name),+].join(", ")
                    )),
                }
            }
        }
    };
}
parse_names!(SuccessRule, "correct" => SuccessRule::Correct, "margin" => SuccessRule::Margin, "agree" => SuccessRule::Agree);
parse_names!(StopMode, "paper" => StopMode::Paper, "budget" => StopMode::Budget);
parse_names!(Expansion, "paper" => Expansion::Paper, "tree" => Expansion::Tree);
parse_names!(Strategy, "mcts" => Strategy::Mcts, "probe" => Strategy::Probe, "probe-skips" => Strategy::ProbeSkips);
parse_names!(PromptStyle, "instruct" => PromptStyle::Instruct, "base" => PromptStyle::Base);

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            num_simulations: 50,
            exploration: 1.8,
            length_penalty: 3.0,
            random_prob: 0.1,
            max_len_factor: 2,
            seed: 0,
            success: SuccessRule::Correct,
            min_margin: 1.0,
            agree_fraction: 0.5,
            stop: StopMode::Paper,
            expansion: Expansion::Paper,
            widen_exponent: 0.5,
            strategy: Strategy::Mcts,
        }
    }
}
