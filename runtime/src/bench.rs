//! Benchmarks on the CPU device: warm-up, the median of repeats, inputs rotated over a working
//! set larger than the last-level cache (a hot cache flatters every memory-bound figure), the
//! output checked against the reference before any figure is reported, and the roofline measured
//! in the same run by kiln-generated kernels (`kernels::roofline`).

use crate::cpu::{CpuDevice, CpuError, CpuModule};
use kiln_kernels::check::{compare, prepare_buffers, with_args};
use kiln_kernels::{roofline, Args, Buffers, DynKernel, KernelError, Plan, Reference, Role, TargetKind};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Cpu(#[from] CpuError),
    #[error(transparent)]
    Cuda(#[from] crate::cuda::CudaError),
    #[error("{kernel}: the benchmarked output does not match the reference: {detail}")]
    WrongResult { kernel: String, detail: String },
    #[error("bad config: {0}")]
    BadConfig(String),
}

/// How to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Runs before timing starts (compilation is never timed).
    pub warmup: usize,
    /// Timed runs; the median is reported.
    pub repeats: usize,
    /// Inputs are copied until their total exceeds this, and runs cycle through the copies.
    pub working_set_bytes: u64,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        let llc = last_level_cache_bytes().unwrap_or(512 << 20);
        BenchOptions { warmup: 3, repeats: 21, working_set_bytes: (4 * llc).max(1 << 30) }
    }
}

/// The size of the largest CPU cache, from sysfs (Linux); `None` elsewhere.
pub fn last_level_cache_bytes() -> Option<u64> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("size")).ok())
        .filter_map(|s| {
            let s = s.trim();
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = num.parse().ok()?;
            Some(match unit {
                "K" => n << 10,
                "M" => n << 20,
                "G" => n << 30,
                _ => n,
            })
        })
        .max()
}

/// The machine's measured ceilings.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Roofline {
    /// Streaming read bandwidth, GB/s (10^9 bytes).
    pub gbps: f64,
    /// Peak f32 multiply-add throughput, GFLOP/s.
    pub gflops: f64,
}

/// One benchmarked case, with the fields of `kiln bench --json` (CPU and CUDA alike; on a GPU
/// `threads` is the threads per block).
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchCase {
    pub kernel: String,
    pub shape: String,
    pub config: String,
    pub target: String,
    pub threads: usize,
    pub median_us: f64,
    /// Fastest and slowest timed run, for the spread.
    pub min_us: f64,
    pub max_us: f64,
    pub gbps: f64,
    pub gflops: f64,
    pub roofline_gbps: f64,
    pub roofline_gflops: f64,
    /// Roofline time (`max(bytes / bandwidth, flops / peak)`) over the measured median.
    pub roofline_frac: f64,
    /// [`core_round_trip_ns`] right after the timed runs (CPU only): which placement of the
    /// threads the host gave this run.
    pub core_round_trip_ns: Option<f64>,
    /// [`core_round_trip_ns`] right after the roofline was measured (CPU only; set by the
    /// caller that measured it). Far from `core_round_trip_ns` (see [`phase_changed`]), the
    /// host moved the threads between the two and `roofline_frac` mixes two phases.
    pub roofline_round_trip_ns: Option<f64>,
}

/// Whether two cross-core round trips (ns) belong to different placements of the threads:
/// more than 3× apart. On the 2-vCPU host the two phases read ~50 ns and ~400 ns, and the
/// read roofline differs between them (~37-39 against ~45-48 GB/s), so a fraction whose
/// roofline and timing come from different phases is off by up to a quarter.
pub fn phase_changed(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => a.max(b) / a.min(b) > 3.0,
        _ => false,
    }
}

/// The warning for a run whose round trips after the roofline and after `what` (the timed
/// runs, the decode steps) are [`phase_changed`], or `None` when they agree or are missing.
pub fn phase_note(what: &str, roofline_ns: Option<f64>, run_ns: Option<f64>) -> Option<String> {
    match (roofline_ns, run_ns) {
        (Some(roof), Some(run)) if phase_changed(roofline_ns, run_ns) => Some(phase_warning(what, roof, run)),
        _ => None,
    }
}

/// The warning for [`phase_changed`] round trips, naming both.
fn phase_warning(what: &str, roofline_ns: f64, run_ns: f64) -> String {
    format!(
        "warning: the host moved the threads between the roofline ({roofline_ns:.0} ns cross-core round trip) and \
         {what} ({run_ns:.0} ns): the roofline fraction mixes two phases of the host; run it again"
    )
}

/// A plan whose kernels are compiled and loaded, ready to run repeatedly.
pub(crate) struct LoadedPlan {
    pub(crate) plan: Plan,
    modules: Vec<Arc<CpuModule>>,
}

impl LoadedPlan {
    pub(crate) fn load(device: &CpuDevice, plan: Plan) -> Result<LoadedPlan, CpuError> {
        let modules = plan.launches.iter().map(|l| device.load(&l.kernel)).collect::<Result<_, _>>()?;
        Ok(LoadedPlan { plan, modules })
    }

    pub(crate) fn run(&self, device: &CpuDevice, buffers: &mut Buffers) -> Result<(), CpuError> {
        for (launch, module) in self.plan.launches.iter().zip(&self.modules) {
            let mut failure = None;
            // `with_args` reports failures as text; keep the typed error where there is one.
            let result = with_args(launch, buffers, |args| {
                device.run(module, launch.grid, args).map_err(|e| {
                    let text = e.to_string();
                    failure = Some(e);
                    text
                })
            });
            match (result, failure) {
                (Ok(()), _) => {}
                (Err(_), Some(e)) => return Err(e),
                (Err(message), None) => return Err(CpuError::BadArgs { kernel: launch.kernel.name.clone(), message }),
            }
        }
        Ok(())
    }

    /// Runs once per rotation for warm-up, then `repeats` timed runs cycling over rotations;
    /// returns the sorted run times in seconds.
    ///
    /// The runs start on the device's leader, as a model step's launches do
    /// (`CpuDevice::install`): a launch made from another thread first hands its work to a
    /// sleeping thread and waits on a lock for the answer, a fixed cost per launch (~8 µs on a
    /// 2-core VM) that a decode step never pays and that would otherwise dominate every kernel
    /// of a few tens of microseconds.
    ///
    /// With `KILN_BENCH_TRACE` set, each timed run's time and rotation go to stderr in order.
    fn time(&self, device: &CpuDevice, rotations: &mut [Buffers], opts: &BenchOptions) -> Result<Vec<f64>, CpuError> {
        device.install(|| {
            let n = rotations.len();
            for i in 0..opts.warmup {
                self.run(device, &mut rotations[i % n])?;
            }
            let mut times = Vec::with_capacity(opts.repeats);
            let trace = std::env::var_os("KILN_BENCH_TRACE").is_some();
            for i in 0..opts.repeats.max(1) {
                let r = (opts.warmup + i) % n;
                let start = Instant::now();
                self.run(device, &mut rotations[r])?;
                times.push(start.elapsed().as_secs_f64());
                if trace {
                    eprintln!("run {i} rotation {r}: {:.1} us", times[i] * 1e6);
                }
            }
            times.sort_by(f64::total_cmp);
            Ok(times)
        })
    }
}

pub(crate) fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

/// How many copies of `plan`'s buffers make a working set of at least `bytes`.
pub(crate) fn rotation_count(plan: &Plan, bytes: u64) -> usize {
    let per: u64 = plan.buffers.iter().map(|b| b.len as u64 * b.dtype.size_bytes() as u64).sum();
    bytes.div_ceil(per.max(1)).clamp(1, 4096) as usize
}

/// Measures the streaming read bandwidth and the peak multiply-add rate with kiln kernels.
pub fn measure_roofline(device: &CpuDevice, opts: &BenchOptions) -> Result<Roofline, BenchError> {
    let threads = device.threads() as u32;
    // Bandwidth: one pass over a buffer much larger than the caches per run.
    let programs = threads * 16;
    let per_program = opts.working_set_bytes / 4 / programs as u64;
    let chunk = (per_program / roofline::STREAM_BLOCK as u64).max(1) as u32 * roofline::STREAM_BLOCK;
    let stream = LoadedPlan::load(device, roofline::stream_read(programs, chunk)?)?;
    let x: Vec<f32> = (0..programs as usize * chunk as usize).map(|i| (i % 1024) as f32 * 1e-3).collect();
    let inputs = Buffers::from([("x".to_string(), kiln_ir::interp::HostBuffer::F32(x))]);
    let mut rotations = vec![prepare_buffers("roofline", &stream.plan, &inputs)?];
    drop(inputs);
    let stream_opts = BenchOptions { warmup: 1, repeats: opts.repeats.clamp(3, 9), ..opts.clone() };
    let times = stream.time(device, &mut rotations, &stream_opts)?;
    let gbps = 4.0 * programs as f64 * chunk as f64 / median(&times) / 1e9;
    drop(rotations);

    // Peak: enough iterations for a run of tens of milliseconds.
    let programs = threads * 4;
    let iters = 2_000_000;
    let fma = LoadedPlan::load(device, roofline::fma_peak(programs, iters)?)?;
    let mut rotations = vec![prepare_buffers("roofline", &fma.plan, &Buffers::new())?];
    let times = fma.time(device, &mut rotations, &stream_opts)?;
    let flops = 2.0 * roofline::FMA_LANES as f64 * iters as f64 * programs as f64;
    Ok(Roofline { gbps, gflops: flops / median(&times) / 1e9 })
}

/// Compares the outputs of `plan` in `buffers` against `reference`: `Ok(Err(detail))` names the
/// first buffer outside the kernel's tolerance.
pub(crate) fn check_outputs(
    kernel: &dyn DynKernel,
    shape: &Args,
    plan: &Plan,
    buffers: &Buffers,
    reference: &Reference,
) -> Result<Result<(), String>, KernelError> {
    for spec in plan.buffers.iter().filter(|b| matches!(b.role, Role::Output | Role::InOut)) {
        let want = reference.get(&spec.name).map(Vec::as_slice).unwrap_or(&[]);
        let Some(got) = buffers.get(&spec.name) else {
            return Ok(Err(format!("{}: output buffer missing", spec.name)));
        };
        let c = compare(&spec.name, got, want, kernel.tolerance(shape, spec.dtype)?);
        if !c.passed() {
            return Ok(Err(format!("{}: rel error {:.3e}, {} non-finite", c.buffer, c.rel_error, c.non_finite)));
        }
    }
    Ok(Ok(()))
}

/// Benchmarks one kernel on one shape and config.
pub fn bench(
    device: &CpuDevice,
    kernel: &dyn DynKernel,
    shape: &Args,
    config: &Args,
    opts: &BenchOptions,
    roofline: &Roofline,
) -> Result<BenchCase, BenchError> {
    let name = kernel.id().name();
    let shape = kernel.problem(&kernel.example_problem().overlaid(shape))?;
    let config = kernel.target_default(&shape, TargetKind::Cpu)?.overlaid(config);
    let loaded = LoadedPlan::load(device, kernel.plan(&shape, &config)?)?;
    let inputs = kernel.inputs(&shape, 7)?;
    let cost = kernel.cost(&shape, &loaded.plan, &inputs)?;
    let n_rot = rotation_count(&loaded.plan, opts.working_set_bytes);
    let mut rotations = Vec::with_capacity(n_rot);
    for _ in 0..n_rot {
        rotations.push(prepare_buffers(name, &loaded.plan, &inputs)?);
    }

    // Correctness before speed: the first run's outputs must match the reference.
    loaded.run(device, &mut rotations[0])?;
    let reference = kernel.reference(&shape, &inputs)?;
    check_outputs(kernel, &shape, &loaded.plan, &rotations[0], &reference)?
        .map_err(|detail| BenchError::WrongResult { kernel: name.to_string(), detail })?;
    // In-out buffers (KV caches) were updated by that run: start every rotation from the inputs.
    rotations[0] = prepare_buffers(name, &loaded.plan, &inputs)?;
    drop(inputs);

    let times = loaded.time(device, &mut rotations, opts)?;
    let t = median(&times);
    let roof_time = (cost.bytes as f64 / (roofline.gbps * 1e9)).max(cost.flops as f64 / (roofline.gflops * 1e9));
    Ok(BenchCase {
        kernel: name.to_string(),
        shape: shape.to_string(),
        config: config.to_string(),
        target: format!("cpu:{:?}", device.target.isa).to_lowercase(),
        threads: device.threads(),
        median_us: t * 1e6,
        min_us: times[0] * 1e6,
        max_us: times[times.len() - 1] * 1e6,
        gbps: cost.bytes as f64 / t / 1e9,
        gflops: cost.flops as f64 / t / 1e9,
        roofline_gbps: roofline.gbps,
        roofline_gflops: roofline.gflops,
        roofline_frac: roof_time / t,
        core_round_trip_ns: core_round_trip_ns(),
        roofline_round_trip_ns: None,
    })
}

/// Median nanoseconds for one cache line to go from one thread to another and back (two threads
/// bouncing a flag), or `None` on a one-core machine. It tells how the host placed the cores:
/// on the 2-vCPU Zen 5 VM it reads ~50 ns in the host's fast phase (decode ~3.9-4.1 ms per
/// token, read roofline ~36-37 GB/s) and ~400 ns in its slow phase (the vCPUs far apart: each
/// launch's hand-offs and shared activations cost more; decode ~4.7 ms, roofline ~44 GB/s).
pub fn core_round_trip_ns() -> Option<f64> {
    use std::sync::atomic::{
        AtomicU32,
        Ordering::{Acquire, Release},
    };
    use std::time::{Duration, Instant};
    // Five windows of 2 ms: bounded in time whatever the host does (two threads sharing one
    // busy core hand the line over once per time slice, and the figure then says so).
    const WINDOW: Duration = Duration::from_millis(2);
    const WINDOWS: usize = 5;
    const STOP: u32 = u32::MAX;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return None;
    }
    // Right after a run the devices' workers still spin or yield (up to 2 ms, see
    // `cpu::pool`) and would share the cores with the probe: let them park first.
    std::thread::sleep(Duration::from_millis(3));
    /// Spins until `done(value)`, yielding now and then so a thread sharing the core runs.
    fn wait(ball: &AtomicU32, done: impl Fn(u32) -> bool) -> u32 {
        let mut spins = 0u32;
        loop {
            let v = ball.load(Acquire);
            if done(v) {
                return v;
            }
            spins += 1;
            if spins.is_multiple_of(4096) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
    // Odd: the partner's turn to answer; even: the measuring thread's.
    let ball = AtomicU32::new(0);
    let mut windows = std::thread::scope(|s| {
        s.spawn(|| loop {
            let v = wait(&ball, |v| v % 2 == 1);
            if v == STOP {
                return;
            }
            ball.store(v + 1, Release);
        });
        let windows = (0..WINDOWS)
            .map(|_| {
                let (start, mut trips) = (Instant::now(), 0u64);
                loop {
                    let v = ball.load(Acquire);
                    ball.store(v + 1, Release);
                    wait(&ball, |now| now != v + 1);
                    trips += 1;
                    if trips % 64 == 0 && start.elapsed() >= WINDOW {
                        break;
                    }
                }
                start.elapsed().as_secs_f64() * 1e9 / trips as f64
            })
            .collect::<Vec<f64>>();
        ball.store(STOP, Release);
        windows
    });
    windows.sort_by(f64::total_cmp);
    Some(median(&windows))
}

/// The `kiln bench` table of `cases` (CPU or CUDA), with the roofline and target as a footer.
pub fn render_table(cases: &[BenchCase]) -> String {
    let mut table = tabled::builder::Builder::default();
    table.push_record([
        "kernel",
        "shape",
        "config",
        "threads",
        "median µs",
        "min..max µs",
        "GB/s",
        "GFLOP/s",
        "roofline",
    ]);
    for case in cases {
        table.push_record([
            case.kernel.clone(),
            case.shape.clone(),
            case.config.clone(),
            case.threads.to_string(),
            format!("{:.1}", case.median_us),
            format!("{:.1}..{:.1}", case.min_us, case.max_us),
            format!("{:.1}", case.gbps),
            format!("{:.1}", case.gflops),
            format!("{:.0}%", case.roofline_frac * 100.0),
        ]);
    }
    let mut out = table.build().with(tabled::settings::Style::rounded()).to_string();
    if let Some(case) = cases.first() {
        out += &format!(
            "\nroofline: {:.1} GB/s read, {:.1} GFLOP/s ({} threads, {})",
            case.roofline_gbps, case.roofline_gflops, case.threads, case.target
        );
        if let Some(ns) = case.core_round_trip_ns {
            out += &format!("\ncross-core round trip: {ns:.0} ns (the host's placement of the threads in this run)");
        }
        if let Some(warning) = phase_note("the timed runs", case.roofline_round_trip_ns, case.core_round_trip_ns) {
            out += &format!("\n{warning}");
        }
    }
    out + "\n"
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_more_than_three_times_apart_are_a_phase_change() {
        use super::phase_changed;
        assert!(!phase_changed(Some(45.0), Some(60.0)));
        assert!(!phase_changed(Some(380.0), Some(420.0)));
        assert!(phase_changed(Some(45.0), Some(400.0)));
        assert!(phase_changed(Some(410.0), Some(50.0)));
        assert!(!phase_changed(None, Some(400.0)), "one core: no probe, no phase");
        assert!(!phase_changed(Some(45.0), None));
        let w = super::phase_warning("the timed runs", 45.0, 400.0);
        assert!(w.contains("45 ns") && w.contains("400 ns") && w.contains("run it again"), "{w}");
    }

    #[test]
    fn the_round_trip_probe_gives_a_positive_figure() {
        if let Some(ns) = super::core_round_trip_ns() {
            assert!(ns.is_finite() && ns > 0.0, "{ns}");
        }
    }
}
