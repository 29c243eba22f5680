//! Assembling PTX with NVIDIA's `ptxas` as a check: every emitted kernel must assemble, and
//! `-v` tells its registers, spills and shared memory.
//!
//! `ptxas` comes from `$KILN_PTXAS` (set by `scripts/test.sh`, which installs it from the
//! `nvidia-cuda-nvcc-cu12` PyPI package) or else from `PATH`. A missing `ptxas` or a rejected
//! module is a [`PtxasError`]; a rejection carries the saved PTX's path and the exact command.

use super::Sm;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `ptxas -v` reported for one kernel.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PtxasReport {
    pub registers: u32,
    /// Bytes spilled to local memory by stores (`N bytes spill stores`).
    pub spill_stores: u32,
    pub spill_loads: u32,
    /// Bytes of static shared memory (`N bytes smem`).
    pub shared_bytes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PtxasError {
    #[error(
        "ptxas not found ({why}); run scripts/test.sh, which installs it from the nvidia-cuda-nvcc-cu12 PyPI \
         package, or set KILN_PTXAS to a ptxas binary"
    )]
    Missing { why: String },
    #[error("ptxas rejected {ptx_path}\n{stderr}\nrepro: {command}")]
    Failed { ptx_path: PathBuf, command: String, stderr: String },
    #[error("ptxas accepted {ptx_path} but its -v output has no register count:\n{output}")]
    NoReport { ptx_path: PathBuf, output: String },
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The `ptxas` to run: `$KILN_PTXAS` if set, else `ptxas` on `PATH`.
pub fn ptxas_path() -> Result<PathBuf, PtxasError> {
    if let Some(p) = std::env::var_os("KILN_PTXAS") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(PtxasError::Missing { why: format!("KILN_PTXAS={} is not a file", p.display()) })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("ptxas"))
        .find(|p| p.is_file())
        .ok_or_else(|| PtxasError::Missing { why: "KILN_PTXAS is unset and no ptxas is on PATH".to_string() })
}

/// Writes `ptx` to `dir/name.ptx` and assembles it for `sm` with `ptxas -v`.
pub fn assemble(ptx: &str, name: &str, sm: Sm, dir: &Path) -> Result<PtxasReport, PtxasError> {
    let ptxas = ptxas_path()?;
    std::fs::create_dir_all(dir).map_err(|source| PtxasError::Io { path: dir.to_path_buf(), source })?;
    let ptx_path = dir.join(format!("{name}.{}.ptx", sm.name()));
    let out_path = dir.join(format!("{name}.{}.cubin", sm.name()));
    std::fs::write(&ptx_path, ptx).map_err(|source| PtxasError::Io { path: ptx_path.clone(), source })?;
    let arch = format!("-arch={}", sm.name());
    let command = format!("{} {arch} -v {} -o {}", ptxas.display(), ptx_path.display(), out_path.display());
    let output = Command::new(&ptxas)
        .arg(&arch)
        .arg("-v")
        .arg(&ptx_path)
        .arg("-o")
        .arg(&out_path)
        .output()
        .map_err(|e| PtxasError::Missing { why: format!("running {}: {e}", ptxas.display()) })?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() || text.contains("error") {
        return Err(PtxasError::Failed { ptx_path, command, stderr: text });
    }
    parse_report(&text).ok_or(PtxasError::NoReport { ptx_path, output: text })
}

/// Reads `ptxas -v` output: `Used 12 registers, 16 bytes smem, ...` and
/// `0 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads`.
pub fn parse_report(text: &str) -> Option<PtxasReport> {
    let number_before = |line: &str, what: &str| -> Option<u32> {
        let at = line.find(what)?;
        line[..at].trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let mut report = PtxasReport::default();
    let mut found = false;
    for line in text.lines() {
        if let Some(r) = number_before(line, " registers") {
            report.registers = r;
            found = true;
        }
        if let Some(s) = number_before(line, " bytes smem") {
            report.shared_bytes = s;
        }
        if let Some(s) = number_before(line, " bytes spill stores") {
            report.spill_stores = s;
        }
        if let Some(s) = number_before(line, " bytes spill loads") {
            report.spill_loads = s;
        }
    }
    found.then_some(report)
}
