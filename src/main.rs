//! The `kiln` binary: see `kiln --help`.

/// Large buffers (benchmark working sets, the KV cache, weights) on transparent huge pages.
#[global_allocator]
static ALLOC: kiln_runtime::host_mem::HugePageAlloc = kiln_runtime::host_mem::HugePageAlloc;

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = kiln::cli::Cli::parse();
    // Launches then start on this thread, with no hand-off per model step.
    let result = kiln_runtime::cpu::on_kernel_stack(|| kiln::cli::run(cli))
        .unwrap_or_else(|e| Err(kiln::cli::CliError::from(e)));
    match result {
        Ok(out) => {
            // A closed pipe (`kiln emit f.tir | head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
