//! The conformance suite, written once and instantiated per backend: every kernel of the library
//! on several shapes (ragged ones included: sizes that are not multiples of any tile) and a spread
//! of its configs, with fresh random inputs and poisoned outputs, against the naive reference.
//!
//! `conformance_suite!(name, executor)` makes one test per kernel, named `name::kernel`.

use kiln::kernels::check::{sweep, Executor};
use kiln::kernels::{Args, KernelId};

/// Shapes each kernel is checked on (shared with `kiln gpu-check`).
fn shapes(id: KernelId) -> &'static [&'static str] {
    kiln::kernels::check::conformance_shapes(id)
}

/// Checks one kernel on every shape of its list with up to three configs each.
fn check_kernel(id: KernelId, exec: &mut dyn Executor) {
    let kernel = id.kernel();
    for (i, shape) in shapes(id).iter().enumerate() {
        let shape = Args::parse(shape).unwrap();
        let reports = sweep(kernel, &shape, exec, 1000 + i as u64, 3).unwrap_or_else(|e| panic!("{id} [{shape}]: {e}"));
        for r in &reports {
            assert!(r.passed(), "{r}");
        }
    }
}

macro_rules! conformance_suite {
    ($backend:ident, $exec:expr) => {
        mod $backend {
            use super::*;
            #[test]
            fn dequant_gemm_w4() {
                check_kernel(KernelId::DequantGemmW4, &mut $exec);
            }
            #[test]
            fn q8_gemv() {
                check_kernel(KernelId::Q8Gemv, &mut $exec);
            }
            #[test]
            fn embedding() {
                check_kernel(KernelId::Embedding, &mut $exec);
            }
            #[test]
            fn paged_kv_append() {
                check_kernel(KernelId::PagedKvAppend, &mut $exec);
            }
            #[test]
            fn paged_kv_gather() {
                check_kernel(KernelId::PagedKvGather, &mut $exec);
            }
            #[test]
            fn attention_decode_paged() {
                check_kernel(KernelId::AttentionDecodePaged, &mut $exec);
            }
            #[test]
            fn attention_prefill() {
                check_kernel(KernelId::AttentionPrefill, &mut $exec);
            }
            #[test]
            fn rmsnorm() {
                check_kernel(KernelId::Rmsnorm, &mut $exec);
            }
            #[test]
            fn rope() {
                check_kernel(KernelId::Rope, &mut $exec);
            }
            #[test]
            fn silu_mul() {
                check_kernel(KernelId::SiluMul, &mut $exec);
            }
            #[test]
            fn argmax() {
                check_kernel(KernelId::Argmax, &mut $exec);
            }
            #[test]
            fn softmax() {
                check_kernel(KernelId::Softmax, &mut $exec);
            }
            /// The suite covers every kernel of the registry.
            #[test]
            fn covers_every_kernel() {
                assert_eq!(KernelId::ALL.len(), 12, "add the new kernel to conformance_suite!");
            }
        }
    };
}

conformance_suite!(interp, kiln::kernels::check::Interpreter);

/// One CPU device for the whole suite, so each kernel is compiled once per process (and once
/// per machine thanks to the on-disk cache).
fn cpu_device() -> &'static kiln::runtime::cpu::CpuDevice {
    static DEVICE: std::sync::OnceLock<kiln::runtime::cpu::CpuDevice> = std::sync::OnceLock::new();
    DEVICE.get_or_init(|| kiln::runtime::cpu::CpuDevice::host(Some(2)).expect("the CPU device starts"))
}

conformance_suite!(cpu, kiln::runtime::cpu::CpuExecutor { device: cpu_device() });

/// The configs the CPU runs by default (each kernel's `target_default` for the CPU) on the CPU
/// backend, where they differ from the portable default the suite always checks: two KV heads a
/// paged-attention program, the weights-left GEMM path, and so on.
#[test]
fn cpu_target_defaults() {
    let mut exec = kiln::runtime::cpu::CpuExecutor { device: cpu_device() };
    let mut checked = 0;
    for id in KernelId::ALL {
        let kernel = id.kernel();
        for (i, shape) in shapes(id).iter().enumerate() {
            let shape = Args::parse(shape).unwrap();
            let config = kernel.target_default(&shape, kiln::kernels::TargetKind::Cpu).unwrap();
            if config == kernel.default_config(&shape).unwrap() {
                continue;
            }
            let r = kiln::kernels::check::check(kernel, &shape, &config, &mut exec, 2000 + i as u64)
                .unwrap_or_else(|e| panic!("{id} [{shape}] {config}: {e}"));
            assert!(r.passed(), "{r}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} CPU defaults differ from the portable ones");
}

// The PTX backend, run by the SIMT simulator (no GPU needed), 4 warps per program.
conformance_suite!(
    simt,
    kiln::runtime::simt::SimtExecutor::new(kiln::codegen::ptx::PtxOptions::new(kiln::codegen::ptx::Sm::Sm80))
);

// The same suite with other block sizes: the layout, reductions and shared-memory staging all
// depend on the warps per block.
conformance_suite!(
    simt_1_warp,
    kiln::runtime::simt::SimtExecutor::new(
        kiln::codegen::ptx::PtxOptions::new(kiln::codegen::ptx::Sm::Sm80).with_warps(1)
    )
);
conformance_suite!(
    simt_2_warps,
    kiln::runtime::simt::SimtExecutor::new(
        kiln::codegen::ptx::PtxOptions::new(kiln::codegen::ptx::Sm::Sm90).with_warps(2)
    )
);
conformance_suite!(
    simt_8_warps,
    kiln::runtime::simt::SimtExecutor::new(
        kiln::codegen::ptx::PtxOptions::new(kiln::codegen::ptx::Sm::Sm80).with_warps(8)
    )
);
