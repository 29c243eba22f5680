//! The CPU device's implementation of the tuner's [`Measure`] trait: plans compiled through the
//! device (parallel-safe, cached on disk), the first run's outputs checked against the kernel's
//! f64 reference, then warm-up and timed runs cycling over input copies that together exceed
//! the last-level cache. Inputs and the reference are made once per shape and shared by every
//! candidate of it.

use crate::bench::{self, check_outputs, median, rotation_count, LoadedPlan};
use crate::cpu::{CpuDevice, CpuError};
use kiln_autotune::measure::{Measure, MeasureError, Measurement, Roofline};
use kiln_kernels::check::prepare_buffers;
use kiln_kernels::{Args, Buffers, KernelId, Reference};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How candidates are timed.
#[derive(Clone, Debug)]
pub struct MeasureOptions {
    /// Untimed runs after the checked one.
    pub warmup: usize,
    /// Timed runs: at least `min_repeats`, more (up to `max_repeats`) while the total stays under
    /// `target_seconds`, so short kernels get a stable median and long ones do not eat the budget.
    pub min_repeats: usize,
    pub max_repeats: usize,
    pub target_seconds: f64,
    /// Input copies are made until their total exceeds this.
    pub working_set_bytes: u64,
}

impl Default for MeasureOptions {
    fn default() -> MeasureOptions {
        let llc = bench::last_level_cache_bytes().unwrap_or(32 << 20);
        MeasureOptions { warmup: 2, min_repeats: 5, max_repeats: 31, target_seconds: 0.05, working_set_bytes: 2 * llc }
    }
}

/// Inputs and reference of one shape.
struct Case {
    inputs: Buffers,
    reference: Reference,
}

/// The CPU device as a [`Measure`].
pub struct CpuMeasure<'d> {
    device: &'d CpuDevice,
    options: MeasureOptions,
    roofline: Roofline,
    cases: Mutex<HashMap<(KernelId, Args), Arc<Case>>>,
    /// One lock per launch kernel (by its IR text) being compiled.
    compiling: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// A compiled candidate.
pub struct CpuPrepared {
    kernel: KernelId,
    shape: Args,
    loaded: LoadedPlan,
    case: Arc<Case>,
}

impl<'d> CpuMeasure<'d> {
    /// Measures the device's roofline (a few seconds) and returns the measurer.
    pub fn new(device: &'d CpuDevice, options: MeasureOptions) -> Result<CpuMeasure<'d>, bench::BenchError> {
        let bench_options =
            bench::BenchOptions { warmup: 1, repeats: 5, working_set_bytes: options.working_set_bytes.max(256 << 20) };
        let r = bench::measure_roofline(device, &bench_options)?;
        Ok(CpuMeasure::with_roofline(device, options, Roofline { gbps: r.gbps, gflops: r.gflops }))
    }

    /// A measurer with a known roofline (tests, or a roofline measured earlier).
    pub fn with_roofline(device: &'d CpuDevice, options: MeasureOptions, roofline: Roofline) -> CpuMeasure<'d> {
        CpuMeasure {
            device,
            options,
            roofline,
            cases: Mutex::new(HashMap::new()),
            compiling: Mutex::new(HashMap::new()),
        }
    }

    fn case(&self, kernel: KernelId, shape: &Args) -> Result<Arc<Case>, MeasureError> {
        let mut cases = self.cases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cases.get(&(kernel, shape.clone())) {
            return Ok(c.clone());
        }
        let k = kernel.kernel();
        let compile = |e: kiln_kernels::KernelError| MeasureError::Compile(e.to_string());
        let inputs = k.inputs(shape, 7).map_err(compile)?;
        let reference = k.reference(shape, &inputs).map_err(compile)?;
        let case = Arc::new(Case { inputs, reference });
        // One shape is tuned at a time; keep only its inputs alive.
        cases.clear();
        cases.insert((kernel, shape.clone()), case.clone());
        Ok(case)
    }
}

fn launch_error(e: CpuError) -> MeasureError {
    match e {
        CpuError::Render { .. } | CpuError::Compile(_) | CpuError::Load { .. } => MeasureError::Compile(e.to_string()),
        CpuError::Pool(_) | CpuError::Guard(_) => MeasureError::Unavailable(e.to_string()),
        CpuError::BadArgs { .. } | CpuError::Kernel { .. } => MeasureError::Launch(e.to_string()),
    }
}

impl Measure for CpuMeasure<'_> {
    type Prepared = CpuPrepared;

    fn roofline(&self) -> Roofline {
        self.roofline
    }

    fn parallelism(&self) -> usize {
        self.device.threads()
    }

    fn prepare(&self, kernel: KernelId, shape: &Args, config: &Args) -> Result<CpuPrepared, MeasureError> {
        let k = kernel.kernel();
        let plan = k.plan(shape, config).map_err(|e| MeasureError::Compile(e.to_string()))?;
        // Configs often share a launch (a split-K or split-KV combine kernel): candidates compiled
        // in parallel must not build the same source at once, as the compile cache writes one
        // temporary file per process and source. The first builds; the others then find it loaded.
        for launch in &plan.launches {
            let text = kiln_ir::text::print(&launch.kernel);
            let lock = self.compiling.lock().unwrap_or_else(|p| p.into_inner()).entry(text).or_default().clone();
            let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
            self.device.load(&launch.kernel).map_err(launch_error)?;
        }
        let loaded = LoadedPlan::load(self.device, plan).map_err(launch_error)?;
        let case = self.case(kernel, shape)?;
        Ok(CpuPrepared { kernel, shape: shape.clone(), loaded, case })
    }

    fn measure(&self, p: &CpuPrepared) -> Result<Measurement, MeasureError> {
        let k = p.kernel.kernel();
        let name = p.kernel.name();
        let fresh =
            || prepare_buffers(name, &p.loaded.plan, &p.case.inputs).map_err(|e| MeasureError::Launch(e.to_string()));
        // Correctness first: poisoned outputs, one run, compared with the f64 reference.
        let mut checked = fresh()?;
        p.loaded.run(self.device, &mut checked).map_err(launch_error)?;
        check_outputs(k, &p.shape, &p.loaded.plan, &checked, &p.case.reference)
            .map_err(|e| MeasureError::WrongResult(e.to_string()))?
            .map_err(MeasureError::WrongResult)?;
        drop(checked);

        let n_rot = rotation_count(&p.loaded.plan, self.options.working_set_bytes);
        let mut rotations = Vec::with_capacity(n_rot);
        for _ in 0..n_rot {
            rotations.push(fresh()?);
        }
        let o = &self.options;
        // Timed on the device's leader, as `kiln bench` and a model step run their launches:
        // from another thread, each launch first hands its work to a sleeping thread (several
        // µs on a small VM), which would rank plans of several launches (a GEMV with a small
        // first launch preparing x) below what they cost in the model.
        let mut times = self.device.install(|| {
            let mut warm = 0.0;
            for i in 0..o.warmup.max(1) {
                let start = Instant::now();
                p.loaded.run(self.device, &mut rotations[i % n_rot]).map_err(launch_error)?;
                warm = start.elapsed().as_secs_f64();
            }
            let repeats =
                ((o.target_seconds / warm.max(1e-9)) as usize).clamp(o.min_repeats.max(1), o.max_repeats.max(1));
            let mut times = Vec::with_capacity(repeats);
            for i in 0..repeats {
                let buffers = &mut rotations[(o.warmup + i) % n_rot];
                let start = Instant::now();
                p.loaded.run(self.device, buffers).map_err(launch_error)?;
                times.push(start.elapsed().as_secs_f64());
            }
            Ok::<_, MeasureError>(times)
        })?;
        times.sort_by(f64::total_cmp);
        let t = median(&times);
        let cost = k.cost(&p.shape, &p.loaded.plan, &p.case.inputs).map_err(|e| MeasureError::Launch(e.to_string()))?;
        Ok(Measurement {
            median_s: t,
            min_s: times[0],
            max_s: times[times.len() - 1],
            roofline_frac: self.roofline.time(cost.bytes, cost.flops) / t,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> MeasureOptions {
        MeasureOptions { warmup: 1, min_repeats: 3, max_repeats: 5, target_seconds: 0.001, working_set_bytes: 1 << 20 }
    }

    fn shape() -> Args {
        let k = KernelId::Rmsnorm.kernel();
        k.problem(&Args::parse("tokens=3,dim=96,dtype=f32").unwrap()).unwrap()
    }

    #[test]
    fn a_correct_candidate_is_timed() {
        let device = CpuDevice::host(Some(1)).unwrap();
        let m = CpuMeasure::with_roofline(&device, small(), Roofline { gbps: 10.0, gflops: 100.0 });
        let config = KernelId::Rmsnorm.kernel().default_config(&shape()).unwrap();
        let p = m.prepare(KernelId::Rmsnorm, &shape(), &config).unwrap();
        let r = m.measure(&p).unwrap();
        assert!(r.min_s > 0.0 && r.min_s <= r.median_s && r.median_s <= r.max_s, "{r:?}");
        assert!(r.roofline_frac > 0.0 && r.roofline_frac.is_finite());
    }

    #[test]
    fn a_wrong_output_is_a_wrong_result_not_a_timing() {
        let device = CpuDevice::host(Some(1)).unwrap();
        let m = CpuMeasure::with_roofline(&device, small(), Roofline { gbps: 10.0, gflops: 100.0 });
        let config = KernelId::Rmsnorm.kernel().default_config(&shape()).unwrap();
        let mut p = m.prepare(KernelId::Rmsnorm, &shape(), &config).unwrap();
        // The same kernel judged against a reference that is off by 1%.
        let mut reference = p.case.reference.clone();
        for v in reference.values_mut() {
            v.iter_mut().for_each(|x| *x *= 1.01);
        }
        p.case = Arc::new(Case { inputs: p.case.inputs.clone(), reference });
        match m.measure(&p) {
            Err(MeasureError::WrongResult(detail)) => assert!(detail.contains("rel error"), "{detail}"),
            other => panic!("expected a wrong result, got {other:?}"),
        }
    }

    #[test]
    fn an_illegal_config_is_a_compile_error() {
        let device = CpuDevice::host(Some(1)).unwrap();
        let m = CpuMeasure::with_roofline(&device, small(), Roofline { gbps: 10.0, gflops: 100.0 });
        let bad = Args::parse("block=3").unwrap();
        assert!(matches!(m.prepare(KernelId::Rmsnorm, &shape(), &bad), Err(MeasureError::Compile(_))));
    }
}
