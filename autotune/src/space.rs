//! Legal config spaces: a kernel's own `space(problem, limits)`, narrowed for a target before
//! anything is compiled, each survivor with the cost model's estimate.
//!
//! Pruning, in order: the kernel's limits ([`SpaceLimits`]: the largest tile a program may hold,
//! and the kernel's divisibility rules), a plan that builds (a config the kernel refuses is
//! pruned with the kernel's reason), and the per-program tile footprint against the target's
//! budget (the CPU worker stack that holds tiles; on a GPU this is where shared memory and
//! registers would go). The default config is never pruned: it is always measured.

use crate::measure::Roofline;
use crate::model::{self, Estimate};
use kiln_kernels::{Args, Cost, KernelError, KernelId, SpaceLimits, TargetKind};
use rayon::prelude::*;

/// What a target allows a config to use.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetLimits {
    pub space: SpaceLimits,
    /// Most bytes of tiles one program may hold (the sum over its values: an upper bound of what
    /// the generated code keeps live).
    pub max_program_bytes: u64,
    /// Whose default config is the space's default (the baseline candidates are measured
    /// against).
    pub kind: TargetKind,
}

impl TargetLimits {
    /// The CPU device: tiles live on 64 MiB worker stacks; keep a quarter for everything else.
    pub fn cpu() -> TargetLimits {
        TargetLimits { space: SpaceLimits::default(), max_program_bytes: 48 << 20, kind: TargetKind::Cpu }
    }
}

/// A legal candidate and its predicted cost.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub config: Args,
    pub estimate: Estimate,
}

/// A config the kernel lists but the target cannot run, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Pruned {
    pub config: Args,
    pub reason: String,
}

/// The legal space of one kernel for one problem on one target.
#[derive(Clone, Debug)]
pub struct LegalSpace {
    pub kernel: KernelId,
    /// The problem in canonical form.
    pub problem: Args,
    pub candidates: Vec<Candidate>,
    /// Index of the default config in `candidates`.
    pub default: usize,
    pub pruned: Vec<Pruned>,
    /// The work any config must do.
    pub cost: Cost,
}

impl LegalSpace {
    pub fn configs(&self) -> Vec<Args> {
        self.candidates.iter().map(|c| c.config.clone()).collect()
    }
}

/// Builds the legal space of `kernel` for `problem` (merged over the kernel's example problem,
/// like `kiln bench` does, so partial shapes work).
pub fn legal_space(
    kernel: KernelId,
    problem: &Args,
    limits: &TargetLimits,
    roofline: &Roofline,
    parallelism: usize,
) -> Result<LegalSpace, KernelError> {
    let k = kernel.kernel();
    let problem = k.problem(&k.example_problem().overlaid(problem))?;
    let default = k.target_default(&problem, limits.kind)?;
    let mut configs = k.space(&problem, &limits.space)?;
    if !configs.contains(&default) {
        configs.push(default.clone());
    }
    // Some kernels' cost reads the inputs (context lengths); one set serves every candidate.
    let default_plan = k.plan(&problem, &default)?;
    let inputs = k.inputs(&problem, 7)?;
    let cost = k.cost(&problem, &default_plan, &inputs)?;
    drop(inputs);

    let judged: Vec<Result<Candidate, Pruned>> = configs
        .par_iter()
        .map(|config| {
            let plan =
                k.plan(&problem, config).map_err(|e| Pruned { config: config.clone(), reason: e.to_string() })?;
            let estimate = model::estimate(&plan, cost, roofline, parallelism);
            if estimate.program_bytes > limits.max_program_bytes && *config != default {
                return Err(Pruned {
                    config: config.clone(),
                    reason: format!(
                        "tiles of one program take {} KiB, over the target's {} KiB",
                        estimate.program_bytes >> 10,
                        limits.max_program_bytes >> 10
                    ),
                });
            }
            Ok(Candidate { config: config.clone(), estimate })
        })
        .collect();
    let (mut candidates, mut pruned) = (Vec::new(), Vec::new());
    for j in judged {
        match j {
            Ok(c) => candidates.push(c),
            Err(p) => pruned.push(p),
        }
    }
    let Some(default_index) = candidates.iter().position(|c| c.config == default) else {
        // The default's plan built above, so it cannot have been pruned.
        return Err(KernelError::Constraint {
            kernel: kernel.name(),
            constraint: format!("the default config {default} is not in its own legal space"),
        });
    };
    Ok(LegalSpace { kernel, problem, candidates, default: default_index, pruned, cost })
}
