//! One tuning run over one (kernel, shape): the legal space, the strategy's choices compiled in
//! parallel (rayon) and measured one at a time, every outcome turned into a database record.

use crate::database::{self, Record};
use crate::measure::{Measure, MeasureError, Measurement};
use crate::shapes::TuneShape;
use crate::space::{legal_space, TargetLimits};
use crate::strategy::{search, Scored, SearchSpace, StopReason, Strategy};
use kiln_kernels::{Args, KernelError, KernelId};
use rayon::prelude::*;
use std::time::Instant;

/// How to tune.
#[derive(Clone, Debug)]
pub struct TuneOptions {
    pub strategy: Strategy,
    pub limits: TargetLimits,
    /// Extra rounds in which the fastest [`CONFIRMED`] candidates are measured again, interleaved;
    /// the winner is chosen by the median over rounds. On a shared machine one measurement can be
    /// off by tens of percent, and the fastest of many noisy figures is usually a lucky one.
    pub confirm_rounds: usize,
}

/// Leading candidates re-measured in the confirmation rounds (the default is re-measured too).
pub const CONFIRMED: usize = 3;

impl TuneOptions {
    pub fn new(strategy: Strategy, limits: TargetLimits) -> TuneOptions {
        TuneOptions { strategy, limits, confirm_rounds: 2 }
    }
}

/// What the tuner reports while it works (for progress bars).
#[derive(Debug)]
pub enum Event<'a> {
    /// A shape starts: its legal candidates, how many were pruned, and the most the strategy
    /// will measure.
    Start { kernel: KernelId, shape: &'a Args, legal: usize, pruned: usize, planned: usize },
    /// One candidate was measured (or failed).
    Measured { config: &'a Args, result: &'a Result<Measurement, MeasureError> },
}

/// Why a run stopped without results for a shape.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("tuning {kernel} at {shape} stopped: {error}")]
    Unavailable { kernel: KernelId, shape: Args, error: MeasureError },
}

/// The outcome of tuning one shape.
#[derive(Clone, Debug)]
pub struct ShapeResult {
    pub kernel: KernelId,
    pub shape: Args,
    pub bucket: Args,
    pub legal: usize,
    pub pruned: usize,
    pub measured: usize,
    pub failed: usize,
    /// The fastest correct candidate.
    pub best: Option<(Args, Measurement)>,
    pub default_config: Args,
    pub default: Result<Measurement, MeasureError>,
    pub stop: StopReason,
    pub records: Vec<Record>,
}

impl ShapeResult {
    /// Default time over best time, when both measured.
    pub fn speedup(&self) -> Option<f64> {
        match (&self.best, &self.default) {
            (Some((_, best)), Ok(default)) => Some(default.median_s / best.median_s),
            _ => None,
        }
    }
}

/// Tunes `target` on `measure`, stopping the search at `deadline` (the default config is measured
/// even past it).
pub fn tune_shape<M: Measure>(
    measure: &M,
    target: &TuneShape,
    options: &TuneOptions,
    deadline: Instant,
    on_event: &(dyn Fn(Event<'_>) + Sync),
) -> Result<ShapeResult, TuneError> {
    let kernel = target.kernel;
    let space = legal_space(kernel, &target.shape, &options.limits, &measure.roofline(), measure.parallelism())?;
    let configs = space.configs();
    let predicted: Vec<f64> = space.candidates.iter().map(|c| c.estimate.seconds).collect();
    on_event(Event::Start {
        kernel,
        shape: &space.problem,
        legal: configs.len(),
        pruned: space.pruned.len(),
        planned: options.strategy.planned(configs.len()),
    });

    let mut results: Vec<Option<Result<Measurement, MeasureError>>> = vec![None; configs.len()];
    let mut fatal = None;
    let mut evaluate = |batch: &[usize]| -> Result<Vec<Option<Scored>>, ()> {
        // Compilation parallelises; timing must not share the machine, so it runs one at a time.
        let prepared: Vec<Result<M::Prepared, MeasureError>> =
            batch.par_iter().map(|&i| measure.prepare(kernel, &space.problem, &configs[i])).collect();
        let mut scores = Vec::with_capacity(batch.len());
        for (&i, p) in batch.iter().zip(prepared) {
            let result = p.and_then(|p| measure.measure(&p));
            if let Err(e @ MeasureError::Unavailable(_)) = &result {
                fatal = Some(e.clone());
                return Err(());
            }
            on_event(Event::Measured { config: &configs[i], result: &result });
            scores.push(result.as_ref().ok().map(|m| Scored { seconds: m.median_s, roofline_frac: m.roofline_frac }));
            results[i] = Some(result);
        }
        Ok(scores)
    };
    let search_space = SearchSpace { configs: &configs, predicted: &predicted, default: space.default };
    let outcome = search(&options.strategy, &search_space, &mut evaluate, &|| Instant::now() >= deadline);
    if let Some(error) = fatal {
        return Err(TuneError::Unavailable { kernel, shape: space.problem.clone(), error });
    }

    // Confirmation: the fastest few again, interleaved, each round after the other.
    let mut top: Vec<usize> = outcome.measured.iter().copied().filter(|&i| matches!(results[i], Some(Ok(_)))).collect();
    top.sort_by(|&a, &b| median_of(&results, a).total_cmp(&median_of(&results, b)).then(a.cmp(&b)));
    top.truncate(CONFIRMED);
    // The default is the baseline every speedup is quoted against: it is confirmed alongside the
    // leaders, so the winner is never a re-measured leader that came out slower than the
    // default's single first-round measurement.
    if matches!(results[space.default], Some(Ok(_))) && !top.contains(&space.default) {
        top.push(space.default);
    }
    let mut best_index = outcome.best;
    let mut confirmed = vec![1u32; configs.len()];
    if top.len() > 1 && options.confirm_rounds > 0 && Instant::now() < deadline {
        let prepared: Vec<Result<M::Prepared, MeasureError>> =
            top.par_iter().map(|&i| measure.prepare(kernel, &space.problem, &configs[i])).collect();
        let mut rounds: Vec<Vec<Measurement>> =
            top.iter().map(|&i| results[i].clone().into_iter().flatten().collect()).collect();
        for _ in 0..options.confirm_rounds {
            for (slot, p) in prepared.iter().enumerate() {
                let Ok(p) = p else { continue };
                match measure.measure(p) {
                    Ok(m) => rounds[slot].push(m),
                    Err(e @ MeasureError::Unavailable(_)) => {
                        return Err(TuneError::Unavailable { kernel, shape: space.problem.clone(), error: e });
                    }
                    // Flaky: a candidate that fails once is not trusted to win.
                    Err(e) => results[top[slot]] = Some(Err(e)),
                }
            }
        }
        for (slot, &i) in top.iter().enumerate() {
            if let Some(Ok(_)) = results[i] {
                results[i] = Some(Ok(combine(&rounds[slot])));
                confirmed[i] = rounds[slot].len() as u32;
            }
        }
        best_index = top
            .iter()
            .copied()
            .filter(|&i| matches!(results[i], Some(Ok(_))))
            .min_by(|&a, &b| median_of(&results, a).total_cmp(&median_of(&results, b)).then(a.cmp(&b)));
    }

    let bucket = database::bucket(&space.problem);
    let ir_hash = database::ir_hash(kernel)?;
    let mut records = Vec::new();
    for &i in &outcome.measured {
        let Some(result) = &results[i] else { continue };
        let mut r = Record {
            kernel: kernel.name().to_string(),
            ir_hash: ir_hash.clone(),
            bucket: bucket.to_string(),
            dtypes: database::dtypes(&space.problem),
            kiln_version: database::KILN_VERSION.to_string(),
            config: configs[i].to_string(),
            shape: space.problem.to_string(),
            status: "ok".to_string(),
            median_us: None,
            min_us: None,
            max_us: None,
            roofline_frac: None,
            rounds: 1,
            default: i == space.default,
            detail: String::new(),
        };
        match result {
            Ok(m) => {
                r.rounds = confirmed[i];
                // Nanosecond resolution and four digits of fraction: more is noise, and shorter
                // numbers keep the file readable.
                let us = |s: f64| Some((s * 1e9).round() / 1e3);
                r.median_us = us(m.median_s);
                r.min_us = us(m.min_s);
                r.max_us = us(m.max_s);
                r.roofline_frac = Some((m.roofline_frac * 1e4).round() / 1e4);
            }
            Err(e) => {
                r.status = e.status().to_string();
                r.detail = e.detail().to_string();
            }
        }
        records.push(r);
    }
    let failed = outcome.measured.iter().filter(|&&i| matches!(results[i], Some(Err(_)))).count();
    let best = best_index.and_then(|i| match &results[i] {
        Some(Ok(m)) => Some((configs[i].clone(), *m)),
        _ => None,
    });
    let default = results[space.default]
        .clone()
        .unwrap_or_else(|| Err(MeasureError::Launch("the default config was not measured".into())));
    Ok(ShapeResult {
        kernel,
        shape: space.problem.clone(),
        bucket,
        legal: configs.len(),
        pruned: space.pruned.len(),
        measured: outcome.measured.len(),
        failed,
        best,
        default_config: configs[space.default].clone(),
        default,
        stop: outcome.stop,
        records,
    })
}

/// One measurement from several rounds of the same candidate: the median of the medians, the
/// extremes of the runs, and the roofline fraction scaled to the combined median.
fn combine(rounds: &[Measurement]) -> Measurement {
    let mut medians: Vec<f64> = rounds.iter().map(|m| m.median_s).collect();
    medians.sort_by(f64::total_cmp);
    let median_s = medians[medians.len() / 2];
    let first = rounds[0];
    Measurement {
        median_s,
        min_s: rounds.iter().map(|m| m.min_s).fold(f64::INFINITY, f64::min),
        max_s: rounds.iter().map(|m| m.max_s).fold(0.0, f64::max),
        roofline_frac: first.roofline_frac * first.median_s / median_s,
    }
}

/// The median time of candidate `i`, infinite when it failed or was not measured.
fn median_of(results: &[Option<Result<Measurement, MeasureError>>], i: usize) -> f64 {
    match &results[i] {
        Some(Ok(m)) => m.median_s,
        _ => f64::INFINITY,
    }
}
