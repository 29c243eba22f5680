//! The `autotune` binary: searches tile configurations per hardware target and writes a tuning
//! database. The tuner itself (`kiln-autotune`) is not built yet, so this binary only explains
//! itself and refuses to run.

use clap::Parser;
use std::process::ExitCode;

/// Search tile configurations for kiln's kernels on one hardware target and write a tuning
/// database (TOML, one file per target).
///
/// Not available yet: kiln has no kernel library or backend to tune so far. The command exists so
/// that deployments can already reference it; it exits with status 2 and does nothing.
#[derive(Debug, Parser)]
#[command(name = "autotune", version, about, long_about)]
struct Args {
    /// Hardware target: `cpu` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    target: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    eprintln!(
        "error: autotune cannot tune for `{}` yet: kiln has no kernel library or code generator to tune so far",
        args.target
    );
    ExitCode::from(2)
}
