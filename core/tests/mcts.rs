//! MCTS mechanics with synthetic rewards (no model): the known best path is found, every path is
//! valid, visits and rewards add up, early-stop rules fire as specified, seeds make runs repeatable.

use std::convert::Infallible;

use drllm_contract::{Expansion, SearchConfig, StopMode, Strategy, SuccessRule};
use drllm_core::search::{judge, Judged, Mcts, NodeView, SearchOutcome, StopRule};
use drllm_core::tasks::reward::Outcome;
use drllm_engine::LayerPath;

fn run(
    l: usize,
    cfg: SearchConfig,
    reward: impl Fn(&LayerPath) -> bool,
) -> (SearchOutcome, Vec<NodeView>, Vec<LayerPath>) {
    let mut asked = Vec::new();
    let (o, tree) = Mcts::new(l, cfg)
        .run(|p| {
            asked.push(p.clone());
            Ok::<_, Infallible>(reward(p))
        })
        .unwrap();
    (o, tree, asked)
}

fn skips_3_and_7(p: &LayerPath) -> bool {
    let c = p.counts();
    c[3] == 0 && c[7] == 0
}

#[test]
fn finds_the_known_best_path_and_every_path_is_valid() {
    let cfg = SearchConfig {
        num_simulations: 400,
        seed: 7,
        ..Default::default()
    };
    let (o, tree, asked) = run(12, cfg, skips_3_and_7);
    assert!(!o.original_good);
    assert!(o.found, "no path skipping 3 and 7 in 400 simulations");
    assert!(o.simulations < 400);
    assert_eq!(o.stop, StopRule::FixedWrongAnswer);
    assert!(skips_3_and_7(&o.best_path));
    assert!(o.good_paths.iter().all(skips_3_and_7));
    // Each path was evaluated once; every path in the tree is valid for 12 layers.
    let mut distinct = asked
        .iter()
        .map(|p| p.layers().to_vec())
        .collect::<Vec<_>>();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), asked.len(), "a path was evaluated twice");
    assert_eq!(o.distinct_paths, asked.len());
    for n in &tree {
        assert!(LayerPath::new(n.path.layers().to_vec(), 12).is_ok());
        assert!(n.path.len() <= 24);
    }
}

#[test]
fn visits_and_rewards_add_up() {
    // Correct iff layer 5 runs once and at most one position is dropped: the full path is correct
    // and no correct path is 2 shorter, so no early stop fires and the whole budget runs, with a
    // mix of rewards 0 and 1 across the tree.
    let cfg = SearchConfig {
        num_simulations: 120,
        seed: 3,
        ..Default::default()
    };
    let (o, tree, _) = run(10, cfg, |p| p.counts()[5] == 1 && p.len() >= 9);
    assert_eq!(o.stop, StopRule::Budget);
    assert_eq!(tree[0].visits as usize, o.simulations);
    for (i, n) in tree.iter().enumerate() {
        let child_visits: u32 = n.children.iter().map(|&c| tree[c].visits).sum();
        let child_rewards: f64 = n.children.iter().map(|&c| tree[c].reward_sum).sum();
        // A node's own simulations are its visits minus its children's.
        let own = n.visits - child_visits;
        assert!(n.visits >= child_visits, "node {i}");
        let own_reward = n.reward_sum - child_rewards;
        let r = f64::from(u8::from(n.path.counts()[5] == 1 && n.path.len() >= 9));
        assert!(
            (own_reward - own as f64 * r).abs() < 1e-9,
            "node {i}: rewards do not add up"
        );
        for &c in &n.children {
            assert_eq!(tree[c].parent, Some(i));
        }
    }
}

#[test]
fn early_stop_rules() {
    // Correct everywhere: stops at the first correct path 2 positions shorter than L.
    let (o, _, _) = run(
        8,
        SearchConfig {
            seed: 1,
            ..Default::default()
        },
        |_| true,
    );
    assert!(o.original_good);
    assert_eq!(o.stop, StopRule::ShorterCorrectPath);
    assert!(o.best_path.len() <= 6);
    assert!(o.simulations < 50);
    // Wrong everywhere: the whole budget runs, nothing found, the best path is the full one.
    let (o, tree, _) = run(
        8,
        SearchConfig {
            seed: 1,
            ..Default::default()
        },
        |_| false,
    );
    assert_eq!(
        (o.stop, o.found, o.simulations),
        (StopRule::Budget, false, 50)
    );
    assert_eq!(o.best_path, LayerPath::full(8));
    assert_eq!(tree[0].visits, 50);
    // Wrong on the full path, right once any layer is skipped: fixed at the first skip.
    let (o, _, asked) = run(
        8,
        SearchConfig {
            seed: 1,
            ..Default::default()
        },
        |p| p.len() < 8,
    );
    assert_eq!(o.stop, StopRule::FixedWrongAnswer);
    assert_eq!(o.good_paths.len(), 1);
    assert_eq!(&o.good_paths[0], asked.last().unwrap());
}

#[test]
fn best_path_is_shortest_then_fewest_distinct_layers() {
    // Correct iff the path keeps layer 0; the full path is correct so only the shorter-path rule
    // stops it. Among good paths the best has the fewest positions.
    let (o, _, _) = run(
        6,
        SearchConfig {
            num_simulations: 200,
            seed: 11,
            ..Default::default()
        },
        |p| p.counts()[0] >= 1,
    );
    let min_len = o.good_paths.iter().map(|p| p.len()).min().unwrap();
    assert_eq!(o.best_path.len(), min_len);
    let min_distinct = o
        .good_paths
        .iter()
        .filter(|p| p.len() == min_len)
        .map(|p| p.distinct_layers())
        .min()
        .unwrap();
    assert_eq!(o.best_path.distinct_layers(), min_distinct);
}

#[test]
fn seeds_make_searches_repeatable() {
    let reward = |p: &LayerPath| p.counts()[2] == 2 && p.counts()[4] == 0;
    let cfg = SearchConfig {
        num_simulations: 150,
        seed: 42,
        ..Default::default()
    };
    let (a, ta, pa) = run(8, cfg.clone(), reward);
    let (b, tb, pb) = run(8, cfg.clone(), reward);
    assert_eq!(a, b);
    assert_eq!(ta, tb);
    assert_eq!(pa, pb);
    let (_, _, pc) = run(8, SearchConfig { seed: 43, ..cfg }, reward);
    assert_ne!(
        pa, pc,
        "another seed explored the same paths in the same order"
    );
}

#[test]
fn each_example_explores_in_its_own_order() {
    let asked = |id: &str| {
        let mut asked = Vec::new();
        Mcts::for_example(8, SearchConfig::default(), id)
            .run(|p| {
                asked.push(p.clone());
                Ok::<_, Infallible>(false)
            })
            .unwrap();
        asked
    };
    // The same example searches the same way; another example tries its edits in another
    // order (one seed for all examples would make every search propose the same paths).
    assert_eq!(asked("arc/1"), asked("arc/1"));
    let a = asked("arc/1");
    let differ = ["arc/2", "arc/3", "arc/4"]
        .iter()
        .filter(|id| asked(id)[1..4] != a[1..4])
        .count();
    assert_eq!(differ, 3, "examples share their first explored paths");
}

fn run_with(l: usize, cfg: SearchConfig, reward: impl Fn(&LayerPath) -> bool) -> SearchOutcome {
    run(l, cfg, reward).0
}

#[test]
fn budget_stop_spends_every_simulation_and_keeps_every_good_path() {
    let cfg = SearchConfig {
        seed: 1,
        stop: StopMode::Budget,
        ..Default::default()
    };
    // Correct everywhere: the paper's rule stops within a few simulations (early_stop_rules),
    // the budget rule runs all 50 and keeps each distinct path it evaluated as good.
    let (o, tree, asked) = run(8, cfg.clone(), |_| true);
    assert_eq!((o.stop, o.simulations), (StopRule::Budget, 50));
    assert_eq!(tree[0].visits, 50);
    assert_eq!(o.good_paths.len(), asked.len());
    // (The paper's chain of skips dead-ends at the empty path on 8 layers, so not 50 paths.)
    assert!(o.good_paths.len() > 5, "{} good paths", o.good_paths.len());
    // Wrong on the full path, right after any skip: the paper stops at the first fix.
    let fixed = |p: &LayerPath| p.len() < 8;
    let o = run_with(8, cfg, fixed);
    assert_eq!(o.stop, StopRule::Budget);
    assert!(!o.original_good && o.good_paths.len() > 1);
    assert!(o.good_paths.iter().all(fixed));
}

#[test]
fn paper_expansion_grows_a_chain_and_tree_expansion_branches() {
    let base = SearchConfig {
        num_simulations: 200,
        seed: 5,
        stop: StopMode::Budget,
        ..Default::default()
    };
    let reward = |p: &LayerPath| p.counts()[3] >= 1;
    let (_, chain, _) = run(10, base.clone(), reward);
    assert!(
        chain.iter().all(|n| n.children.len() <= 1),
        "the paper's expansion only grows leaves: every node has at most one child"
    );
    let tree_cfg = SearchConfig {
        expansion: Expansion::Tree,
        ..base.clone()
    };
    let (o, tree, asked) = run(10, tree_cfg.clone(), reward);
    assert!(tree[0].children.len() > 3, "the root branches");
    assert!(tree.iter().filter(|n| n.children.len() > 1).count() > 3);
    for (i, n) in tree.iter().enumerate() {
        let cap = (n.visits as f64).powf(tree_cfg.widen_exponent).ceil() as usize;
        assert!(
            n.children.len() <= cap.max(1),
            "node {i}: {} children, {} visits",
            n.children.len(),
            n.visits
        );
        for &c in &n.children {
            assert_eq!(tree[c].parent, Some(i));
            assert!(LayerPath::new(tree[c].path.layers().to_vec(), 10).is_ok());
        }
    }
    // Each path is still evaluated once, and the search is repeatable.
    let mut d: Vec<_> = asked.iter().map(|p| p.layers().to_vec()).collect();
    d.sort();
    d.dedup();
    assert_eq!(d.len(), asked.len());
    assert_eq!(run(10, tree_cfg.clone(), reward).0, o);
    // With exponent 0 a node may only have one child: exactly the paper's chain.
    let zero = SearchConfig {
        expansion: Expansion::Tree,
        widen_exponent: 0.0,
        ..base.clone()
    };
    assert_eq!(run(10, zero, reward).2, run(10, base, reward).2);
}

#[test]
fn verdicts_carry_margins_into_the_outcome() {
    // Margin = 10 − path length: good (by the caller's rule) when the margin is at least 2.
    let (o, _) = Mcts::new(
        8,
        SearchConfig {
            seed: 2,
            stop: StopMode::Budget,
            ..Default::default()
        },
    )
    .run(|p| {
        let m = 10.0 - p.len() as f64;
        Ok::<_, Infallible>(Judged {
            good: m >= 3.0,
            margin: Some(m),
        })
    })
    .unwrap();
    assert_eq!(o.original_margin, Some(2.0));
    assert!(!o.original_good && o.found);
    assert_eq!(o.good_margins.len(), o.good_paths.len());
    for (p, m) in o.good_paths.iter().zip(&o.good_margins) {
        assert_eq!(*m, Some(10.0 - p.len() as f64));
    }
}

#[test]
fn the_agree_rule_keeps_the_full_models_answer() {
    let agree = SearchConfig {
        success: SuccessRule::Agree,
        agree_fraction: 0.5,
        ..Default::default()
    };
    // Choice log-probs; gold is choice 0 (the margins below are gold margins, unused by agree).
    let out = |lp: [f64; 3], correct| {
        let pick = (0..3).max_by(|&a, &b| lp[a].total_cmp(&lp[b]));
        Outcome {
            correct,
            choice_logprobs: lp.to_vec(),
            choice_bytes: vec![4, 4, 8],
            pick,
            pick_norm: pick,
            ..Default::default()
        }
    };
    // The full model picks choice 1 (wrong) by 2.0 over the runner-up.
    let full = out([-3.0, -1.0, -4.0], false);
    // Same wrong pick, margin 1.5 ≥ 0.5 × 2.0: harmless, so good.
    assert!(judge(&agree, &out([-2.5, -1.0, -4.0], false), &full, false));
    // Same pick but margin 0.5 < 1.0: the path makes the model unsure.
    assert!(!judge(
        &agree,
        &out([-1.5, -1.0, -4.0], false),
        &full,
        false
    ));
    // A "fix" to the gold choice changes the answer: it earns nothing.
    assert!(!judge(&agree, &out([-0.5, -1.0, -4.0], true), &full, false));
    // The full path agrees with itself.
    assert!(judge(&agree, &full, &full, false));
    // Generate: the same extracted answer, whatever its correctness.
    let gen = |x: &str| Outcome {
        extracted: Some(x.into()),
        ..Default::default()
    };
    assert!(judge(&agree, &gen("B"), &gen("B"), false));
    assert!(!judge(&agree, &gen("C"), &gen("B"), false));
}

#[test]
fn the_margin_rule_asks_more_than_correctness() {
    let margin = SearchConfig {
        success: SuccessRule::Margin,
        min_margin: 0.5,
        ..Default::default()
    };
    let paper = SearchConfig::default();
    let out = |correct, m| Outcome {
        correct,
        margin: Some(m),
        ..Default::default()
    };
    let j = |cfg: &SearchConfig, correct, m, full| {
        judge(cfg, &out(correct, m), &out(full > 0.0, full), false)
    };
    // The full model is right by 1.2: a path must keep at least that margin.
    assert!(j(&margin, true, 1.2, 1.2));
    assert!(j(&margin, true, 1.5, 1.2));
    assert!(!j(&margin, true, 0.3, 1.2));
    assert!(j(&paper, true, 0.3, 1.2));
    // The full model is wrong: a fix must win by min_margin (a lucky 0.1 does not count).
    assert!(!j(&margin, true, 0.1, -0.4));
    assert!(j(&margin, true, 0.6, -0.4));
    assert!(j(&paper, true, 0.1, -0.4));
    assert!(!j(&margin, false, -0.4, -0.4));
    // Names parse as the job file and the command line write them.
    assert_eq!("agree".parse::<SuccessRule>().unwrap(), SuccessRule::Agree);
    assert_eq!(
        "margin".parse::<SuccessRule>().unwrap(),
        SuccessRule::Margin
    );
    assert_eq!("budget".parse::<StopMode>().unwrap(), StopMode::Budget);
    assert_eq!("tree".parse::<Expansion>().unwrap(), Expansion::Tree);
    assert!("bushy"
        .parse::<Expansion>()
        .unwrap_err()
        .contains("paper, tree"));
}

#[test]
fn probe_judges_every_one_step_edit_once() {
    let cfg = SearchConfig {
        strategy: Strategy::Probe,
        seed: 4,
        ..Default::default()
    };
    // Good iff layer 2 is skipped and nothing else changed.
    let good = |p: &LayerPath| {
        let c = p.counts();
        c[2] == 0 && c.iter().enumerate().all(|(i, &k)| i == 2 || k == 1)
    };
    let (o, tree, asked) = run(8, cfg.clone(), good);
    // 8 single skips, 7 pair skips, 8 repeats, after the full path.
    assert_eq!(asked.len(), 1 + 8 + 7 + 8);
    assert_eq!(o.simulations, 23);
    assert_eq!(asked[0], LayerPath::full(8));
    assert_eq!(tree[0].children.len(), 23);
    assert_eq!(tree[0].visits, 23);
    let mut d: Vec<_> = asked.iter().map(|p| p.layers().to_vec()).collect();
    d.sort();
    d.dedup();
    assert_eq!(d.len(), 24, "an edit was judged twice");
    assert!(asked[1..]
        .iter()
        .all(|p| p.len() == 7 || p.len() == 6 || p.len() == 9));
    assert_eq!(
        o.good_paths,
        vec![LayerPath::new(vec![0, 1, 3, 4, 5, 6, 7], 8).unwrap()]
    );
    assert_eq!((o.stop, o.found), (StopRule::Budget, true));
    assert_eq!(
        run(8, cfg, good).2,
        asked,
        "the same seed probes in the same order"
    );
}

#[test]
fn probe_skips_judges_every_skip_and_no_repeat() {
    let cfg = SearchConfig {
        strategy: Strategy::ProbeSkips,
        seed: 4,
        ..Default::default()
    };
    let (o, tree, asked) = run(8, cfg.clone(), |p: &LayerPath| p.len() == 6);
    // 8 single skips and 7 pair skips after the full path; no repeat.
    assert_eq!(asked.len(), 1 + 8 + 7);
    assert_eq!((o.simulations, tree[0].children.len()), (15, 15));
    assert!(asked[1..].iter().all(|p| p.len() == 7 || p.len() == 6));
    assert_eq!(o.good_paths.len(), 7, "every pair skip is good");
    assert_eq!(
        "probe-skips".parse::<Strategy>().unwrap(),
        Strategy::ProbeSkips
    );
    // `max_skip` bounds the skips: 1 probes the single skips only, 3 adds the triples.
    let probed = |max_skip| {
        let cfg = SearchConfig {
            max_skip,
            ..cfg.clone()
        };
        let (_, _, asked) = run(8, cfg, |_: &LayerPath| false);
        let mut lens: Vec<usize> = asked[1..].iter().map(|p| p.len()).collect();
        lens.sort();
        lens.dedup();
        (asked.len() - 1, lens)
    };
    assert_eq!(probed(1), (8, vec![7]));
    assert_eq!(probed(3), (8 + 7 + 6, vec![5, 6, 7]));
}
