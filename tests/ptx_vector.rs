//! Vector memory accesses of the PTX backend on the kernels they matter for: the GPU default config
//! of each lowers with `ld.global.v4` / `.v2` on shapes whose sizes are multiples of 16 (the
//! scalar arguments are specialised on that), and the vectorised code computes the reference's
//! result in the SIMT simulator, for several block sizes. Ragged shapes, where vectorisation
//! must not happen, are the conformance suite's (`tests/conformance.rs`).

use kiln::codegen::ptx::{self, PtxOptions, Sm};
use kiln::kernels::check::sweep;
use kiln::kernels::{Args, Binding, KernelId, TargetKind};
use kiln::runtime::ptx_abi::{self, AbiArg};
use kiln::runtime::simt::SimtExecutor;

/// Small shapes with aligned sizes, one per kernel the GPU headline cases use.
const CASES: [(KernelId, &str); 4] = [
    (KernelId::DequantGemmW4, "m=1,n=64,k=256,group=32,quant=asym,act=f16"),
    (KernelId::PagedKvGather, "batch=2,ctx=48,kv_heads=2,head_dim=64,block=16"),
    (KernelId::AttentionDecodePaged, "batch=2,q_len=1,ctx=48,heads=4,kv_heads=2,head_dim=64,block=16"),
    (KernelId::Rmsnorm, "tokens=3,dim=512,dtype=f16"),
];

/// The PTX of every launch of `id`'s default config on `shape`, specialised as a launch is.
fn default_ptx(id: KernelId, shape: &str, num_warps: u32) -> String {
    let kernel = id.kernel();
    let shape = kernel.problem(&kernel.example_problem().overlaid(&Args::parse(shape).unwrap())).unwrap();
    let config = kernel.target_default(&shape, TargetKind::Gpu).unwrap();
    let plan = kernel.plan(&shape, &config).unwrap();
    let mut text = String::new();
    for launch in &plan.launches {
        let abi = launch.args.iter().map(|b| match b {
            Binding::Buffer(_) => AbiArg::Buffer { len: 0 },
            Binding::Scalar(s) => AbiArg::Scalar(*s),
        });
        let options = PtxOptions::new(Sm::Sm90).with_warps(num_warps).with_specialization(ptx_abi::specialization(abi));
        text += &ptx::emit(&launch.kernel, &options).unwrap();
    }
    text
}

#[test]
fn the_headline_kernels_load_with_vector_accesses() {
    for num_warps in [1, 4, 8] {
        for (id, shape) in CASES {
            let text = default_ptx(id, shape, num_warps);
            let vector = text.lines().filter(|l| l.contains("ld.global.v4") || l.contains("ld.global.v2")).count();
            assert!(vector > 0, "{id} [{shape}] at {num_warps} warps has no vector load:\n{text}");
        }
    }
    // Bytes and halves move 16 bytes per thread: one packed `.v4.b32` split into elements.
    for (id, shape) in &CASES[..3] {
        let text = default_ptx(*id, shape, 4);
        assert!(text.contains("ld.global.v4.b32"), "{id} [{shape}] has no 16-byte load:\n{text}");
    }
}

#[test]
fn unspecialised_scalars_keep_masked_accesses_scalar() {
    // Without knowing `n`, `offsets < n` may change inside a run: the mask is not constant.
    let src = "kernel v(@x: ptr<f32>, %n: i32, @y: ptr<f32>) {
  %i: i32[512] = arange 0, 512
  %nb: i32[512] = broadcast %n
  %m: bool[512] = cmp lt %i, %nb
  %v: f32[512] = load @x[%i], mask %m
  store @y[%i], %v, mask %m
}";
    let kernel = kiln::ir::text::parse(src).unwrap();
    let plain = ptx::emit(&kernel, &PtxOptions::new(Sm::Sm80)).unwrap();
    assert!(!plain.contains(".v4") && !plain.contains(".v2"), "{plain}");
    let spec = ptx::Specialization::of_values(&[None, Some(4096), None]);
    let special = ptx::emit(&kernel, &PtxOptions::new(Sm::Sm80).with_specialization(spec)).unwrap();
    assert_eq!(special.matches("ld.global.v4.f32").count(), 1, "{special}");
    assert_eq!(special.matches("st.global.v4.f32").count(), 1, "{special}");
}

#[test]
fn vectorised_kernels_match_the_reference_in_the_simulator() {
    for num_warps in [1, 4, 8] {
        let mut exec = SimtExecutor::new(PtxOptions::new(Sm::Sm80).with_warps(num_warps));
        for (i, (id, shape)) in CASES.iter().enumerate() {
            let shape = Args::parse(shape).unwrap();
            let reports = sweep(id.kernel(), &shape, &mut exec, 77 + i as u64, 2).unwrap();
            for r in &reports {
                assert!(r.passed(), "{num_warps} warps: {r}");
            }
        }
    }
}

const SHIFTED: &str = "kernel shifted(@x: ptr<f32>, %base: i32, @y: ptr<f32>) {
  %i: i32[512] = arange 0, 512
  %bb: i32[512] = broadcast %base
  %o: i32[512] = add %bb, %i
  %v: f32[512] = load @x[%o]
  store @y[%i], %v
}";

#[test]
fn each_launch_gets_the_variant_its_scalars_allow() {
    use kiln::ir::interp::{Arg, HostBuffer, Scalar};
    let kernel = kiln::ir::text::parse(SHIFTED).unwrap();
    let x: Vec<f32> = (0..600).map(|i| i as f32 * 0.5 + 1.0).collect();
    for base in [0, 2, 16, 33] {
        let mut args = vec![
            Arg::Buffer(HostBuffer::F32(x.clone())),
            Arg::Scalar(Scalar::I32(base)),
            Arg::Buffer(HostBuffer::F32(vec![f32::NAN; 512])),
        ];
        let options = kiln::runtime::simt::launch_options(&PtxOptions::new(Sm::Sm80), &args);
        let text = ptx::emit(&kernel, &options).unwrap();
        assert_eq!(text.contains("ld.global.v4.f32"), base % 4 == 0, "base {base}:\n{text}");
        kiln::runtime::simt::run(&kernel, [1, 1, 1], &mut args, &PtxOptions::new(Sm::Sm80)).unwrap();
        let Arg::Buffer(HostBuffer::F32(y)) = &args[2] else { unreachable!() };
        assert!(y.iter().enumerate().all(|(i, &v)| v == x[i + base as usize]), "base {base}");
    }
}

#[test]
fn a_variant_run_with_scalars_it_does_not_admit_faults_on_alignment() {
    use kiln::codegen::ptx::sim;
    let kernel = kiln::ir::text::parse(SHIFTED).unwrap();
    let spec = ptx::Specialization::of_values(&[None, Some(16), None]);
    assert!(!spec.admits(&ptx::Specialization::of_values(&[None, Some(2), None])));
    let thread = ptx::lower(&kernel, &PtxOptions::new(Sm::Sm80).with_specialization(spec)).unwrap();
    let mut memory = vec![vec![0u8; 600 * 4], vec![0u8; 512 * 4]];
    let params = [sim::buffer_address(0), 600, 2, sim::buffer_address(1), 512];
    let e = sim::run(&thread, [1, 1, 1], &params, &mut memory).unwrap_err();
    assert!(e.to_string().contains("misaligned 16-byte access"), "{e}");
}

#[test]
fn narrow_elements_move_sixteen_bytes_per_thread_both_ways() {
    use kiln::ir::interp::{Arg, HostBuffer};
    let src = "kernel copy(@x: ptr<i8>, @y: ptr<i8>, @h: ptr<f16>, @g: ptr<f16>) {
  %i: i32[4096] = arange 0, 4096
  %v: i8[4096] = load @x[%i]
  %one: i8 = const 1
  %ones: i8[4096] = broadcast %one
  %w: i8[4096] = add %v, %ones
  store @y[%i], %w
  %j: i32[2048] = arange 0, 2048
  %a: f16[2048] = load @h[%j]
  store @g[%j], %a
}";
    let kernel = kiln::ir::text::parse(src).unwrap();
    let text = ptx::emit(&kernel, &PtxOptions::new(Sm::Sm80)).unwrap();
    // 4096 bytes and 2048 halves over 128 threads: two 16-byte runs each.
    assert_eq!(text.matches("ld.global.v4.b32").count(), 4, "{text}");
    assert_eq!(text.matches("st.global.v4.b32").count(), 4, "{text}");
    let x: Vec<i8> = (0..4096).map(|i| (i * 37 % 256) as u8 as i8).collect();
    let h: Vec<half::f16> = (0..2048).map(|i| half::f16::from_f32(i as f32 * 0.25 - 100.0)).collect();
    let mut args = vec![
        Arg::Buffer(HostBuffer::I8(x.clone())),
        Arg::Buffer(HostBuffer::I8(vec![0x55; 4096])),
        Arg::Buffer(HostBuffer::F16(h.clone())),
        Arg::Buffer(HostBuffer::F16(vec![half::f16::NAN; 2048])),
    ];
    kiln::runtime::simt::run(&kernel, [1, 1, 1], &mut args, &PtxOptions::new(Sm::Sm80)).unwrap();
    let (Arg::Buffer(HostBuffer::I8(y)), Arg::Buffer(HostBuffer::F16(g))) = (&args[1], &args[3]) else {
        unreachable!()
    };
    assert!(y.iter().zip(&x).all(|(&y, &x)| y == x.wrapping_add(1)), "bytes: {:?}", &y[..32]);
    assert!(g.iter().zip(&h).all(|(a, b)| a.to_bits() == b.to_bits()), "halves: {:?}", &g[..8]);
}
