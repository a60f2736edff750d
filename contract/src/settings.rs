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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum RewardMode {
    /// Chat-templated prompt, greedy generation, the paper's grader.
    Generate,
    /// Highest summed log-probability of the choice continuations (multiple choice only).
    #[value(alias = "choice_loglik")]
    ChoiceLoglik,
}

/// The prompts a model reads. Parsed from and shown as `instruct` or `base`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum PromptStyle {
    /// Instructions on the answer's format; `generate` puts the prompt through the model's chat
    /// template.
    Instruct,
    /// Plain text that ends where the answer begins (MATH: two worked examples, then an open
    /// `\boxed{`).
    Base,
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

/// Search hyper-parameters, defined once: each field's `#[arg]` gives its flag and its default
/// (the paper's), `worker search` flattens this struct, [`Default`] parses an empty command line,
/// the job TOML and the records' `search_config` read it through serde, and the protocol converts
/// it field by field through [`search_config_fields!`]. A new setting is a field here (and in
/// that list) plus its line in proto/drllm.proto.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// MCTS simulations per example, each judging at most one new path; the paper's stop rule
    /// may end the search sooner. Unused by the probe strategies.
    #[arg(long, default_value_t = 50)]
    pub num_simulations: usize,
    /// UCB exploration constant: the weight of `sqrt(ln(n) / visits)` in a child's score, `n`
    /// being the simulation's number (from 1).
    #[arg(long, default_value_t = 1.8)]
    pub exploration: f64,
    /// Subtracted from a child's UCB score times its path length as a fraction of the model's
    /// depth (positions / L), so shorter paths score higher.
    #[arg(long, default_value_t = 3.0)]
    pub length_penalty: f64,
    /// Probability (0–1), at each step down the tree, of picking a child uniformly at random
    /// instead of by UCB score.
    #[arg(long, default_value_t = 0.1)]
    pub random_prob: f64,
    /// Longest path allowed, as a multiple of the model's depth.
    #[arg(long, default_value_t = 2)]
    pub max_len_factor: usize,
    /// Seeds the shuffling of untried actions and the random selections. Each example's search
    /// draws from its own stream, derived from this seed and the example's id: examples explore
    /// in different orders, and an example's search is the same on any worker.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// When a path is good: `correct` (the paper: the answer is right), `margin` (choice-loglik:
    /// the gold choice wins by at least the full model's margin, or by --min-margin when the
    /// full model is wrong) or `agree` (the path keeps the full model's answer, right or wrong,
    /// by --agree-fraction of its margin; needs no gold labels).
    #[arg(long, value_enum, default_value_t = SuccessRule::Correct)]
    pub success: SuccessRule,
    /// Margin rule: the least margin (nats of summed log-probability, or per byte under
    /// `acc_norm`) by which a path must make the gold choice win when the full model is wrong.
    #[arg(long, default_value_t = 1.0)]
    pub min_margin: f64,
    /// Agree rule (κ): the fraction of the full model's own margin (its pick's score minus the
    /// best other choice's) a path must keep for the same pick (choice-loglik).
    #[arg(long, default_value_t = 0.5)]
    pub agree_fraction: f64,
    /// When a search ends: `paper` (at the first fixing or two-shorter good path) or `budget`
    /// (spend every simulation and keep every good path).
    #[arg(long, value_enum, default_value_t = StopMode::Paper)]
    pub stop: StopMode,
    /// How the tree grows: `paper` (only visited leaves get a child) or `tree` (progressive
    /// widening: nodes keep growing children, UCB chooses between edits).
    #[arg(long, value_enum, default_value_t = Expansion::Paper)]
    pub expansion: Expansion,
    /// Tree expansion: a node may have up to `ceil(visits^widen_exponent)` children.
    #[arg(long, default_value_t = 0.5)]
    pub widen_exponent: f64,
    /// `mcts` (the paper's search), `probe` (judge every one-step edit of the full path) or
    /// `probe-skips` (the skips only: what `trainer diagnose` reads).
    #[arg(long, value_enum, default_value_t = Strategy::Mcts)]
    pub strategy: Strategy,
    /// The most consecutive path positions one skip edit drops (the paper: 2). 1 halves
    /// `probe-skips`' cost when single-layer labels are all a diagnosis needs; 3 or more lets
    /// the search reach short paths in fewer edits; 0 leaves the repeats only.
    #[arg(long, default_value_t = 2)]
    pub max_skip: u64,
}

/// Calls the macro `$m` with the name of every [`SearchConfig`] field, so that code outside
/// this crate (the protocol's conversions) handles each field without listing them again. The
/// callers build `SearchConfig { .. }` literals from the list, so a field missing here fails to
/// compile.
#[macro_export]
macro_rules! search_config_fields {
    ($m:ident) => {
        $m! {
            num_simulations,
            exploration,
            length_penalty,
            random_prob,
            max_len_factor,
            seed,
            success,
            min_margin,
            agree_fraction,
            stop,
            expansion,
            widen_exponent,
            strategy,
            max_skip
        }
    };
}

impl Default for SearchConfig {
    /// The flags' defaults: an empty command line, parsed once.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            search: SearchConfig,
        }
        static DEFAULT: std::sync::OnceLock<SearchConfig> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| <Defaults as clap::Parser>::parse_from(["defaults"]).search)
            .clone()
    }
}

/// How paths are chosen for evaluation.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The paper's length-aware MCTS.
    #[default]
    Mcts,
    /// No tree search: every one-step edit of the full path (each skip of up to `max_skip`
    /// consecutive layers, by default one or two, and each repeat: about 3L paths, most sharing
    /// long prefixes) is judged once, which gives per-question, per-layer counterfactual labels. `num_simulations`,
    /// `stop` and `expansion` do not apply.
    Probe,
    /// [`Strategy::Probe`] without the repeats: every skip of up to `max_skip` consecutive
    /// layers (about 2L paths by default). The labels `trainer diagnose` reads, at about half the probe's cost.
    ProbeSkips,
}

/// When a path is good (its reward is 1).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
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
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum StopMode {
    /// The paper's: at the first good path that fixes a wrong answer or is two positions shorter.
    #[default]
    Paper,
    /// Spend every simulation.
    Budget,
}

/// How the tree grows.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Expansion {
    /// The paper's: a visited leaf gets one child; inner nodes never grow.
    #[default]
    Paper,
    /// Progressive widening: a visited node with untried actions grows a child while it has fewer
    /// than `ceil(visits^widen_exponent)` children.
    Tree,
}

/// `FromStr` (the names and aliases clap knows, an error listing them otherwise) and `Display`
/// (the name) for each named choice, so job files, flags, records and messages share one
/// spelling.
macro_rules! named {
    ($($t:ty),+) => {$(
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$t as clap::ValueEnum>::from_str(s, false).map_err(|_| {
                    let names: Vec<String> = <$t as clap::ValueEnum>::value_variants()
                        .iter()
                        .filter_map(|v| clap::ValueEnum::to_possible_value(v))
                        .map(|p| p.get_name().to_string())
                        .collect();
                    format!("unknown value `{s}` (one of: {})", names.join(", "))
                })
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let v = clap::ValueEnum::to_possible_value(self).expect("no variant is skipped");
                f.write_str(v.get_name())
            }
        }
    )+};
}
named!(
    RewardMode,
    PromptStyle,
    SuccessRule,
    StopMode,
    Expansion,
    Strategy
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_papers_and_names_round_trip() {
        let d = SearchConfig::default();
        assert_eq!(
            (d.num_simulations, d.exploration, d.length_penalty),
            (50, 1.8, 3.0)
        );
        assert_eq!(
            (d.random_prob, d.max_len_factor, d.widen_exponent),
            (0.1, 2, 0.5)
        );
        assert_eq!(
            (d.success, d.stop, d.strategy),
            (SuccessRule::Correct, StopMode::Paper, Strategy::Mcts)
        );
        assert_eq!(
            "probe-skips".parse::<Strategy>().unwrap(),
            Strategy::ProbeSkips
        );
        assert_eq!(Strategy::ProbeSkips.to_string(), "probe-skips");
        assert_eq!(
            "choice_loglik".parse::<RewardMode>().unwrap(),
            RewardMode::ChoiceLoglik
        );
        assert_eq!(RewardMode::ChoiceLoglik.to_string(), "choice-loglik");
        let e = "sideways".parse::<Expansion>().unwrap_err();
        assert!(e.contains("one of: paper, tree"), "{e}");
        // serde and the flags agree on the names.
        let json = serde_json::to_string(&Strategy::ProbeSkips).unwrap();
        assert_eq!(json, "\"probe-skips\"");
    }
}
