//! The CUDA device without a GPU: the typed no-driver error, the resource checks made before a
//! launch, the parameter packing shared with the simulator, and the headline cases lowering
//! within the targets' limits (assembled by ptxas when `KILN_PTXAS` or `ptxas` is available).
//! On a machine with a driver, the no-driver test runs one kernel on the GPU instead.

use kiln_codegen::ptx::{self, ptxas, PtxOptions, Sm};
use kiln_ir::interp::Scalar;
use kiln_kernels::check::{conformance_shapes, sweep};
use kiln_kernels::{Args, KernelId};
use kiln_runtime::cuda::{self, check_registers, check_resources, CudaDevice, CudaError, DeviceLimits};
use kiln_runtime::cuda_bench::HEADLINE;
use kiln_runtime::ptx_abi::{self, AbiArg, ParamValue};

/// The thread kernels of `id`'s default plan for its first conformance shape.
fn lowered(id: KernelId, options: &PtxOptions) -> Vec<ptx::ThreadKernel> {
    let kernel = id.kernel();
    let shape = kernel.problem(&Args::parse(conformance_shapes(id)[0]).unwrap()).unwrap();
    let config = kernel.target_default(&shape, kiln_kernels::TargetKind::Gpu).unwrap();
    let plan = kernel.plan(&shape, &config).unwrap();
    plan.launches.iter().map(|l| ptx::lower(&l.kernel, options).unwrap()).collect()
}

#[test]
fn opening_without_a_driver_is_a_typed_error() {
    if cuda::driver_present() {
        eprintln!("a CUDA driver is present: running rmsnorm's conformance on cuda:0 instead");
        let device = CudaDevice::open(0).expect("the driver is present, so device 0 opens");
        let id = KernelId::Rmsnorm;
        let shape = Args::parse(conformance_shapes(id)[0]).unwrap();
        let reports =
            sweep(id.kernel(), &shape, &mut cuda::CudaExecutor { device: &device, num_warps: device.num_warps }, 5, 2)
                .unwrap();
        for r in &reports {
            assert!(r.passed(), "{r}");
        }
        return;
    }
    match CudaDevice::open(0) {
        Err(e @ CudaError::NoDriver(_)) => {
            let text = e.to_string();
            assert!(text.starts_with("no CUDA driver found (libcuda.so)"), "{text}");
        }
        Err(other) => panic!("expected NoDriver, got {other}"),
        Ok(_) => panic!("no driver library is loadable, yet the device opened"),
    }
}

#[test]
fn targets_parse_as_cuda_n() {
    assert_eq!(cuda::parse_target("cuda:0").unwrap(), 0);
    assert_eq!(cuda::parse_target("cuda:3").unwrap(), 3);
    for bad in ["cuda", "cuda:", "cuda:x", "gpu:0", "cpu"] {
        let e = cuda::parse_target(bad).unwrap_err();
        assert!(matches!(e, CudaError::BadTarget(_)), "{bad}: {e}");
        assert!(e.to_string().contains("cuda:N"), "{e}");
    }
}

#[test]
fn too_many_threads_are_refused_with_the_limit_named() {
    let options = PtxOptions::new(Sm::Sm90).with_warps(32);
    let thread = &lowered(KernelId::SiluMul, &options)[0];
    assert_eq!(thread.threads, 1024);
    check_resources(thread, &DeviceLimits::for_sm(Sm::Sm90)).expect("1024 threads fit sm_90");
    let small = DeviceLimits { max_threads_per_block: 512, ..DeviceLimits::for_sm(Sm::Sm90) };
    match check_resources(thread, &small) {
        Err(CudaError::Resources { what, needed, limit, .. }) => {
            assert_eq!((what, needed, limit), ("threads per block", 1024, 512));
        }
        other => panic!("expected a Resources error, got {other:?}"),
    }
}

#[test]
fn too_much_shared_memory_is_refused_with_the_limit_named() {
    // Softmax reduces across the block through shared memory.
    let thread = &lowered(KernelId::Softmax, &PtxOptions::new(Sm::Sm80))[0];
    assert!(thread.shared_bytes > 0, "softmax's reduction uses shared memory");
    check_resources(thread, &DeviceLimits::for_sm(Sm::Sm80)).expect("fits the 48 KiB static limit");
    let limit = thread.shared_bytes - 1;
    let small = DeviceLimits { static_shared_bytes: limit, ..DeviceLimits::for_sm(Sm::Sm80) };
    let e = check_resources(thread, &small).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("bytes of static shared memory") && text.contains(&limit.to_string()), "{text}");
}

#[test]
fn too_many_registers_are_refused_with_the_limit_named() {
    let limits = DeviceLimits::for_sm(Sm::Sm90);
    check_registers("k", 64, 1024, &limits).expect("64 × 1024 = 65536 registers fit");
    let e = check_registers("k", 65, 1024, &limits).unwrap_err();
    assert!(e.to_string().contains("66560 registers per block") && e.to_string().contains("65536"), "{e}");
    let e = check_registers("k", 256, 32, &limits).unwrap_err();
    assert!(e.to_string().contains("registers per thread") && e.to_string().contains("255"), "{e}");
}

#[test]
fn packing_follows_the_declared_parameters() {
    // rope has buffers and scalars of several kinds; every launch of every kernel packs.
    for id in KernelId::ALL {
        let kernel = id.kernel();
        let shape = kernel.problem(&Args::parse(conformance_shapes(id)[0]).unwrap()).unwrap();
        let plan = kernel.plan(&shape, &kernel.target_default(&shape, kiln_kernels::TargetKind::Gpu).unwrap()).unwrap();
        for launch in &plan.launches {
            let thread = ptx::lower(&launch.kernel, &PtxOptions::new(Sm::Sm90)).unwrap();
            let args: Vec<AbiArg> = launch
                .args
                .iter()
                .map(|b| match b {
                    kiln_kernels::Binding::Buffer(name) => AbiArg::Buffer { len: plan.buffer(name).unwrap().len },
                    kiln_kernels::Binding::Scalar(s) => AbiArg::Scalar(*s),
                })
                .collect();
            let packed = ptx_abi::pack(&thread, args.iter().copied()).unwrap();
            assert_eq!(packed.len(), thread.params.len(), "{id}");
            let mut expect_buffer = 0;
            let mut i = 0;
            for a in &args {
                match a {
                    AbiArg::Buffer { len } => {
                        assert_eq!(packed[i].value, ParamValue::Pointer { buffer: expect_buffer }, "{id}");
                        assert_eq!(packed[i + 1].value, ParamValue::Word(*len as u64), "{id}");
                        assert_eq!((packed[i].size, packed[i + 1].size), (8, 8), "{id}");
                        expect_buffer += 1;
                        i += 2;
                    }
                    AbiArg::Scalar(s) => {
                        assert_eq!(packed[i].value, ParamValue::Word(ptx_abi::scalar_bits(*s)), "{id}");
                        i += 1;
                    }
                }
            }
            // One argument too few is refused, not misaligned.
            let e = ptx_abi::pack(&thread, args.iter().copied().skip(1)).unwrap_err();
            assert!(e.contains("PTX parameters"), "{e}");
        }
    }
}

#[test]
fn scalar_bits_extend_as_the_abi_says() {
    assert_eq!(ptx_abi::scalar_bits(Scalar::I8(-1)), 0xFFFF_FFFF);
    assert_eq!(ptx_abi::scalar_bits(Scalar::U8(200)), 200);
    assert_eq!(ptx_abi::scalar_bits(Scalar::I32(-2)), 0xFFFF_FFFE);
    assert_eq!(ptx_abi::scalar_bits(Scalar::F32(1.0)), 0x3F80_0000);
    assert_eq!(ptx_abi::scalar_bits(Scalar::F16(half::f16::ONE)), 0x3C00);
    assert_eq!(ptx_abi::scalar_bits(Scalar::Bool(true)), 1);
}

/// The headline benchmark cases lower for both targets within their limits, and assemble with
/// ptxas (registers checked against the register file) when it is available.
#[test]
fn headline_cases_lower_within_the_limits() {
    let ptxas_available = ptxas::ptxas_path().is_ok();
    if !ptxas_available {
        eprintln!("SKIPPING the ptxas half of this test: no ptxas (set KILN_PTXAS or run scripts/test.sh)");
    }
    let dir = std::env::temp_dir().join(format!("kiln-cuda-headline-{}", std::process::id()));
    for (id, shape) in HEADLINE {
        let kernel = id.kernel();
        let shape = kernel.problem(&kernel.example_problem().overlaid(&Args::parse(shape).unwrap())).unwrap();
        let plan = kernel.plan(&shape, &kernel.target_default(&shape, kiln_kernels::TargetKind::Gpu).unwrap()).unwrap();
        for sm in Sm::ALL {
            let options = PtxOptions::new(sm);
            let limits = DeviceLimits::for_sm(sm);
            for launch in &plan.launches {
                let thread = ptx::lower(&launch.kernel, &options).unwrap_or_else(|e| panic!("{id} [{shape}]: {e}"));
                check_resources(&thread, &limits).unwrap_or_else(|e| panic!("{id} [{shape}]: {e}"));
                if ptxas_available {
                    let text = ptx::print(&thread, sm);
                    let report = ptxas::assemble(&text, &thread.name, sm, &dir).unwrap_or_else(|e| panic!("{e}"));
                    check_registers(&thread.name, report.registers, thread.threads, &limits)
                        .unwrap_or_else(|e| panic!("{id} [{shape}]: {e}"));
                }
            }
        }
    }
}
