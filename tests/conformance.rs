//! The conformance suite, written once and instantiated per backend: every kernel of the library
//! on several shapes (ragged ones included: sizes that are not multiples of any tile) and a spread
//! of its configs, with fresh random inputs and poisoned outputs, against the naive reference.
//!
//! `conformance_suite!(name, executor)` makes one test per kernel, named `name::kernel`.

use kiln::kernels::check::{sweep, Executor};
use kiln::kernels::{Args, KernelId};

/// Shapes each kernel is checked on, by backend-independent problem keys.
fn shapes(id: KernelId) -> &'static [&'static str] {
    match id {
        KernelId::DequantGemmW4 => &[
            "m=1,n=45,k=256,group=32,quant=sym,act=f32",
            "m=3,n=70,k=384,group=128,quant=asym,act=f16",
            // Multi-row GEMV: m ragged against its 8-row default tile.
            "m=5,n=40,k=192,group=32,quant=sym,act=f32",
            "m=11,n=36,k=128,group=64,quant=asym,act=f16",
            "m=17,n=33,k=128,group=64,quant=asym,act=f32",
        ],
        KernelId::Q8Gemv => &["m=1,n=77,k=96,act=f32", "m=5,n=40,k=160,act=f16,out=f16", "m=9,n=33,k=128,act=f32"],
        KernelId::Embedding => &["tokens=5,vocab=37,dim=96,dtype=f32", "tokens=3,vocab=10,dim=64,dtype=f16"],
        KernelId::PagedKvAppend => &[
            "tokens=7,kv_heads=3,head_dim=64,block=16,n_blocks=4",
            "tokens=5,kv_heads=2,head_dim=128,block=5,n_blocks=9,dtype=f32",
        ],
        KernelId::PagedKvGather => &[
            "batch=3,ctx=37,kv_heads=3,head_dim=64,block=16",
            "batch=2,ctx=20,kv_heads=1,head_dim=128,block=8,dtype=f32",
        ],
        KernelId::AttentionDecodePaged => &[
            "batch=2,q_len=1,ctx=70,heads=9,kv_heads=3,head_dim=64,block=16",
            "batch=1,q_len=4,ctx=45,heads=4,kv_heads=1,head_dim=128,block=8,dtype=f32",
            "batch=3,q_len=3,ctx=33,heads=8,kv_heads=2,head_dim=64,block=5",
        ],
        KernelId::AttentionPrefill => &[
            "batch=3,seq=37,heads=9,kv_heads=3,head_dim=64",
            "batch=1,seq=20,heads=4,kv_heads=4,head_dim=128,dtype=f32",
        ],
        KernelId::Rmsnorm => {
            &["tokens=3,dim=100,dtype=f32", "tokens=2,dim=576,dtype=f16,fused=1", "tokens=1,dim=65,dtype=bf16"]
        }
        KernelId::Rope => &[
            "tokens=3,heads=9,kv_heads=3,head_dim=64,max_pos=40,base=100000,variant=adjacent",
            "tokens=2,heads=4,kv_heads=2,head_dim=32,max_pos=9,variant=half,dtype=f16",
        ],
        KernelId::SiluMul => &["tokens=3,dim=100,dtype=f16", "tokens=2,dim=1000,dtype=bf16"],
        KernelId::Argmax => &["rows=3,vocab=1000,dtype=f32", "rows=2,vocab=77,dtype=f16"],
        KernelId::Softmax => &["rows=3,vocab=1000,dtype=f32,temperature=0.7", "rows=2,vocab=77,dtype=f16"],
    }
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

// The PTX backend, run by the SIMT simulator (no GPU needed), 4 warps per program.
conformance_suite!(
    simt,
    kiln::runtime::simt::SimtExecutor { options: kiln::codegen::ptx::PtxOptions::new(kiln::codegen::ptx::Sm::Sm80) }
);
