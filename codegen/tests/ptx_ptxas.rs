//! Every library kernel's default config (and a sample of others) lowered to PTX and assembled by
//! `ptxas` for sm_80 and sm_90; registers and spills are recorded in a table printed by the test.
//! Each launch is specialised on its scalar arguments as a device launch is (so the vector
//! accesses are assembled too); the default config uses 4 warps, the others 8 and 2.
//!
//! `ptxas` comes from `KILN_PTXAS` (set by `scripts/test.sh`) or `PATH`; without it the test fails
//! with the error that says how to get it. Kernels the backend cannot lower yet must fail with
//! `PtxError::Unsupported`, and the kernels listed in [`MUST_LOWER`] must lower.

use kiln_codegen::ptx::{self, ptxas, PtxError, PtxOptions, Sm, Specialization};
use kiln_ir::interp::Scalar;
use kiln_kernels::registry;
use kiln_kernels::Binding;
use std::path::PathBuf;

/// Kernels the backend lowers today; a regression on any of them fails the test.
const MUST_LOWER: [&str; 8] =
    ["rmsnorm", "silu_mul", "rope", "softmax", "argmax", "embedding", "paged_kv_append", "paged_kv_gather"];

fn out_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ptx")
}

/// The default config of each kernel's example problem, plus up to `extra` other configs of its
/// legal space (spread evenly), as `(kernel, config text, launches)`.
fn cases(extra: usize) -> Vec<(String, String, Vec<kiln_kernels::plan::Launch>)> {
    let mut out = Vec::new();
    for k in registry::all() {
        let name = k.id().name().to_string();
        let shape = k.problem(&k.example_problem()).expect("example problem");
        let default = k.target_default(&shape, kiln_kernels::TargetKind::Gpu).expect("default config");
        let mut configs = vec![default.clone()];
        let space = k.space(&shape, &Default::default()).expect("space");
        if !space.is_empty() && extra > 0 {
            let stride = space.len().div_ceil(extra).max(1);
            configs.extend(space.into_iter().step_by(stride).filter(|c| *c != default).take(extra));
        }
        for config in configs {
            let plan = k.plan(&shape, &config).expect("plan");
            out.push((name.clone(), config.to_string(), plan.launches));
        }
    }
    // The CPU's prefill GEMM (`weights_lhs = 1`) is in every GPU tuning space too.
    let k = registry::lookup("dequant_gemm_w4").expect("registered");
    let shape = k.problem(&kiln_kernels::Args::parse("m=40,n=96,k=256,group=32,act=f16").unwrap()).expect("shape");
    let config = k.target_default(&shape, kiln_kernels::TargetKind::Cpu).expect("default config");
    assert_eq!(config.get("weights_lhs"), Some("1"), "{config}");
    out.push(("dequant_gemm_w4".into(), config.to_string(), k.plan(&shape, &config).expect("plan").launches));
    out
}

/// The specialisation of a launch: its integer scalars' values.
fn specialization(launch: &kiln_kernels::plan::Launch) -> Specialization {
    let values: Vec<Option<i64>> = launch
        .args
        .iter()
        .map(|b| match b {
            Binding::Scalar(Scalar::I32(x)) => Some(i64::from(*x)),
            Binding::Scalar(Scalar::U32(x)) => Some(i64::from(*x)),
            Binding::Scalar(Scalar::I8(x)) => Some(i64::from(*x)),
            Binding::Scalar(Scalar::U8(x)) => Some(i64::from(*x)),
            Binding::Scalar(_) | Binding::Buffer(_) => None,
        })
        .collect();
    Specialization::of_values(&values)
}

#[test]
fn every_lowerable_kernel_assembles_for_sm80_and_sm90() {
    if let Err(e) = ptxas::ptxas_path() {
        panic!("{e}");
    }
    let mut table =
        vec![format!("{:<24} {:<40} {:<6} {:>5} {:>6} {:>6}", "kernel", "config", "sm", "regs", "spill", "smem")];
    let mut lowered = std::collections::BTreeSet::new();
    let mut unsupported = Vec::new();
    let mut failures = Vec::new();
    let mut previous = String::new();
    let mut nth = 0;
    for (name, config, launches) in cases(2) {
        nth = if name == previous { nth + 1 } else { 0 };
        previous = name.clone();
        let num_warps = [4, 8, 2][nth % 3];
        let config = format!("{config},num_warps={num_warps}");
        for (i, launch) in launches.iter().enumerate() {
            for sm in Sm::ALL {
                let options = PtxOptions::new(sm).with_warps(num_warps).with_specialization(specialization(launch));
                let ptx = match ptx::emit(&launch.kernel, &options) {
                    Ok(ptx) => ptx,
                    Err(e @ PtxError::Unsupported { .. }) => {
                        unsupported.push(format!("{name} [{config}] launch {i}: {e}"));
                        continue;
                    }
                    Err(e) => {
                        failures.push(format!("{name} [{config}] launch {i}: {e}"));
                        continue;
                    }
                };
                let file = format!("{name}_{}_{i}", config.replace([' ', '=', ','], "_"));
                match ptxas::assemble(&ptx, &file, sm, &out_dir()) {
                    Ok(r) => {
                        lowered.insert(name.clone());
                        table.push(format!(
                            "{name:<24} {config:<40} {:<6} {:>5} {:>6} {:>6}",
                            sm.name(),
                            r.registers,
                            r.spill_stores + r.spill_loads,
                            r.shared_bytes
                        ));
                    }
                    Err(e) => failures.push(format!("{name} [{config}] launch {i}: {e}")),
                }
            }
        }
    }
    println!("{}", table.join("\n"));
    println!("not lowered yet:\n  {}", unsupported.join("\n  "));
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n\n"));
    let missing: Vec<&str> = MUST_LOWER.iter().copied().filter(|k| !lowered.contains(*k)).collect();
    assert!(missing.is_empty(), "kernels that must lower did not: {missing:?}\n{}", unsupported.join("\n"));
}

#[test]
fn a_rejected_module_is_a_typed_error_with_the_path_and_a_repro_command() {
    if let Err(e) = ptxas::ptxas_path() {
        panic!("{e}");
    }
    let bad = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry broken()\n{\n    frobnicate;\n}\n";
    match ptxas::assemble(bad, "broken", Sm::Sm80, &out_dir()) {
        Err(ptxas::PtxasError::Failed { ptx_path, command, stderr }) => {
            assert!(ptx_path.is_file(), "the PTX is saved at {}", ptx_path.display());
            assert!(command.contains("-arch=sm_80") && command.contains(&ptx_path.display().to_string()));
            assert!(stderr.contains("frobnicate") || stderr.contains("error"), "{stderr}");
        }
        other => panic!("expected PtxasError::Failed, got {other:?}"),
    }
}

#[test]
fn ptxas_v_output_is_parsed() {
    let text = "ptxas info    : Compiling entry function 'k' for 'sm_80'\n\
                ptxas info    : Function properties for k\n    \
                16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads\n\
                ptxas info    : Used 38 registers, 528 bytes smem, 368 bytes cmem[0]\n";
    let r = ptxas::parse_report(text).expect("a report");
    assert_eq!(r, ptxas::PtxasReport { registers: 38, spill_stores: 8, spill_loads: 12, shared_bytes: 528 });
    assert_eq!(ptxas::parse_report("nothing here"), None);
}
