//! The `kiln` command line: argument definitions and the commands they run.
//!
//! Commands return a [`CliError`] instead of printing and exiting, so tests can drive them and the
//! binary decides how to report.

use clap::{Parser, Subcommand, ValueEnum};
use kiln_ir::text;
use std::path::{Path, PathBuf};

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
    /// Parse, verify and print a kernel written in the `.tir` text form.
    ///
    /// The kernel is printed in canonical form (types on every value, one instruction a line).
    /// A malformed file reports `FILE:LINE:COL:` with what was expected; an ill-typed kernel
    /// reports every verifier error, each at its line and column. Exit status 1 on any error.
    Emit(EmitArgs),
}

#[derive(Debug, clap::Args)]
pub struct EmitArgs {
    /// The `.tir` file to read (`-` reads standard input).
    pub file: PathBuf,
    /// What to print. Only the tile IR exists so far; the C and PTX backends add their formats.
    #[arg(long, value_enum, default_value_t = EmitFormat::Ir)]
    pub format: EmitFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EmitFormat {
    /// The tile IR text form.
    Ir,
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
}

/// Runs a parsed command line and returns what to print on success.
pub fn run(cli: Cli) -> Result<String, CliError> {
    match cli.command {
        Command::Emit(args) => emit(&args),
    }
}

fn emit(args: &EmitArgs) -> Result<String, CliError> {
    let path = args.file.display().to_string();
    let src = read_source(&args.file).map_err(|source| CliError::Read { path: path.clone(), source })?;
    let (kernel, map) =
        text::parse_with_source_map(&src).map_err(|source| CliError::Parse { path: path.clone(), source })?;
    if let Err(errs) = kiln_ir::verify(&kernel) {
        return Err(CliError::Verify { rendered: text::render_verify_errors(&errs, &map, &path) });
    }
    match args.format {
        EmitFormat::Ir => Ok(text::print(&kernel)),
    }
}

fn read_source(path: &Path) -> std::io::Result<String> {
    if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
}
