//! kiln's kernel library: each kernel as a `Problem`, tunable knobs, `build(problem, config) ->
//! ir::Kernel`, a launch grid and a naive f64 reference written without the IR.
//!
//! Empty until the kernel-library issue; the example kernels in `examples/` show the builder API.
//!
//! Architecture Invariant: `kernels` know no backends; they produce IR and references only.
