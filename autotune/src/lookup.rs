//! The seam between tuning results and their users: a [`ConfigProvider`] answers "which config
//! should this kernel use for this problem", and says where the answer came from.
//!
//! The runtime asks through this trait only; the tuning database implements it (exact bucket, else
//! the nearest tuned bucket, else the default), and [`Defaults`] answers with each kernel's
//! default config when there is no database.

use kiln_kernels::{Args, KernelError, KernelId, TargetKind};

/// Where a config came from.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigSource {
    /// Tuned for exactly this problem bucket on this target.
    Exact,
    /// Tuned for another bucket (named) of the same kernel on this target.
    Nearest { bucket: Args },
    /// No tuning result applies: the kernel's default config.
    Default,
}

/// A chosen config and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub config: Args,
    pub source: ConfigSource,
}

/// Chooses configs for (kernel, problem) pairs.
pub trait ConfigProvider: Sync {
    /// The config to run `kernel` with on `problem` (a problem as the kernel's `from_args` reads
    /// it). Errors only when the problem itself is invalid.
    fn choose(&self, kernel: KernelId, problem: &Args) -> Result<Choice, KernelError>;
}

/// Every kernel's default config for a kind of target: what runs when nothing was tuned.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    target: TargetKind,
}

impl Defaults {
    /// The defaults of a CPU backend.
    pub fn cpu() -> Defaults {
        Defaults { target: TargetKind::Cpu }
    }

    /// The defaults of a GPU backend.
    pub fn gpu() -> Defaults {
        Defaults { target: TargetKind::Gpu }
    }
}

impl ConfigProvider for Defaults {
    fn choose(&self, kernel: KernelId, problem: &Args) -> Result<Choice, KernelError> {
        Ok(Choice { config: kernel.kernel().target_default(problem, self.target)?, source: ConfigSource::Default })
    }
}
