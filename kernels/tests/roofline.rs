//! The roofline kernels compute what they claim (checked in the interpreter at small sizes), so
//! the bandwidth and peak they measure come from real work.

use kiln_ir::interp::HostBuffer;
use kiln_kernels::check::{prepare_buffers, run_plan, Interpreter};
use kiln_kernels::roofline::{fma_peak, stream_read, FMA_LANES, STREAM_BLOCK};
use kiln_kernels::Buffers;

#[test]
fn roofline_stream_read_sums_every_element() {
    let (programs, chunk) = (3u32, 2 * STREAM_BLOCK);
    let plan = stream_read(programs, chunk).unwrap();
    let x: Vec<f32> = (0..programs * chunk).map(|i| (i % 7) as f32 - 2.5).collect();
    let inputs = Buffers::from([("x".to_string(), HostBuffer::F32(x.clone()))]);
    let mut buffers = prepare_buffers("roofline", &plan, &inputs).unwrap();
    run_plan("roofline", &plan, &mut Interpreter, &mut buffers).unwrap();
    let HostBuffer::F32(out) = &buffers["out"] else { panic!("out is f32") };
    for p in 0..programs as usize {
        for lane in 0..STREAM_BLOCK as usize {
            let want: f32 = (0..2).map(|step| x[p * chunk as usize + step * STREAM_BLOCK as usize + lane]).sum();
            assert_eq!(out[p * STREAM_BLOCK as usize + lane], want);
        }
    }
    assert!(stream_read(1, 100).is_err(), "chunks must be whole blocks");
}

#[test]
fn roofline_fma_runs_the_chains() {
    let plan = fma_peak(2, 5).unwrap();
    let mut buffers = prepare_buffers("roofline", &plan, &Buffers::new()).unwrap();
    run_plan("roofline", &plan, &mut Interpreter, &mut buffers).unwrap();
    let HostBuffer::F32(out) = &buffers["out"] else { panic!("out is f32") };
    for lane in 0..FMA_LANES as usize {
        let mut acc = lane as f32 * 1e-3f32;
        for _ in 0..5 {
            acc = acc * 0.999 + 1e-3;
        }
        assert_eq!(out[lane], acc);
        assert_eq!(out[FMA_LANES as usize + lane], acc);
    }
}
