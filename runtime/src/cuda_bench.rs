//! Benchmarks and the conformance check on the CUDA device: `kiln bench --target cuda:N` and
//! `kiln gpu-check`.
//!
//! The method is the CPU bench's (`bench.rs`): compilation never timed, the first run's outputs
//! checked against the reference, warm-up, the median of repeats, inputs rotated over device
//! copies whose total exceeds 4× the L2 cache, and the roofline measured in the same run by
//! kiln-generated kernels (`kernels::roofline`, lowered to PTX like every other kernel). Times
//! are CUDA events around the plan's launches on the device's stream.

use crate::bench::{check_outputs, median, rotation_count, BenchCase, BenchError, BenchOptions, Roofline};
use crate::cuda::{CudaDevice, CudaError, CudaExecutor, CudaKernel, DeviceArg, DeviceBuffer};
use crate::ptx_abi::AbiArg;
use kiln_kernels::check::{conformance_shapes, prepare_buffers, sweep};
use kiln_kernels::{roofline, Args, Binding, Buffers, DynKernel, KernelId, Plan, TargetKind};
use std::collections::HashMap;
use std::sync::Arc;

/// The shapes `kiln gpu-check` benchmarks (the PTX backend's headline cases): the int4 GEMV of an
/// 8B model's MLP at m = 1, 4 and 16, and paged decode attention and KV gather at batch 16 over
/// a 4096-token context.
pub const HEADLINE: [(KernelId, &str); 5] = [
    (KernelId::DequantGemmW4, "m=1,k=4096,n=14336,group=128"),
    (KernelId::DequantGemmW4, "m=4,k=4096,n=14336,group=128"),
    (KernelId::DequantGemmW4, "m=16,k=4096,n=14336,group=128"),
    (KernelId::AttentionDecodePaged, "batch=16,q_len=1,ctx=4096,heads=32,kv_heads=8,head_dim=128,block=16"),
    (KernelId::PagedKvGather, "batch=16,ctx=4096,kv_heads=8,head_dim=128,block=16"),
];

/// Bench options for `device`: the CPU defaults with a working set of max(4 × L2, 256 MiB).
pub fn default_options(device: &CudaDevice) -> BenchOptions {
    BenchOptions { warmup: 3, repeats: 21, working_set_bytes: (4 * device.l2_bytes).max(256 << 20) }
}

/// The warps-per-block choices of a GPU config. The knob belongs to the launch, not to the
/// kernel (kernels know no backends), so it is not in any kernel's config space: a GPU config
/// is a kernel config plus `num_warps` ([`GpuConfig`]), and `kiln gpu-check` sweeps it.
pub const NUM_WARPS: [u32; 4] = [1, 2, 4, 8];

/// A config for the CUDA device: the kernel's own knobs and the warps per block.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuConfig {
    pub kernel: Args,
    pub num_warps: u32,
}

impl GpuConfig {
    /// Splits `num_warps=N` (one of [`NUM_WARPS`]) off `config`; `default_warps` when absent.
    pub fn split(config: &Args, default_warps: u32) -> Result<GpuConfig, BenchError> {
        let mut kernel = Args::new();
        let mut num_warps = default_warps;
        for (key, value) in config.iter() {
            if key == "num_warps" {
                num_warps =
                    value.parse().ok().filter(|w| NUM_WARPS.contains(w)).ok_or_else(|| {
                        BenchError::BadConfig(format!("num_warps = {value} is not one of {NUM_WARPS:?}"))
                    })?;
            } else {
                kernel.set(key, value);
            }
        }
        Ok(GpuConfig { kernel, num_warps })
    }

    /// The kernel config with `num_warps` added, as printed in tables.
    pub fn to_args(&self) -> Args {
        self.kernel.clone().with("num_warps", self.num_warps)
    }
}

type DeviceBuffers = HashMap<String, DeviceBuffer>;

/// A plan whose kernels are loaded on the device.
struct GpuPlan {
    plan: Plan,
    kernels: Vec<Arc<CudaKernel>>,
}

impl GpuPlan {
    /// Loads every launch's kernel with `num_warps` warps, specialised on the launch's scalars.
    fn load(device: &CudaDevice, plan: Plan, num_warps: u32) -> Result<GpuPlan, CudaError> {
        let kernels = plan
            .launches
            .iter()
            .map(|l| {
                let abi = l.args.iter().map(|b| match b {
                    Binding::Buffer(_) => AbiArg::Buffer { len: 0 },
                    Binding::Scalar(s) => AbiArg::Scalar(*s),
                });
                device.load(&l.kernel, &device.launch_options(num_warps, abi))
            })
            .collect::<Result<_, _>>()?;
        Ok(GpuPlan { plan, kernels })
    }

    fn upload(&self, device: &CudaDevice, buffers: &Buffers) -> Result<DeviceBuffers, CudaError> {
        buffers.iter().map(|(name, b)| Ok((name.clone(), device.upload(b)?))).collect()
    }

    /// Enqueues every launch of the plan on `buffers`.
    fn enqueue(&self, device: &CudaDevice, buffers: &DeviceBuffers) -> Result<(), CudaError> {
        for (launch, kernel) in self.plan.launches.iter().zip(&self.kernels) {
            let args = launch
                .args
                .iter()
                .map(|b| match b {
                    Binding::Buffer(name) => {
                        buffers.get(name).map(DeviceArg::Buffer).ok_or_else(|| CudaError::BadArgs {
                            kernel: launch.kernel.name.clone(),
                            message: format!("buffer `{name}` is not in the plan"),
                        })
                    }
                    Binding::Scalar(s) => Ok(DeviceArg::Scalar(*s)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            device.launch(kernel, launch.grid, &args)?;
        }
        Ok(())
    }

    /// Warm-up, then `repeats` timed runs cycling over `rotations`; sorted seconds.
    fn time(
        &self,
        device: &CudaDevice,
        rotations: &[DeviceBuffers],
        opts: &BenchOptions,
    ) -> Result<Vec<f64>, CudaError> {
        let n = rotations.len();
        for i in 0..opts.warmup {
            self.enqueue(device, &rotations[i % n])?;
        }
        device.synchronize()?;
        let (start, end) = (device.timing_event()?, device.timing_event()?);
        let mut times = Vec::with_capacity(opts.repeats.max(1));
        for i in 0..opts.repeats.max(1) {
            device.record(&start)?;
            self.enqueue(device, &rotations[(opts.warmup + i) % n])?;
            device.record(&end)?;
            times.push(f64::from(device.elapsed_ms(&start, &end)?) * 1e-3);
        }
        device.synchronize()?;
        times.sort_by(f64::total_cmp);
        Ok(times)
    }
}

/// Measures the device's streaming read bandwidth and f32 multiply-add peak with kiln kernels.
pub fn measure_roofline(device: &CudaDevice, opts: &BenchOptions) -> Result<Roofline, BenchError> {
    // Bandwidth: one pass over a buffer of the working-set size, many blocks per SM.
    let programs = device.sm_count.max(1) * 32;
    let per_program = opts.working_set_bytes / 4 / u64::from(programs);
    let chunk = (per_program / u64::from(roofline::STREAM_BLOCK)).max(1) as u32 * roofline::STREAM_BLOCK;
    let stream = GpuPlan::load(device, roofline::stream_read(programs, chunk)?, device.num_warps)?;
    let x: Vec<f32> = (0..programs as usize * chunk as usize).map(|i| (i % 1024) as f32 * 1e-3).collect();
    let inputs = Buffers::from([("x".to_string(), kiln_ir::interp::HostBuffer::F32(x))]);
    let rotations = vec![stream.upload(device, &prepare_buffers("roofline", &stream.plan, &inputs)?)?];
    drop(inputs);
    let stream_opts = BenchOptions { warmup: 2, repeats: opts.repeats.clamp(5, 21), ..opts.clone() };
    let times = stream.time(device, &rotations, &stream_opts)?;
    let gbps = 4.0 * f64::from(programs) * f64::from(chunk) / median(&times) / 1e9;
    drop(rotations);

    let programs = device.sm_count.max(1) * 16;
    let iters = 20_000;
    let fma = GpuPlan::load(device, roofline::fma_peak(programs, iters)?, device.num_warps)?;
    let rotations = vec![fma.upload(device, &prepare_buffers("roofline", &fma.plan, &Buffers::new())?)?];
    let times = fma.time(device, &rotations, &stream_opts)?;
    let flops = 2.0 * f64::from(roofline::FMA_LANES) * f64::from(iters) * f64::from(programs);
    Ok(Roofline { gbps, gflops: flops / median(&times) / 1e9 })
}

/// Benchmarks one kernel on one shape and config (kernel knobs and `num_warps`) on the device.
pub fn bench(
    device: &CudaDevice,
    kernel: &dyn DynKernel,
    shape: &Args,
    config: &Args,
    opts: &BenchOptions,
    roofline: &Roofline,
) -> Result<BenchCase, BenchError> {
    let name = kernel.id().name();
    let shape = kernel.problem(&kernel.example_problem().overlaid(shape))?;
    let gpu = GpuConfig::split(config, device.num_warps)?;
    let config = kernel.target_default(&shape, TargetKind::Gpu)?.overlaid(&gpu.kernel);
    let loaded = GpuPlan::load(device, kernel.plan(&shape, &config)?, gpu.num_warps)?;
    let inputs = kernel.inputs(&shape, 7)?;
    let cost = kernel.cost(&shape, &loaded.plan, &inputs)?;
    let host = prepare_buffers(name, &loaded.plan, &inputs)?;

    // Correctness before speed: one run, downloaded and compared with the reference.
    let first = loaded.upload(device, &host)?;
    loaded.enqueue(device, &first)?;
    device.synchronize()?;
    let mut got = host.clone();
    for (buffer_name, b) in got.iter_mut() {
        device.download(&first[buffer_name], b)?;
    }
    drop(first);
    let reference = kernel.reference(&shape, &inputs)?;
    check_outputs(kernel, &shape, &loaded.plan, &got, &reference)?
        .map_err(|detail| BenchError::WrongResult { kernel: name.to_string(), detail })?;
    drop((got, inputs));

    let n_rot = rotation_count(&loaded.plan, opts.working_set_bytes);
    let rotations = (0..n_rot).map(|_| loaded.upload(device, &host)).collect::<Result<Vec<_>, _>>()?;
    drop(host);
    let times = loaded.time(device, &rotations, opts)?;
    let t = median(&times);
    let roof_time = (cost.bytes as f64 / (roofline.gbps * 1e9)).max(cost.flops as f64 / (roofline.gflops * 1e9));
    Ok(BenchCase {
        kernel: name.to_string(),
        shape: shape.to_string(),
        config: GpuConfig { kernel: config, num_warps: gpu.num_warps }.to_args().to_string(),
        target: format!("{} ({}, {})", device.target(), device.name, device.sm.name()),
        threads: (gpu.num_warps * 32) as usize,
        median_us: t * 1e6,
        min_us: times[0] * 1e6,
        max_us: times[times.len() - 1] * 1e6,
        gbps: cost.bytes as f64 / t / 1e9,
        gflops: cost.flops as f64 / t / 1e9,
        roofline_gbps: roofline.gbps,
        roofline_gflops: roofline.gflops,
        roofline_frac: roof_time / t,
        core_round_trip_ns: None,
        roofline_round_trip_ns: None,
    })
}

/// One row of `kiln gpu-check`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckRow {
    pub kernel: String,
    pub shape: String,
    pub config: String,
    /// `ok`, `MISMATCH` or `ERROR: ...`.
    pub status: String,
    /// The largest relative error over the case's outputs (conformance rows).
    pub max_rel_error: Option<f64>,
    /// The benchmark figures (headline rows).
    pub bench: Option<BenchCase>,
}

impl CheckRow {
    /// A case that could not run: its kernel and shape, no config, and the error as status.
    fn error(kernel: &str, shape: &str, error: impl std::fmt::Display) -> CheckRow {
        CheckRow {
            kernel: kernel.to_string(),
            shape: shape.to_string(),
            config: String::new(),
            status: format!("ERROR: {error}"),
            max_rel_error: None,
            bench: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.status == "ok"
    }
}

/// The conformance suite on the device: every kernel × its conformance shapes × up to
/// `max_configs` configs × every [`NUM_WARPS`] choice, fresh inputs, poisoned outputs, compared
/// with the reference.
pub fn conformance(device: &CudaDevice, max_configs: usize) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    for num_warps in NUM_WARPS {
        rows.extend(conformance_with(device, max_configs, num_warps));
    }
    rows
}

fn conformance_with(device: &CudaDevice, max_configs: usize, num_warps: u32) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    let mut exec = CudaExecutor { device, num_warps };
    for id in KernelId::ALL {
        let kernel = id.kernel();
        for (i, shape) in conformance_shapes(id).iter().enumerate() {
            let reports = Args::parse(shape).map_err(|e| e.to_string()).and_then(|shape| {
                sweep(kernel, &shape, &mut exec, 1000 + i as u64, max_configs).map_err(|e| e.to_string())
            });
            match reports {
                Ok(reports) => rows.extend(reports.iter().map(|r| CheckRow {
                    kernel: r.kernel.to_string(),
                    shape: r.shape.to_string(),
                    config: format!("{},num_warps={num_warps}", r.config),
                    status: if r.passed() { "ok".to_string() } else { format!("MISMATCH: {r}") },
                    max_rel_error: r.comparisons.iter().map(|c| c.rel_error).reduce(f64::max),
                    bench: None,
                })),
                Err(e) => rows.push(CheckRow::error(id.name(), shape, e)),
            }
        }
    }
    rows
}

/// The headline benchmarks ([`HEADLINE`]), each checked against the reference first.
pub fn headline(device: &CudaDevice, opts: &BenchOptions, roofline: &Roofline) -> Vec<CheckRow> {
    HEADLINE
        .iter()
        .map(|(id, shape)| {
            let case = Args::parse(shape).map_err(|e| e.to_string()).and_then(|s| {
                bench(device, id.kernel(), &s, &Args::default(), opts, roofline).map_err(|e| e.to_string())
            });
            match case {
                Ok(case) => CheckRow {
                    kernel: case.kernel.clone(),
                    shape: case.shape.clone(),
                    config: case.config.clone(),
                    status: "ok".to_string(),
                    max_rel_error: None,
                    bench: Some(case),
                },
                Err(e) => CheckRow::error(id.name(), shape, e),
            }
        })
        .collect()
}

/// The `kiln gpu-check` table: one row per case, conformance and benchmark alike.
pub fn render_check(rows: &[CheckRow]) -> String {
    let mut table = tabled::builder::Builder::default();
    table.push_record(["kernel", "shape", "config", "status", "max rel err", "median µs", "GB/s", "roofline"]);
    for r in rows {
        let status = if r.passed() { "ok".to_string() } else { r.status.lines().next().unwrap_or("").to_string() };
        table.push_record([
            r.kernel.clone(),
            r.shape.clone(),
            r.config.clone(),
            status,
            r.max_rel_error.map(|e| format!("{e:.1e}")).unwrap_or_default(),
            r.bench.as_ref().map(|b| format!("{:.1}", b.median_us)).unwrap_or_default(),
            r.bench.as_ref().map(|b| format!("{:.0}", b.gbps)).unwrap_or_default(),
            r.bench.as_ref().map(|b| format!("{:.0}%", b.roofline_frac * 100.0)).unwrap_or_default(),
        ]);
    }
    let mut out = table.build().with(tabled::settings::Style::rounded()).to_string();
    out.push('\n');
    for r in rows.iter().filter(|r| !r.passed()) {
        out += &format!("{} [{}] [{}]: {}\n", r.kernel, r.shape, r.config, r.status);
    }
    out
}
