//! The tuner over a synthetic device: the legal space comes from the kernel, candidates are
//! prepared and measured through the `Measure` trait, failures become records, the default config
//! is always measured, and an unusable device stops the run with a typed error.

use kiln_autotune::database::{Database, KILN_VERSION};
use kiln_autotune::measure::{Measure, MeasureError, Measurement, Roofline};
use kiln_autotune::shapes::TuneShape;
use kiln_autotune::space::{legal_space, TargetLimits};
use kiln_autotune::strategy::Strategy;
use kiln_autotune::target::Fingerprint;
use kiln_autotune::tuner::{tune_shape, TuneError, TuneOptions};
use kiln_kernels::{Args, KernelId};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A device whose time for a config is a fixed function of its knobs; configs with
/// `split_k=2` give wrong results, `block_n=16` fail to compile.
struct Synthetic {
    measured: AtomicUsize,
    unavailable_after: usize,
}

impl Measure for Synthetic {
    type Prepared = Args;
    fn roofline(&self) -> Roofline {
        Roofline { gbps: 10.0, gflops: 100.0 }
    }
    fn parallelism(&self) -> usize {
        2
    }
    fn prepare(&self, kernel: KernelId, shape: &Args, config: &Args) -> Result<Args, MeasureError> {
        kernel.kernel().plan(shape, config).map_err(|e| MeasureError::Compile(e.to_string()))?;
        if config.get("block_n") == Some("16") {
            return Err(MeasureError::Compile("synthetic compiler failure".into()));
        }
        Ok(config.clone())
    }
    fn measure(&self, config: &Args) -> Result<Measurement, MeasureError> {
        if self.measured.fetch_add(1, Ordering::SeqCst) >= self.unavailable_after {
            return Err(MeasureError::Unavailable("synthetic device lost".into()));
        }
        if config.get("split_k") == Some("2") {
            return Err(MeasureError::WrongResult("out: rel error 3.0e-1".into()));
        }
        let v = |k: &str| config.get(k).unwrap().parse::<f64>().unwrap().log2();
        let t = 1e-4 * (1.0 + (v("block_n") - 5.0).powi(2) + (v("block_k") - 6.0).powi(2) + v("split_k"));
        Ok(Measurement { median_s: t, min_s: t * 0.9, max_s: t * 1.1, roofline_frac: 2e-5 / t })
    }
}

fn shape() -> TuneShape {
    let shape = Args::parse("m=1,n=256,k=512,group=32,act=f32,quant=asym").unwrap();
    TuneShape { kernel: KernelId::DequantGemmW4, shape }
}

fn options(strategy: Strategy) -> TuneOptions {
    TuneOptions::new(strategy, TargetLimits::cpu())
}

#[test]
fn exhaustive_records_every_candidate_and_its_failures() {
    let device = Synthetic { measured: AtomicUsize::new(0), unavailable_after: usize::MAX };
    let far = Instant::now() + Duration::from_secs(3600);
    let r = tune_shape(&device, &shape(), &options(Strategy::Exhaustive), far, &|_| {}).unwrap();
    assert_eq!(r.measured, r.legal);
    assert_eq!(r.records.len(), r.legal);
    let (best, m) = r.best.clone().unwrap();
    assert_eq!(best.get("block_n"), Some("32"));
    assert_eq!(best.get("block_k"), Some("64"));
    assert_eq!(best.get("split_k"), Some("1"));
    assert!(m.median_s > 0.0);
    let statuses: std::collections::BTreeSet<&str> = r.records.iter().map(|r| r.status.as_str()).collect();
    assert!(statuses.contains("ok") && statuses.contains("wrong_result") && statuses.contains("compile_error"));
    assert_eq!(r.failed, r.records.iter().filter(|r| r.status != "ok").count());
    assert_eq!(r.records.iter().filter(|r| r.default).count(), 1, "the default is measured");
    assert!(r.records.iter().all(|x| x.kiln_version == KILN_VERSION && x.bucket == r.bucket.to_string()));
    assert!(r.speedup().unwrap() >= 1.0);

    // The records round-trip through a database and lookup picks the measured best.
    let target = Fingerprint("synthetic".into());
    let mut db = Database::new(target.clone());
    db.merge(r.records.clone());
    let path = std::path::Path::new("unused.toml");
    let provider = db.provider(path, &target, false).unwrap();
    use kiln_autotune::lookup::{ConfigProvider, ConfigSource};
    let choice = provider.choose(KernelId::DequantGemmW4, &shape().shape).unwrap();
    assert_eq!((choice.config, choice.source), (best, ConfigSource::Exact));
}

#[test]
fn guided_measures_a_quarter_and_matches_exhaustive_here() {
    let device = Synthetic { measured: AtomicUsize::new(0), unavailable_after: usize::MAX };
    let far = Instant::now() + Duration::from_secs(3600);
    let r = tune_shape(&device, &shape(), &options(Strategy::guided()), far, &|_| {}).unwrap();
    assert!(r.measured * 4 <= r.legal, "{} of {}", r.measured, r.legal);
    let exhaustive = tune_shape(&device, &shape(), &options(Strategy::Exhaustive), far, &|_| {}).unwrap();
    let (g, e) = (r.best.unwrap().1.median_s, exhaustive.best.unwrap().1.median_s);
    assert!(g <= 1.05 * e, "guided {g} vs exhaustive {e}");
}

#[test]
fn a_lost_device_stops_the_run_with_a_typed_error() {
    let device = Synthetic { measured: AtomicUsize::new(0), unavailable_after: 3 };
    let far = Instant::now() + Duration::from_secs(3600);
    let e = tune_shape(&device, &shape(), &options(Strategy::Exhaustive), far, &|_| {}).unwrap_err();
    assert!(matches!(e, TuneError::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains("synthetic device lost"), "{e}");
}

#[test]
fn a_spent_budget_measures_the_default_only() {
    let device = Synthetic { measured: AtomicUsize::new(0), unavailable_after: usize::MAX };
    let r = tune_shape(&device, &shape(), &options(Strategy::guided()), Instant::now(), &|_| {}).unwrap();
    assert_eq!(r.measured, 1);
    assert!(r.records[0].default);
}

#[test]
fn the_space_holds_the_default_and_the_model_prefers_fewer_weight_passes() {
    let roofline = Roofline { gbps: 10.0, gflops: 100.0 };
    // m = 16: one 16-row tile reads the weights once; the one-token GEMV reads them 16 times.
    let problem = Args::parse("m=16,n=512,k=512,group=32,act=f32,quant=asym").unwrap();
    let space = legal_space(KernelId::DequantGemmW4, &problem, &TargetLimits::cpu(), &roofline, 2).unwrap();
    assert!(space.candidates.len() > 10);
    let k = KernelId::DequantGemmW4.kernel();
    assert_eq!(space.candidates[space.default].config, k.default_config(&space.problem).unwrap());
    let time = |cfg: &str| {
        let c = Args::parse(cfg).unwrap();
        space.candidates.iter().find(|x| x.config == c).unwrap().estimate.seconds
    };
    assert!(
        time("block_m=16,gemv=0,block_n=64,block_k=64,split_k=1,row_loop=0,weights_lhs=0")
            < time("block_m=1,gemv=1,block_n=64,block_k=64,split_k=1,row_loop=0,weights_lhs=0")
    );
    // A tiny per-program budget prunes everything but the default, with reasons.
    let tight = TargetLimits { max_program_bytes: 1, ..TargetLimits::cpu() };
    let pruned = legal_space(KernelId::DequantGemmW4, &problem, &tight, &roofline, 2).unwrap();
    assert_eq!(pruned.candidates.len(), 1);
    assert_eq!(pruned.pruned.len(), space.candidates.len() - 1);
    assert!(pruned.pruned[0].reason.contains("KiB"), "{}", pruned.pruned[0].reason);
}

/// A device on which one config's first measurement is lucky (three times too fast).
struct Lucky {
    lucky: Args,
    calls: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Measure for Lucky {
    type Prepared = Args;
    fn roofline(&self) -> Roofline {
        Roofline { gbps: 10.0, gflops: 100.0 }
    }
    fn parallelism(&self) -> usize {
        2
    }
    fn prepare(&self, _: KernelId, _: &Args, config: &Args) -> Result<Args, MeasureError> {
        Ok(config.clone())
    }
    fn measure(&self, config: &Args) -> Result<Measurement, MeasureError> {
        let mut calls = self.calls.lock().unwrap();
        let n = calls.entry(config.to_string()).or_insert(0);
        *n += 1;
        let v = |k: &str| config.get(k).unwrap().parse::<f64>().unwrap().log2();
        let mut t = 1e-4 * (1.0 + (v("block_n") - 5.0).powi(2) + (v("block_k") - 6.0).powi(2) + v("split_k"));
        if *config == self.lucky && *n == 1 {
            t /= 3.0;
        }
        Ok(Measurement { median_s: t, min_s: t, max_s: t, roofline_frac: 2e-5 / t })
    }
}

#[test]
fn a_lucky_first_measurement_does_not_win() {
    let lucky = Args::parse("block_m=1,gemv=1,block_n=64,block_k=64,split_k=1,row_loop=0,weights_lhs=0").unwrap();
    let device = Lucky { lucky: lucky.clone(), calls: Default::default() };
    let far = Instant::now() + Duration::from_secs(3600);
    let r = tune_shape(&device, &shape(), &options(Strategy::Exhaustive), far, &|_| {}).unwrap();
    let (best, _) = r.best.unwrap();
    assert_ne!(best, lucky);
    assert_eq!(best.get("block_n"), Some("32"));
    // The lucky config's record holds the median over its rounds, not the lucky figure.
    let record = r.records.iter().find(|x| x.config == lucky.to_string()).unwrap();
    let honest = 1e-4 * (1.0 + 1.0) * 1e6;
    assert!((record.median_us.unwrap() - honest).abs() < 1e-6, "{record:?}");
    // Without confirmation rounds, the lucky one wins: the rounds are what fixes it.
    let device = Lucky { lucky: lucky.clone(), calls: Default::default() };
    let once = TuneOptions { confirm_rounds: 0, ..options(Strategy::Exhaustive) };
    assert_eq!(tune_shape(&device, &shape(), &once, far, &|_| {}).unwrap().best.unwrap().0, lucky);
}
