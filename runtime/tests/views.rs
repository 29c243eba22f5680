//! `CpuDevice::run_views`: a kernel parameter bound to a window of a buffer sees exactly that
//! window (reads from its offset, writes nothing outside it), several disjoint windows of one
//! buffer may be bound to one launch, and a window past its buffer's end, overlapping windows or
//! a buffer of the wrong dtype are typed errors that run nothing.

use kiln_ir::interp::HostBuffer;
use kiln_kernels::{Args, Binding, KernelId};
use kiln_runtime::cpu::{CpuDevice, CpuError, View, ViewArg};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DIM: usize = 64;

/// `silu_mul` over one row of `DIM`: its launch and the order of its buffer parameters.
fn silu_mul() -> (kiln_kernels::Launch, Vec<String>) {
    let kernel = KernelId::SiluMul.kernel();
    let shape = kernel.problem(&Args::new().with("tokens", 1).with("dim", DIM).with("dtype", "f32")).unwrap();
    let config = kernel.target_default(&shape, kiln_kernels::TargetKind::Cpu).unwrap();
    let mut plan = kernel.plan(&shape, &config).unwrap();
    assert_eq!(plan.launches.len(), 1);
    let launch = plan.launches.remove(0);
    let names = launch
        .args
        .iter()
        .map(|b| match b {
            Binding::Buffer(name) => name.clone(),
            Binding::Scalar(s) => format!("scalar {s:?}"),
        })
        .collect();
    (launch, names)
}

/// The launch's arguments with `gate`, `up` and `out` bound to the given views.
fn bind(launch: &kiln_kernels::Launch, names: &[String], gate: View, up: View, out: View) -> Vec<ViewArg> {
    launch
        .args
        .iter()
        .zip(names)
        .map(|(b, name)| match (b, name.as_str()) {
            (Binding::Scalar(s), _) => ViewArg::Scalar(*s),
            (Binding::Buffer(_), "gate") => ViewArg::Buffer(gate),
            (Binding::Buffer(_), "up") => ViewArg::Buffer(up),
            (Binding::Buffer(_), "out") => ViewArg::Buffer(out),
            (Binding::Buffer(_), other) => panic!("unexpected buffer `{other}`"),
        })
        .collect()
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

#[test]
fn windows_of_one_buffer_are_separate_parameters() {
    let device = CpuDevice::host(Some(2)).unwrap();
    let (launch, names) = silu_mul();
    let module = device.load(&launch.kernel).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    // gate at 16, up right after it in the same buffer; out at 8 in a poisoned buffer.
    let input: Vec<f32> = (0..16 + 2 * DIM + 5).map(|_| rng.random_range(-3.0..3.0)).collect();
    let poison = f32::from_bits(0x7fc0_dead);
    let mut buffers = vec![HostBuffer::F32(input.clone()), HostBuffer::F32(vec![poison; 8 + DIM + 8])];
    let gate = View { buffer: 0, offset: 16, len: DIM };
    let up = View { buffer: 0, offset: 16 + DIM, len: DIM };
    let out = View { buffer: 1, offset: 8, len: DIM };
    device.run_views(&module, launch.grid, &mut buffers, &bind(&launch, &names, gate, up, out)).unwrap();
    let HostBuffer::F32(got) = &buffers[1] else { unreachable!() };
    for i in 0..DIM {
        let want = silu(f64::from(input[16 + i])) * f64::from(input[16 + DIM + i]);
        let err = (f64::from(got[8 + i]) - want).abs();
        assert!(err <= 1e-5 * want.abs().max(1.0), "out[{i}] = {} against {want}", got[8 + i]);
    }
    // Nothing outside the output window was written, and the input buffer is unchanged.
    assert!(got[..8].iter().chain(&got[8 + DIM..]).all(|v| v.to_bits() == poison.to_bits()));
    let HostBuffer::F32(kept) = &buffers[0] else { unreachable!() };
    assert_eq!(kept, &input);
}

#[test]
fn bad_windows_are_typed_errors() {
    let device = CpuDevice::host(Some(2)).unwrap();
    let (launch, names) = silu_mul();
    let module = device.load(&launch.kernel).unwrap();
    let fresh =
        || vec![HostBuffer::F32(vec![1.0; 3 * DIM]), HostBuffer::F32(vec![0.5; DIM]), HostBuffer::I32(vec![0; DIM])];
    let view = |buffer, offset, len| View { buffer, offset, len };
    let cases = [
        ("past the end", view(0, 0, DIM), view(0, 2 * DIM + 1, DIM), view(1, 0, DIM), "past the end"),
        ("overlapping", view(0, 0, DIM), view(0, DIM - 1, DIM), view(1, 0, DIM), "overlaps"),
        ("output over an input", view(0, 0, DIM), view(0, DIM, DIM), view(0, 2 * DIM - 4, DIM), "overlaps"),
        ("wrong dtype", view(0, 0, DIM), view(0, DIM, DIM), view(2, 0, DIM), "takes f32"),
        ("no such buffer", view(0, 0, DIM), view(0, DIM, DIM), view(7, 0, DIM), "buffer 7"),
    ];
    for (what, gate, up, out, message) in cases {
        let mut buffers = fresh();
        let err = device.run_views(&module, launch.grid, &mut buffers, &bind(&launch, &names, gate, up, out));
        match err {
            Err(CpuError::BadArgs { message: m, .. }) => assert!(m.contains(message), "{what}: {m}"),
            other => panic!("{what}: expected a BadArgs error, got {other:?}"),
        }
        // Refused before running: every buffer still holds what it held.
        assert_eq!(buffers, fresh(), "{what}: a refused launch wrote");
    }
}
