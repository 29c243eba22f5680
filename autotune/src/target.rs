//! Hardware targets the tuner knows by name (`cpu`, `cuda:N`) and their fingerprints: the
//! identity a tuning database is made for.

use kiln_codegen::cpu::CpuTarget;
use std::fmt;

/// A target named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The host CPU.
    Cpu,
    /// CUDA device `N`.
    Cuda(u32),
}

/// Why a target name was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum TargetError {
    #[error("unknown target `{0}` (valid targets: cpu, cuda:N with N a device index such as cuda:0)")]
    Unknown(String),
    #[error(
        "target `cuda:{0}` cannot be tuned: kiln has no CUDA backend yet (the PTX code generator is not built); \
         tune `--target cpu` instead"
    )]
    NoCudaBackend(u32),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        match text.trim() {
            "cpu" => Ok(Target::Cpu),
            t => match t.strip_prefix("cuda:").map(str::parse::<u32>) {
                Some(Ok(n)) => Ok(Target::Cuda(n)),
                _ => Err(TargetError::Unknown(text.to_string())),
            },
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Cpu => f.write_str("cpu"),
            Target::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Everything about a target that can change which config is fastest: for a CPU its model name,
/// its vector ISA and features (the codegen fingerprint) and the worker threads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    /// The kind of target, for the defaults that serve where nothing was tuned: CPU fingerprints
    /// begin with the codegen's `cpu:` (see [`CpuTarget::fingerprint`]), anything else is a GPU's.
    pub fn kind(&self) -> kiln_kernels::TargetKind {
        if self.0.starts_with("cpu") {
            kiln_kernels::TargetKind::Cpu
        } else {
            kiln_kernels::TargetKind::Gpu
        }
    }

    /// The host CPU run with `threads` workers.
    pub fn host_cpu(threads: usize) -> Fingerprint {
        Fingerprint::cpu(&CpuTarget::host(), &cpu_model_name(), threads)
    }

    pub fn cpu(target: &CpuTarget, model: &str, threads: usize) -> Fingerprint {
        Fingerprint(format!("{} | {} | threads={threads}", target.fingerprint(), model.trim()))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The CPU's model name from `/proc/cpuinfo` (Linux), else the architecture.
pub fn cpu_model_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
