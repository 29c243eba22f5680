//! Lowering to PTX on small `.tir` kernels: the text's shape (header, parameters in tile-IR order,
//! registers) and the typed errors for what the backend cannot lower, never a panic.

use kiln_codegen::ptx::{self, PtxError, PtxOptions, Sm};
use kiln_ir::text::parse;

fn emit(src: &str, options: &PtxOptions) -> Result<String, PtxError> {
    ptx::emit(&parse(src).expect("the test kernel parses"), options)
}

const VADD: &str = "kernel vadd(@x: ptr<f16>, %n: i32, @y: ptr<f32>) {
  %i: i32[256] = arange 0, 256
  %nb: i32[256] = broadcast %n
  %m: bool[256] = cmp lt %i, %nb
  %v: f16[256] = load @x[%i], mask %m
  %w: f32[256] = cast %v
  store @y[%i], %w, mask %m
}";

#[test]
fn the_module_header_and_the_parameters_follow_the_target_and_the_tile_ir_order() {
    for sm in Sm::ALL {
        let text = emit(VADD, &PtxOptions::new(sm)).unwrap();
        assert!(text.contains(&format!(".version 8.0\n.target {}\n.address_size 64\n", sm.name())), "{text}");
        let params = ".param .u64 p0_x_ptr,\n    .param .u64 p0_x_len,\n    .param .s32 p1_n,\n    \
                      .param .u64 p2_y_ptr,\n    .param .u64 p2_y_len\n";
        assert!(text.contains(params), "{text}");
        assert!(text.contains(".reqntid 128, 1, 1"), "{text}");
        // The mask becomes a guard on the load and the store, two elements per thread.
        assert_eq!(text.matches("ld.global.b16").count(), 2, "{text}");
        assert_eq!(text.matches("st.global.f32").count(), 2, "{text}");
        assert!(text.lines().filter(|l| l.contains("ld.global") || l.contains("st.global")).all(|l| l.contains('@')));
    }
    let text = emit(VADD, &PtxOptions::new(Sm::Sm80).with_warps(8)).unwrap();
    assert!(text.contains(".reqntid 256, 1, 1") && text.matches("ld.global.b16").count() == 1, "{text}");
}

#[test]
fn float_rem_is_unsupported_with_the_op_named() {
    let src = "kernel r(@x: ptr<f32>) {
  %i: i32[32] = arange 0, 32
  %v: f32[32] = load @x[%i]
  %w: f32[32] = rem %v, %v
  store @x[%i], %w
}";
    match emit(src, &PtxOptions::new(Sm::Sm80)) {
        Err(PtxError::Unsupported { op, why }) => {
            assert!(op.contains("rem") && op.contains("`r`"), "{op}");
            assert!(why.contains("float rem"), "{why}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn a_kernel_needing_too_much_shared_memory_is_rejected_with_the_limit() {
    // Reducing a [128, 128] f32 tile along its first axis stages 64 KiB through shared memory.
    let src = "kernel big(@x: ptr<f32>, @y: ptr<f32>) {
  %i: i32[16384] = arange 0, 16384
  %o: i32[128, 128] = reshape %i
  %v: f32[128, 128] = load @x[%o]
  %s: f32[128] = reduce_sum %v, 0
  %c: i32[128] = arange 0, 128
  store @y[%c], %s
}";
    match emit(src, &PtxOptions::new(Sm::Sm90)) {
        Err(e @ PtxError::SharedMemory { bytes: 65536, limit: 49152, .. }) => {
            assert!(e.to_string().contains("kernel `big` needs 65536 bytes of shared memory"), "{e}")
        }
        other => panic!("expected SharedMemory, got {other:?}"),
    }
}

#[test]
fn bad_options_and_invalid_kernels_are_errors() {
    for warps in [0, 33] {
        let e = emit(VADD, &PtxOptions::new(Sm::Sm80).with_warps(warps)).unwrap_err();
        assert!(matches!(e, PtxError::BadOptions(_)), "{e}");
    }
    assert!(matches!(Sm::from_number(75), Err(PtxError::BadOptions(_))));
    let mut k = parse(VADD).unwrap();
    k.name = "broken".into();
    k.insts[0].results.clear();
    assert!(matches!(ptx::emit(&k, &PtxOptions::new(Sm::Sm80)), Err(PtxError::Invalid(_))));
}
