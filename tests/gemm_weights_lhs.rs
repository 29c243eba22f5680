//! The weights-left dot path of `dequant_gemm_w4` (`weights_lhs = 1`, the CPU's prefill GEMM):
//! its two launches (x de-interleaved and transposed, then `yᵀ` tiles of weight tiles read as
//! they lie times rows of the transposed x, stored transposed) against the reference on the
//! interpreter, the CPU backend and the PTX backend in the SIMT simulator: m and n ragged
//! against the tiles, one and several 32-column blocks per k step, groups of 32 to 128, sym and
//! asym, f16 and f32 activations, and split-K with an empty last split. The conformance sweep
//! samples only a few configs per shape, so these are named explicitly.

use kiln::kernels::check::{check, Executor, Interpreter};
use kiln::kernels::{lookup, Args};

const CASES: [(&str, &str); 5] = [
    ("m=70,n=100,k=256,group=32,act=f32,quant=sym", "block_m=64,block_n=64,block_k=32,split_k=1,gemv=0,weights_lhs=1"),
    ("m=33,n=45,k=384,group=128,act=f16,quant=asym", "block_m=32,block_n=16,block_k=64,split_k=1,gemv=0,weights_lhs=1"),
    ("m=20,n=24,k=256,group=64,act=f32,quant=asym", "block_m=16,block_n=32,block_k=128,split_k=2,gemv=0,weights_lhs=1"),
    ("m=17,n=33,k=160,group=32,act=f16,quant=sym", "block_m=16,block_n=16,block_k=32,split_k=4,gemv=0,weights_lhs=1"),
    ("m=130,n=16,k=64,group=64,act=f32,quant=asym", "block_m=128,block_n=16,block_k=64,split_k=1,gemv=0,weights_lhs=1"),
];

fn check_all(exec: &mut dyn Executor) {
    let kernel = lookup("dequant_gemm_w4").unwrap();
    for (i, (shape, config)) in CASES.iter().enumerate() {
        let report = check(kernel, &Args::parse(shape).unwrap(), &Args::parse(config).unwrap(), exec, 40 + i as u64)
            .unwrap_or_else(|e| panic!("[{shape}] [{config}]: {e}"));
        assert!(report.passed(), "{report}");
    }
}

#[test]
fn weights_lhs_in_the_interpreter() {
    check_all(&mut Interpreter);
}

#[test]
fn weights_lhs_on_the_cpu() {
    let device = kiln::runtime::cpu::CpuDevice::host(Some(2)).expect("the CPU device starts");
    check_all(&mut kiln::runtime::cpu::CpuExecutor { device: &device });
}

#[test]
fn weights_lhs_in_the_simt_simulator() {
    let options = kiln::codegen::ptx::PtxOptions::new(kiln::codegen::ptx::Sm::Sm80);
    check_all(&mut kiln::runtime::simt::SimtExecutor::new(options));
}

/// The configs are legal, and a config asking for the weights-left path off the dot path, with a
/// k step that cuts a 32-column block, or with int8 activations is a constraint error naming it.
#[test]
fn weights_lhs_constraints_are_typed_errors() {
    let kernel = lookup("dequant_gemm_w4").unwrap();
    let plan_err = |shape: &str, config: &str| {
        kernel.plan(&Args::parse(shape).unwrap(), &Args::parse(config).unwrap()).err().map(|e| e.to_string())
    };
    for (shape, config) in CASES {
        assert_eq!(plan_err(shape, config), None, "[{shape}] [{config}]");
    }
    let shape = "m=40,n=64,k=256,group=32,act=f32";
    let e = plan_err(shape, "block_m=1,block_n=16,block_k=32,split_k=1,gemv=1,weights_lhs=1").unwrap();
    assert!(e.contains("weights_lhs = 1") && e.contains("gemv = 0"), "{e}");
    let e = plan_err(shape, "block_m=32,block_n=16,block_k=16,split_k=1,gemv=0,weights_lhs=1").unwrap();
    assert!(e.contains("multiple of 32"), "{e}");
    let e =
        plan_err(&format!("{shape},xq=i8"), "block_m=1,block_n=16,block_k=32,split_k=1,gemv=1,weights_lhs=1").unwrap();
    assert!(e.contains("weights_lhs"), "{e}");
    let e = plan_err(shape, "block_m=32,block_n=16,block_k=32,split_k=1,gemv=0,weights_lhs=2").unwrap();
    assert!(e.contains("weights_lhs = 2"), "{e}");
}
