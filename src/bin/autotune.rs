//! The `autotune` binary: searches tile configurations of kiln's kernels on one hardware target
//! and writes the tuning database the runtime reads (`autotune --help`); `autotune show` prints a
//! database.

/// Large buffers (benchmark working sets, the KV cache, weights) on transparent huge pages.
#[global_allocator]
static ALLOC: kiln_runtime::host_mem::HugePageAlloc = kiln_runtime::host_mem::HugePageAlloc;

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_autotune::database::{Database, DbError};
use kiln_autotune::shapes::{self, ShapesError};
use kiln_autotune::space::TargetLimits;
use kiln_autotune::strategy::{GuidedOptions, Strategy};
use kiln_autotune::target::{Fingerprint, Target, TargetError};
use kiln_autotune::tuner::{tune_shape, Event, ShapeResult, TuneError, TuneOptions};
use kiln_kernels::{KernelError, KernelId};
use kiln_runtime::measure::{CpuMeasure, MeasureOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Search tile configurations of kiln's kernels on one hardware target and write a tuning
/// database: TOML, one file per target, read by the runtime to pick each kernel's config.
///
/// For every (kernel, shape) of the shape set, the legal configs are listed from the kernel's
/// knobs and pruned for the target, ranked by a roofline cost model, compiled in parallel and
/// measured one at a time: warm-up, the median of repeats over inputs rotated beyond the caches.
/// The fastest three are measured again in interleaved rounds before a winner is named.
/// Every candidate's output is checked against the kernel's f64 reference before it may win;
/// failures (compile error, wrong result, launch error, out of resources) are recorded, not fatal.
/// The default config is always measured. The database is rewritten atomically after each shape,
/// so an interrupted run keeps what was finished and never leaves a broken file.
///
/// Examples:
///
///   autotune --target cpu --kernels dequant_gemm_w4 --budget 30 --db cpu.toml
///
///   autotune --shapes my-shapes.toml --strategy exhaustive --db cpu.toml
///
///   autotune show cpu.toml
#[derive(Debug, Parser)]
#[command(name = "autotune", version, about, long_about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    tune: TuneArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a tuning database as tables: per kernel and bucket every measured config, the
    /// winner first.
    Show {
        /// The database file.
        path: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct TuneArgs {
    /// Hardware target: `cpu` (the host CPU) or `cuda:N` (not available until the PTX backend
    /// lands).
    #[arg(long, default_value = "cpu")]
    target: String,
    /// Kernels to tune, comma-separated (default: every kernel in the shape set).
    #[arg(long, value_delimiter = ',')]
    kernels: Vec<String>,
    /// Shape set: `smollm2` (SmolLM2-135M), `llama-8b`, or a TOML file of `[[shape]]` tables with
    /// `kernel = "NAME"` and `shape = "key=value,..."`. The model sets include decode (m = 1),
    /// speculative verify (m = batch × (k + 1): 5 and 9) and prefill shapes.
    #[arg(long, default_value = "smollm2")]
    shapes: String,
    /// Time budget of the whole run in seconds, shared evenly by the shapes not yet tuned. The
    /// default config of a shape is measured even when the budget is spent.
    #[arg(long, default_value_t = 120.0)]
    budget: f64,
    /// `guided`: the cost model's best few, then a local search around the fastest; `exhaustive`:
    /// every legal config (in model order, until the budget is spent).
    #[arg(long, value_enum, default_value_t = StrategyArg::Guided)]
    strategy: StrategyArg,
    /// Guided search: stop a shape once its best config reaches this fraction of the roofline.
    #[arg(long, default_value_t = 0.9)]
    stop_at: f64,
    /// Guided search: measure at most this fraction of a shape's legal configs.
    #[arg(long, default_value_t = 0.25)]
    max_fraction: f64,
    /// Extra rounds in which the three fastest candidates of a shape are measured again,
    /// interleaved; the winner is the fastest by the median over rounds (one measurement on a
    /// busy machine can be off by tens of percent). 0 turns confirmation off.
    #[arg(long, default_value_t = 2)]
    confirm_rounds: usize,
    /// The database to create or update (required unless a subcommand is given).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Use a database made for another target anyway: its records are discarded and it is
    /// rewritten for this target.
    #[arg(long)]
    force: bool,
    /// Worker threads of the CPU device (default: all cores). Part of the target fingerprint.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    Guided,
    Exhaustive,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Shapes(#[from] ShapesError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Tune(#[from] TuneError),
    #[error(transparent)]
    Cpu(#[from] kiln_runtime::cpu::CpuError),
    #[error("measuring the roofline failed: {0}")]
    Roofline(#[from] kiln_runtime::bench::BenchError),
    #[error("{0}")]
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Candidates' launches then start on this thread, with no hand-off per timed run.
    let result = kiln_runtime::cpu::on_kernel_stack(|| match cli.command {
        Some(Command::Show { path }) => show(&path),
        None => tune(&cli.tune),
    })
    .unwrap_or_else(|e| Err(CliError::from(e)));
    match result {
        Ok(out) => {
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            // Like clap's own usage errors.
            ExitCode::from(if matches!(e, CliError::Usage(_)) { 2 } else { 1 })
        }
    }
}

fn tune(args: &TuneArgs) -> Result<String, CliError> {
    let Some(db_path) = &args.db else {
        return Err(CliError::Usage("--db PATH is required: the tuning database to create or update".into()));
    };
    if !(args.budget.is_finite() && args.budget > 0.0) {
        return Err(CliError::Usage(format!("--budget {} must be a positive number of seconds", args.budget)));
    }
    if !(args.max_fraction > 0.0 && args.max_fraction <= 1.0) {
        return Err(CliError::Usage(format!("--max-fraction {} must be in (0, 1]", args.max_fraction)));
    }
    match Target::parse(&args.target)? {
        Target::Cpu => {}
        Target::Cuda(n) => return Err(TargetError::NoCudaBackend(n).into()),
    }
    let kernels = args.kernels.iter().map(|k| KernelId::from_name(k.trim())).collect::<Result<Vec<_>, _>>()?;
    let shapes = shapes::select(&args.shapes, shapes::load(&args.shapes)?, &kernels)?;
    let strategy = match args.strategy {
        StrategyArg::Exhaustive => Strategy::Exhaustive,
        StrategyArg::Guided => Strategy::Guided(GuidedOptions {
            stop_at_roofline: args.stop_at,
            max_fraction: args.max_fraction,
            ..GuidedOptions::default()
        }),
    };

    // The budget covers the whole run, the roofline measurement included.
    let start = Instant::now();
    let device = kiln_runtime::cpu::CpuDevice::host(args.threads)?;
    let fingerprint = Fingerprint::host_cpu(device.threads());
    // Refuse a database of another target before spending any time.
    let mut db = Database::open_for(db_path, &fingerprint, args.force)?;
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("measuring the roofline");
    spinner.enable_steady_tick(Duration::from_millis(100));
    let measure = CpuMeasure::new(&device, MeasureOptions::default())?;
    spinner.finish_and_clear();

    let options =
        TuneOptions { confirm_rounds: args.confirm_rounds, ..TuneOptions::new(strategy, TargetLimits::cpu()) };
    let budget = Duration::from_secs_f64(args.budget);
    let mut results = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let left = budget.saturating_sub(start.elapsed());
        let deadline = Instant::now() + left / (shapes.len() - i) as u32;
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>3} {bar:30} {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{}/{}", i + 1, shapes.len()));
        let on_event = |e: Event<'_>| match e {
            Event::Start { kernel, shape, planned, .. } => {
                bar.set_length(planned as u64);
                bar.set_message(format!("{kernel} {shape}"));
            }
            Event::Measured { .. } => bar.inc(1),
        };
        let result = tune_shape(&measure, shape, &options, deadline, &on_event)?;
        bar.finish_and_clear();
        // Written after every shape, atomically: an interrupted run keeps the finished shapes.
        db.merge(result.records.iter().cloned());
        db.save(db_path)?;
        results.push(result);
    }
    let roofline = kiln_autotune::measure::Measure::roofline(&measure);
    let mut out = format!(
        "target {fingerprint}\nroofline {:.1} GB/s, {:.1} GFLOP/s; strategy {}; {:.1} s\n",
        roofline.gbps,
        roofline.gflops,
        options.strategy.name(),
        start.elapsed().as_secs_f64()
    );
    out.push_str(&tables(&results));
    out.push_str(&format!("wrote {}\n", db_path.display()));
    Ok(out)
}

/// One table per kernel of the run's results.
fn tables(results: &[ShapeResult]) -> String {
    let mut out = String::new();
    let mut kernels: Vec<KernelId> = results.iter().map(|r| r.kernel).collect();
    kernels.dedup();
    for kernel in kernels {
        let mut table = tabled::builder::Builder::default();
        table.push_record([
            "shape",
            "best config",
            "median µs",
            "roofline",
            "vs default",
            "measured / legal",
            "pruned",
            "failed",
        ]);
        for r in results.iter().filter(|r| r.kernel == kernel) {
            let (config, median, frac) = match &r.best {
                Some((c, m)) => {
                    (c.to_string(), format!("{:.1}", m.median_s * 1e6), format!("{:.0}%", m.roofline_frac * 100.0))
                }
                None => ("(none correct)".into(), "-".into(), "-".into()),
            };
            let speedup = match (r.speedup(), &r.default) {
                (Some(s), _) => format!("{s:.2}x"),
                (None, Err(e)) => format!("default: {}", e.status()),
                (None, Ok(_)) => "-".into(),
            };
            table.push_record([
                r.shape.to_string(),
                config,
                median,
                frac,
                speedup,
                format!("{} / {}", r.measured, r.legal),
                r.pruned.to_string(),
                r.failed.to_string(),
            ]);
        }
        out.push_str(&format!("\n{kernel}\n{}\n", table.build().with(tabled::settings::Style::rounded())));
    }
    out
}

fn show(path: &Path) -> Result<String, CliError> {
    let db = Database::open(path)?;
    let mut out = format!("{}\ntarget {}\n{} records\n", path.display(), db.target, db.records.len());
    let mut keys: Vec<(&str, &str, &str)> =
        db.records.iter().map(|r| (r.kernel.as_str(), r.ir_hash.as_str(), r.bucket.as_str())).collect();
    keys.sort();
    keys.dedup();
    let mut kernels: Vec<&str> = keys.iter().map(|k| k.0).collect();
    kernels.dedup();
    for kernel in kernels {
        let mut table = tabled::builder::Builder::default();
        table.push_record(["bucket", "config", "status", "median µs", "spread µs", "roofline", "", "kiln / IR"]);
        for &(_, hash, bucket) in keys.iter().filter(|k| k.0 == kernel) {
            let mut records: Vec<_> =
                db.records.iter().filter(|r| r.kernel == kernel && r.ir_hash == hash && r.bucket == bucket).collect();
            // In lookup's order: correct, confirmed, fastest, config text; failures last.
            records.sort_by(|a, b| kiln_autotune::database::lookup_order(a, b));
            for (i, r) in records.iter().enumerate() {
                let mut mark = Vec::new();
                if i == 0 && r.is_ok() {
                    mark.push("best");
                }
                if r.default {
                    mark.push("default");
                }
                if r.confirmed() {
                    mark.push("confirmed");
                }
                let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
                table.push_record([
                    if i == 0 { bucket.to_string() } else { String::new() },
                    r.config.clone(),
                    if r.detail.is_empty() {
                        r.status.clone()
                    } else {
                        format!("{}: {}", r.status, truncate(&r.detail, 60))
                    },
                    fmt(r.median_us),
                    match (r.min_us, r.max_us) {
                        (Some(a), Some(b)) => format!("{a:.1}–{b:.1}"),
                        _ => "-".into(),
                    },
                    r.roofline_frac.map_or("-".into(), |f| format!("{:.0}%", f * 100.0)),
                    mark.join(", "),
                    format!("{} / {}", r.kiln_version, hash),
                ]);
            }
        }
        out.push_str(&format!("\n{kernel}\n{}\n", table.build().with(tabled::settings::Style::rounded())));
    }
    Ok(out)
}

/// The first `n` characters of `s`, with an ellipsis when cut (the full text is in the file).
fn truncate(s: &str, n: usize) -> String {
    let first_line = s.lines().next().unwrap_or("");
    if first_line.chars().count() <= n && first_line.len() == s.len() {
        s.to_string()
    } else {
        format!("{}…", first_line.chars().take(n).collect::<String>())
    }
}
