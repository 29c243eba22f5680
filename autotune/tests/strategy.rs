//! The search strategies against deterministic synthetic cost functions: exhaustive finds the
//! minimum; guided gets within 5% of it while measuring at most a quarter of the space, with a
//! model that ranks imperfectly; the default is always measured; failures never win; budget,
//! roofline and abort stops.

use kiln_autotune::strategy::{neighbours, search, GuidedOptions, Scored, SearchSpace, StopReason, Strategy};
use kiln_kernels::Args;
use std::cell::RefCell;

/// A grid of three knobs, like a GEMM's block sizes and split count.
fn grid(a: &[u32], b: &[u32], c: &[u32]) -> Vec<Args> {
    let mut out = Vec::new();
    for &x in a {
        for &y in b {
            for &z in c {
                out.push(Args::new().with("a", x).with("b", y).with("c", z));
            }
        }
    }
    out
}

fn knob(c: &Args, k: &str) -> f64 {
    c.get(k).unwrap().parse::<f64>().unwrap().log2()
}

/// A deterministic pseudo-random number in [-1, 1] from an index and a seed.
fn hash_noise(i: usize, seed: u64) -> f64 {
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x % 20_001) as f64 / 10_000.0 - 1.0
}

/// Landscapes: (name, true time of a config).
/// A named true-time function over configs.
type Landscape = (&'static str, Box<dyn Fn(&Args) -> f64>);

fn landscapes() -> Vec<Landscape> {
    vec![
        (
            "separable bowl",
            Box::new(|c| {
                1.0 + 0.3 * (knob(c, "a") - 2.3).powi(2)
                    + 0.2 * (knob(c, "b") - 5.6).powi(2)
                    + 0.1 * (knob(c, "c") - 1.0).powi(2)
            }),
        ),
        (
            "ridge: a·b wants 512",
            Box::new(|c| {
                1.0 + 0.4 * (knob(c, "a") + knob(c, "b") - 9.0).powi(2)
                    + 0.05 * knob(c, "a")
                    + 0.2 * (knob(c, "c") - 2.0).powi(2)
            }),
        ),
        (
            "corner optimum",
            Box::new(|c| {
                1.0 + 0.5 * (4.0 - knob(c, "a")) + 0.3 * knob(c, "b") / 7.0 + 0.4 * (3.0 - knob(c, "c")).abs()
            }),
        ),
        (
            "bumpy",
            Box::new(|c| {
                let (a, b, z) = (knob(c, "a"), knob(c, "b"), knob(c, "c"));
                1.0 + 0.25 * (a - 1.0).powi(2) + 0.25 * (b - 5.0).powi(2) + 0.15 * z + 0.08 * (3.0 * a + 2.0 * b).sin()
            }),
        ),
    ]
}

struct Run {
    outcome: kiln_autotune::strategy::SearchOutcome,
    evaluated: Vec<usize>,
}

fn run(
    strategy: &Strategy,
    configs: &[Args],
    predicted: &[f64],
    default: usize,
    truth: &dyn Fn(usize) -> Option<f64>,
    out_of_time: &dyn Fn() -> bool,
) -> Run {
    let evaluated = RefCell::new(Vec::new());
    let mut evaluate = |batch: &[usize]| -> Result<Vec<Option<Scored>>, ()> {
        evaluated.borrow_mut().extend_from_slice(batch);
        Ok(batch.iter().map(|&i| truth(i).map(|t| Scored { seconds: t, roofline_frac: 0.5 / t })).collect())
    };
    let space = SearchSpace { configs, predicted, default };
    let outcome = search(strategy, &space, &mut evaluate, out_of_time);
    Run { outcome, evaluated: evaluated.into_inner() }
}

fn never() -> bool {
    false
}

#[test]
fn exhaustive_measures_everything_once_and_finds_the_minimum() {
    let configs = grid(&[1, 2, 4, 8, 16], &[16, 32, 64, 128], &[1, 2, 4, 8]);
    for (name, f) in landscapes() {
        let truth = |i: usize| Some(f(&configs[i]));
        let predicted: Vec<f64> = (0..configs.len()).map(|i| hash_noise(i, 1)).collect();
        let r = run(&Strategy::Exhaustive, &configs, &predicted, 7, &truth, &never);
        let mut seen = r.evaluated.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), configs.len(), "{name}: every candidate once");
        assert_eq!(r.evaluated.len(), configs.len(), "{name}: no candidate twice");
        assert_eq!(r.evaluated[0], 7, "{name}: the default first");
        let best = (0..configs.len()).min_by(|&a, &b| truth(a).unwrap().total_cmp(&truth(b).unwrap())).unwrap();
        assert_eq!(r.outcome.best, Some(best), "{name}");
    }
}

#[test]
fn guided_gets_within_5_percent_measuring_at_most_a_quarter() {
    let configs = grid(&[1, 2, 4, 8, 16, 32], &[16, 32, 64, 128], &[1, 2, 4, 8, 16]);
    let n = configs.len();
    for (name, f) in landscapes() {
        for (seed, model_error) in [(1, 0.0), (2, 0.15), (3, 0.3)] {
            // The model knows the landscape up to a multiplicative error of ±model_error.
            let predicted: Vec<f64> =
                (0..n).map(|i| f(&configs[i]) * (1.0 + model_error * hash_noise(i, seed))).collect();
            let truth = |i: usize| Some(f(&configs[i]));
            for default in [0, n / 2, n - 1] {
                let r = run(&Strategy::guided(), &configs, &predicted, default, &truth, &never);
                let exhaustive = (0..n).map(|i| truth(i).unwrap()).fold(f64::INFINITY, f64::min);
                let found = truth(r.outcome.best.unwrap()).unwrap();
                assert!(
                    found <= 1.05 * exhaustive,
                    "{name}, model error {model_error}, default {default}: found {found}, best {exhaustive}"
                );
                assert!(r.evaluated.len() * 4 <= n, "{name}: measured {} of {n}", r.evaluated.len());
                assert_eq!(r.evaluated[0], default, "{name}: the default is measured first");
            }
        }
    }
}

#[test]
fn failures_never_win_and_do_not_stop_the_search() {
    let configs = grid(&[1, 2, 4, 8, 16], &[16, 32, 64, 128], &[1, 2, 4, 8]);
    let f = |c: &Args| 1.0 + (knob(c, "a") - 3.0).powi(2) + (knob(c, "b") - 6.0).powi(2) + knob(c, "c");
    // The model's favourite and the default fail (wrong result, compile error...).
    let predicted: Vec<f64> = configs.iter().map(f).collect();
    let favourite = (0..configs.len()).min_by(|&a, &b| predicted[a].total_cmp(&predicted[b])).unwrap();
    let default = 0;
    let truth = |i: usize| if i == favourite || i == default { None } else { Some(f(&configs[i])) };
    for strategy in [Strategy::Exhaustive, Strategy::guided()] {
        let r = run(&strategy, &configs, &predicted, default, &truth, &never);
        let best = r.outcome.best.expect("a correct candidate wins");
        assert!(best != favourite && best != default, "{strategy:?}");
        assert!(r.evaluated.contains(&favourite) && r.evaluated.contains(&default));
        let best_ok = (0..configs.len()).filter_map(truth).fold(f64::INFINITY, f64::min);
        assert!(truth(best).unwrap() <= 1.05 * best_ok, "{strategy:?}");
    }
    // Every candidate failing: no winner, and no panic.
    let r = run(&Strategy::guided(), &configs, &predicted, 3, &|_| None, &never);
    assert_eq!(r.outcome.best, None);
    assert!(r.evaluated.len() * 4 <= configs.len());
}

#[test]
fn a_spent_budget_still_measures_the_default_and_nothing_else() {
    let configs = grid(&[1, 2, 4, 8], &[16, 32, 64], &[1, 2, 4]);
    let predicted: Vec<f64> = (0..configs.len()).map(|i| i as f64).collect();
    for strategy in [Strategy::Exhaustive, Strategy::guided()] {
        let r = run(&strategy, &configs, &predicted, 5, &|i| Some(1.0 + i as f64), &|| true);
        assert_eq!(r.evaluated, vec![5], "{strategy:?}");
        assert_eq!(r.outcome.best, Some(5));
        assert_eq!(r.outcome.stop, StopReason::Budget);
    }
}

#[test]
fn guided_stops_at_the_roofline_target() {
    let configs = grid(&[1, 2, 4, 8], &[16, 32, 64], &[1, 2, 4]);
    let predicted: Vec<f64> = (0..configs.len()).map(|i| i as f64).collect();
    // Candidate 1 (the model's best after the default) is the fastest, at 95% of the roofline.
    let evaluated = RefCell::new(Vec::new());
    let mut evaluate = |batch: &[usize]| -> Result<Vec<Option<Scored>>, ()> {
        evaluated.borrow_mut().extend_from_slice(batch);
        Ok(batch
            .iter()
            .map(|&i| {
                Some(if i == 1 {
                    Scored { seconds: 0.5, roofline_frac: 0.95 }
                } else {
                    Scored { seconds: 1.0 + i as f64, roofline_frac: 0.2 }
                })
            })
            .collect())
    };
    let space = SearchSpace { configs: &configs, predicted: &predicted, default: 0 };
    let options = GuidedOptions { stop_at_roofline: 0.9, ..GuidedOptions::default() };
    let outcome = search(&Strategy::Guided(options), &space, &mut evaluate, &never);
    assert_eq!(outcome.stop, StopReason::NearRoofline);
    assert!(evaluated.borrow().len() <= GuidedOptions::default().initial + 1);
}

#[test]
fn an_abort_stops_the_search() {
    let configs = grid(&[1, 2, 4, 8], &[16, 32, 64], &[1, 2, 4]);
    let predicted = vec![1.0; configs.len()];
    let mut calls = 0;
    let mut evaluate = |_: &[usize]| -> Result<Vec<Option<Scored>>, ()> {
        calls += 1;
        Err(())
    };
    let space = SearchSpace { configs: &configs, predicted: &predicted, default: 0 };
    let outcome = search(&Strategy::guided(), &space, &mut evaluate, &never);
    assert_eq!(outcome.stop, StopReason::Aborted);
    assert_eq!(calls, 1);
}

#[test]
fn small_spaces_are_searched_exhaustively() {
    let configs = grid(&[1, 2], &[16, 32], &[1]);
    let predicted = vec![1.0; configs.len()];
    let r = run(&Strategy::guided(), &configs, &predicted, 0, &|i| Some(4.0 - i as f64), &never);
    assert_eq!(r.evaluated.len(), 4);
    assert_eq!(r.outcome.best, Some(3));
}

#[test]
fn ties_go_to_the_earlier_candidate() {
    let configs = grid(&[1, 2, 4, 8], &[16, 32], &[1]);
    let predicted = vec![1.0; configs.len()];
    let r = run(&Strategy::Exhaustive, &configs, &predicted, 5, &|_| Some(2.0), &never);
    assert_eq!(r.outcome.best, Some(0));
}

#[test]
fn neighbours_step_to_the_adjacent_legal_value_of_one_knob() {
    // b = 32 is missing for a = 2: the neighbour of (2, 16) upwards in b is (2, 64).
    let configs: Vec<Args> = [(1, 16), (1, 32), (1, 64), (2, 16), (2, 64), (4, 32)]
        .iter()
        .map(|&(a, b)| Args::new().with("a", a).with("b", b))
        .collect();
    let knobs = vec![
        ("a".to_string(), vec!["1".to_string(), "2".to_string(), "4".to_string()]),
        ("b".to_string(), vec!["16".to_string(), "32".to_string(), "64".to_string()]),
    ];
    let mut n = neighbours(&configs, &knobs, 3, 1);
    n.sort();
    assert_eq!(n, vec![0, 4], "(1,16) below in a, (2,64) above in b");
    let mut n = neighbours(&configs, &knobs, 3, 2);
    n.sort();
    // Per direction of movement the closest: (1,32) rather than (1,64) for a down and b up.
    assert_eq!(n, vec![1, 5], "(1,32) and (4,32) move both knobs");
}
