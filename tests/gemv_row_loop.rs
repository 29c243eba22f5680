//! The one-token row-loop GEMVs of `dequant_gemm_w4` (`row_loop = R`) on every backend, f32
//! products (x de-interleaved, then rows R at a time with k inner) and int8 products (`xq=i8`, `i8x2`:
//! x quantized, then rows R at a time, `128 / block_k` rows to a vector of i32 lanes), against the
//! reference on the interpreter, the CPU backend and the PTX backend in the SIMT simulator, on
//! ragged n, group sizes below and above the k tile, sym and asym, and split-K. The conformance
//! sweep samples only a few configs per shape, so these are named explicitly.

use kiln::kernels::check::{check, Executor, Interpreter};
use kiln::kernels::{lookup, Args};

const CASES: [(&str, &str); 14] = [
    ("m=1,n=37,k=256,group=32,act=f32", "block_m=1,block_n=16,block_k=64,split_k=1,row_loop=4"),
    ("m=2,n=21,k=256,group=64,act=f16,quant=sym", "block_m=1,block_n=8,block_k=128,split_k=1,row_loop=2"),
    ("m=1,n=19,k=384,group=128,act=f32", "block_m=1,block_n=32,block_k=32,split_k=1,row_loop=8"),
    ("m=1,n=30,k=512,group=32,act=f32", "block_m=1,block_n=8,block_k=64,split_k=4,row_loop=1"),
    // int8 products: a row per vector (block_k = 128), 2 and 4 rows per vector, ragged n.
    ("m=1,n=45,k=256,group=32,act=f32,xq=i8", "block_m=1,block_n=16,block_k=128,split_k=1,row_loop=8"),
    ("m=1,n=37,k=192,group=32,act=f32,quant=sym,xq=i8", "block_m=1,block_n=16,block_k=64,split_k=1,row_loop=8"),
    ("m=2,n=21,k=256,group=64,act=f16,xq=i8", "block_m=1,block_n=8,block_k=32,split_k=1,row_loop=4"),
    // Groups spanning several blocks of a step, and a step within a group; split-K.
    ("m=1,n=24,k=384,group=128,act=f32,xq=i8", "block_m=1,block_n=8,block_k=64,split_k=1,row_loop=2"),
    ("m=1,n=33,k=512,group=64,act=f32,quant=sym,xq=i8", "block_m=1,block_n=16,block_k=128,split_k=2,row_loop=4"),
    // Two digits per activation.
    ("m=1,n=37,k=192,group=32,act=f32,xq=i8x2", "block_m=1,block_n=16,block_k=64,split_k=1,row_loop=8"),
    ("m=2,n=29,k=256,group=128,act=f16,quant=sym,xq=i8x2", "block_m=1,block_n=8,block_k=128,split_k=1,row_loop=8"),
    // Group 32: sym's offset term in the weights' loop; asym's loops of mins after it, 16-group
    // tiles then a 2-group tail, and 16-group tiles alone over two splits.
    ("m=1,n=37,k=576,group=32,act=f32", "block_m=1,block_n=16,block_k=64,split_k=1,row_loop=8"),
    ("m=1,n=37,k=576,group=32,act=f32,quant=sym", "block_m=1,block_n=16,block_k=64,split_k=1,row_loop=8"),
    ("m=2,n=21,k=1024,group=32,act=f16", "block_m=1,block_n=8,block_k=128,split_k=2,row_loop=4"),
];

fn check_all(exec: &mut dyn Executor) {
    let kernel = lookup("dequant_gemm_w4").unwrap();
    for (i, (shape, config)) in CASES.iter().enumerate() {
        let report = check(kernel, &Args::parse(shape).unwrap(), &Args::parse(config).unwrap(), exec, 90 + i as u64)
            .unwrap_or_else(|e| panic!("[{shape}] [{config}]: {e}"));
        assert!(report.passed(), "{report}");
    }
}

#[test]
fn row_loop_in_the_interpreter() {
    check_all(&mut Interpreter);
}

#[test]
fn row_loop_on_the_cpu() {
    let device = kiln::runtime::cpu::CpuDevice::host(Some(2)).expect("the CPU device starts");
    check_all(&mut kiln::runtime::cpu::CpuExecutor { device: &device });
}

#[test]
fn row_loop_in_the_simt_simulator() {
    let options = kiln::codegen::ptx::PtxOptions::new(kiln::codegen::ptx::Sm::Sm80);
    check_all(&mut kiln::runtime::simt::SimtExecutor::new(options));
}
