//! Search strategies over a legal config space: which candidates to measure, in which order,
//! and when to stop.
//!
//! - [`Strategy::Exhaustive`] measures every legal candidate (in model order, so that a budget cut
//!   keeps the promising ones).
//! - [`Strategy::Guided`] measures the default config and the best few by the cost model, then
//!   climbs from the fastest measured candidate through its neighbours (one knob moved to the
//!   adjacent legal value; then two knobs at once when no single move helps), and stops when no
//!   neighbour is faster, when the leader is within [`GuidedOptions::stop_at_roofline`] of the
//!   roofline, when [`GuidedOptions::max_fraction`] of the space has been measured, or when the
//!   time budget is spent. Spaces of at most [`GuidedOptions::small_space`] candidates are
//!   searched exhaustively.
//!
//! The logic works on indices into the space and a callback that measures a batch, so it is tested
//! against deterministic synthetic cost functions (`autotune/tests/strategy.rs`).

use kiln_kernels::Args;
use std::collections::BTreeSet;

/// Candidates measured between two looks at the clock.
const CHUNK: usize = 4;

/// How to search.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    Exhaustive,
    Guided(GuidedOptions),
}

impl Strategy {
    pub fn guided() -> Strategy {
        Strategy::Guided(GuidedOptions::default())
    }

    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Exhaustive => "exhaustive",
            Strategy::Guided(_) => "guided",
        }
    }
}

impl Strategy {
    /// The most candidates a search of a space of `n` measures (for progress bars).
    pub fn planned(&self, n: usize) -> usize {
        match self {
            Strategy::Guided(o) if n > o.small_space => ((o.max_fraction * n as f64).floor() as usize).clamp(1, n),
            Strategy::Exhaustive | Strategy::Guided(_) => n,
        }
    }
}

/// Settings of the guided search.
#[derive(Clone, Debug, PartialEq)]
pub struct GuidedOptions {
    /// Candidates measured first, best by the model (the default config comes on top).
    pub initial: usize,
    /// Most of the space measured, as a fraction of the legal candidates.
    pub max_fraction: f64,
    /// Stop once the leader's roofline fraction reaches this.
    pub stop_at_roofline: f64,
    /// Spaces this small are measured exhaustively.
    pub small_space: usize,
}

impl Default for GuidedOptions {
    fn default() -> GuidedOptions {
        GuidedOptions { initial: 3, max_fraction: 0.25, stop_at_roofline: 0.9, small_space: 6 }
    }
}

/// The space as the strategy sees it.
pub struct SearchSpace<'a> {
    /// The legal candidates.
    pub configs: &'a [Args],
    /// The model's predicted time of each candidate (any unit; only the order matters).
    pub predicted: &'a [f64],
    /// Index of the kernel's default config.
    pub default: usize,
}

/// A measured candidate's figures, as the strategy needs them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    pub seconds: f64,
    pub roofline_frac: f64,
}

/// What a search did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchOutcome {
    /// Indices in the order they were measured.
    pub measured: Vec<usize>,
    /// The fastest candidate that measured without failure (ties: the earlier index).
    pub best: Option<usize>,
    /// Why the search stopped.
    pub stop: StopReason,
}

/// Why a search stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StopReason {
    /// Every candidate it meant to measure was measured.
    #[default]
    Converged,
    /// The leader reached the roofline target.
    NearRoofline,
    /// The cap on measured candidates was reached.
    MeasureCap,
    /// The time budget was spent.
    Budget,
    /// The measuring callback asked to stop (the device became unusable).
    Aborted,
}

/// The measuring callback: measures a batch of candidates (by index), returning for each its
/// figures or `None` when it failed; returns `Err(())` to abort the search.
pub type Evaluate<'a> = dyn FnMut(&[usize]) -> Result<Vec<Option<Scored>>, ()> + 'a;

/// Runs `strategy` over `space`; `out_of_time` says whether the budget is spent.
pub fn search(
    strategy: &Strategy,
    space: &SearchSpace<'_>,
    evaluate: &mut Evaluate<'_>,
    out_of_time: &dyn Fn() -> bool,
) -> SearchOutcome {
    let n = space.configs.len();
    let mut state = State { scores: vec![None; n], outcome: SearchOutcome::default() };
    if n == 0 {
        return state.outcome;
    }
    // Model order, ties by index, the default first.
    let mut ranked: Vec<usize> = (0..n).collect();
    ranked.sort_by(|&a, &b| space.predicted[a].total_cmp(&space.predicted[b]).then(a.cmp(&b)));
    ranked.retain(|&i| i != space.default);
    ranked.insert(0, space.default);

    let options = match strategy {
        Strategy::Guided(o) if n > o.small_space => o.clone(),
        Strategy::Exhaustive | Strategy::Guided(_) => {
            // Batches of a few, so a spent budget stops between them.
            let stop_at = match strategy {
                Strategy::Guided(o) => o.stop_at_roofline,
                Strategy::Exhaustive => f64::INFINITY,
            };
            for chunk in ranked.chunks(CHUNK) {
                if let Some(stop) = state.run(chunk, evaluate, out_of_time, usize::MAX, stop_at) {
                    state.outcome.stop = stop;
                    break;
                }
            }
            return state.outcome;
        }
    };
    let cap = ((options.max_fraction * n as f64).floor() as usize).max(1);
    let knobs = knob_values(space.configs);
    let first = seeds(space, &ranked, &knobs, options.initial.max(1).max(cap / 3) + 1);
    if let Some(stop) = state.run(&first, evaluate, out_of_time, cap, options.stop_at_roofline) {
        state.outcome.stop = stop;
        return state.outcome;
    }
    // Best-first local search: climb from the fastest measured candidate whose neighbourhood is
    // not yet measured (one knob moved, then two); when every measured candidate's neighbourhood
    // is done, take the model's next candidate.
    loop {
        let mut order: Vec<(usize, f64)> =
            state.outcome.measured.iter().filter_map(|&i| state.scores[i].flatten().map(|s| (i, s.seconds))).collect();
        order.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let mut next = Vec::new();
        'find: for ring in [1, 2] {
            for &(at, _) in &order {
                next = neighbours(space.configs, &knobs, at, ring).into_iter().filter(|&i| !state.tried(i)).collect();
                if !next.is_empty() {
                    break 'find;
                }
            }
        }
        if next.is_empty() {
            next = ranked.iter().copied().filter(|&i| !state.tried(i)).take(2).collect();
        }
        if next.is_empty() {
            state.outcome.stop = StopReason::Converged;
            return state.outcome;
        }
        next.sort_by(|&a, &b| space.predicted[a].total_cmp(&space.predicted[b]).then(a.cmp(&b)));
        if let Some(stop) = state.run(&next, evaluate, out_of_time, cap, options.stop_at_roofline) {
            state.outcome.stop = stop;
            return state.outcome;
        }
    }
}

/// The first candidates to measure, `count` of them: the default, the model's best, then the
/// model's best for each value of each knob (knobs with fewer values first), so that a model
/// that misjudges a whole region (the GEMV path against the dot path, say) still has it measured;
/// then the model's order.
fn seeds(space: &SearchSpace<'_>, ranked: &[usize], knobs: &[(String, Vec<String>)], count: usize) -> Vec<usize> {
    let mut out = vec![space.default];
    let push = |i: usize, out: &mut Vec<usize>| {
        if out.len() < count && !out.contains(&i) {
            out.push(i);
        }
    };
    if let Some(&best) = ranked.iter().find(|&&i| i != space.default) {
        push(best, &mut out);
    }
    let mut by_size: Vec<&(String, Vec<String>)> = knobs.iter().filter(|(_, v)| v.len() > 1).collect();
    by_size.sort_by_key(|(name, values)| (values.len(), name.clone()));
    for (name, values) in by_size {
        for value in values {
            if out.iter().any(|&i| space.configs[i].get(name) == Some(value.as_str())) {
                continue;
            }
            if let Some(&i) = ranked.iter().find(|&&i| space.configs[i].get(name) == Some(value.as_str())) {
                push(i, &mut out);
            }
        }
    }
    for &i in ranked {
        push(i, &mut out);
    }
    out
}

struct State {
    scores: Vec<Option<Option<Scored>>>,
    outcome: SearchOutcome,
}

impl State {
    fn tried(&self, i: usize) -> bool {
        self.scores[i].is_some()
    }

    /// Measures `batch` (skipping tried candidates, up to `cap` in all); `Some(reason)` to stop.
    fn run(
        &mut self,
        batch: &[usize],
        evaluate: &mut Evaluate<'_>,
        out_of_time: &dyn Fn() -> bool,
        cap: usize,
        stop_at: f64,
    ) -> Option<StopReason> {
        // The first batch holds the default config, which is always measured.
        if out_of_time() && !self.outcome.measured.is_empty() {
            return Some(StopReason::Budget);
        }
        // Out of time before anything was measured: only the first (the default config) runs.
        let room = if out_of_time() { 1 } else { cap.saturating_sub(self.outcome.measured.len()) };
        let todo: Vec<usize> = batch.iter().copied().filter(|&i| !self.tried(i)).take(room).collect();
        if todo.is_empty() {
            return (room == 0).then_some(StopReason::MeasureCap);
        }
        // Chunks of a few (compiled in parallel), so a spent budget stops within a batch.
        for (n, chunk) in todo.chunks(CHUNK).enumerate() {
            if n > 0 && out_of_time() {
                return Some(StopReason::Budget);
            }
            if let Some(stop) = self.record(chunk, evaluate, cap, stop_at) {
                return Some(stop);
            }
        }
        None
    }

    /// Measures `chunk` and records the results; `Some(reason)` to stop.
    fn record(&mut self, todo: &[usize], evaluate: &mut Evaluate<'_>, cap: usize, stop_at: f64) -> Option<StopReason> {
        let Ok(results) = evaluate(todo) else { return Some(StopReason::Aborted) };
        for (&i, r) in todo.iter().zip(results.into_iter().chain(std::iter::repeat(None))) {
            self.scores[i] = Some(r);
            self.outcome.measured.push(i);
            if let Some(s) = r {
                let better = match self.outcome.best.and_then(|b| self.scores[b].flatten()) {
                    None => true,
                    Some(best) => {
                        s.seconds < best.seconds || (s.seconds == best.seconds && i < self.outcome.best.unwrap_or(i))
                    }
                };
                if better {
                    self.outcome.best = Some(i);
                }
            }
        }
        if let Some(best) = self.outcome.best.and_then(|b| self.scores[b].flatten()) {
            if best.roofline_frac >= stop_at {
                return Some(StopReason::NearRoofline);
            }
        }
        if self.outcome.measured.len() >= cap {
            return Some(StopReason::MeasureCap);
        }
        None
    }
}

/// Each knob's distinct values over the space, sorted (numerically where they parse).
fn knob_values(configs: &[Args]) -> Vec<(String, Vec<String>)> {
    let mut names = BTreeSet::new();
    for c in configs {
        for (k, _) in c.iter() {
            names.insert(k.to_string());
        }
    }
    names
        .into_iter()
        .map(|name| {
            let mut values: Vec<String> = configs
                .iter()
                .filter_map(|c| c.get(&name).map(str::to_string))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            values.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) => x.total_cmp(&y),
                _ => a.cmp(b),
            });
            (name, values)
        })
        .collect()
}

/// Candidates that differ from `configs[at]` in exactly `ring` knobs, each moved to the nearest
/// value present among candidates (in that knob's sorted order) — the nearest legal one above
/// and below, so gaps in the space (illegal combinations) are stepped over.
pub fn neighbours(configs: &[Args], knobs: &[(String, Vec<String>)], at: usize, ring: usize) -> Vec<usize> {
    let position = |name: &str, value: Option<&str>| -> Option<usize> {
        let values = &knobs.iter().find(|(n, _)| n == name)?.1;
        values.iter().position(|v| Some(v.as_str()) == value)
    };
    let here: Vec<Option<usize>> = knobs.iter().map(|(n, _)| position(n, configs[at].get(n))).collect();
    // Per candidate, the knobs that differ and by how many positions.
    let mut best_per_direction: std::collections::BTreeMap<Vec<(usize, bool)>, (usize, usize)> = Default::default();
    for (i, c) in configs.iter().enumerate() {
        if i == at {
            continue;
        }
        let mut moves = Vec::new();
        let mut distance = 0;
        for (j, (name, _)) in knobs.iter().enumerate() {
            let p = position(name, c.get(name));
            if p != here[j] {
                let (Some(p), Some(h)) = (p, here[j]) else {
                    moves.clear();
                    distance = usize::MAX;
                    break;
                };
                moves.push((j, p > h));
                distance += p.abs_diff(h);
            }
        }
        if moves.len() != ring || distance == usize::MAX {
            continue;
        }
        // Keep the closest candidate per direction of movement.
        let entry = best_per_direction.entry(moves).or_insert((distance, i));
        if distance < entry.0 {
            *entry = (distance, i);
        }
    }
    best_per_direction.into_values().map(|(_, i)| i).collect()
}
