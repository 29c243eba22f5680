//! Verifier negative tests: each breaks one invariant of `verify`'s module doc and checks that the
//! error is reported, located, and that every error of a kernel is collected.

use kiln_ir::{
    verify, BinaryOp, Block, DType, Inst, Kernel, KernelBuilder, Literal, Location, Op, Param, Shape, Type, Value,
    ValueDef,
};

/// A valid kernel to break: a masked vector scale with a loop carrying a sum.
fn base() -> Kernel {
    let b = KernelBuilder::new("base");
    let x = b.buffer("x", DType::F32);
    let y = b.buffer("y", DType::F32);
    let n = b.scalar("n", DType::I32);
    let offs = b.program_id(0) * 64 + b.arange(0, 64);
    let mask = offs.lt(n);
    let v = b.load_masked(x, offs, mask, 0.0);
    let [acc] = b.for_range(0, 4, 1, [b.zeros(&[64], DType::F32)], |_i, [acc]| [acc + v]);
    b.store_masked(y, offs, acc, mask);
    b.finish().expect("the base kernel is valid")
}

/// The first instruction whose op satisfies `pred`.
fn find(k: &Kernel, pred: impl Fn(&Op) -> bool) -> Inst {
    let (inst, _) = *k.walk().iter().find(|(i, _)| pred(&k.inst(*i).op)).expect("op present");
    inst
}

/// Asserts verification fails with an error at `location` whose message contains `needle`.
fn expect_error(k: &Kernel, location: Location, needle: &str) {
    let errs = verify(k).expect_err("verification should fail");
    assert!(
        errs.errors.iter().any(|e| e.location == location && e.message.contains(needle)),
        "no error at {location:?} containing {needle:?}; got:\n{errs}"
    );
}

#[test]
fn base_kernel_verifies() {
    verify(&base()).unwrap();
}

#[test]
fn binary_operands_must_share_a_type() {
    let mut k = base();
    let add = find(&k, |op| matches!(op, Op::Binary { op: BinaryOp::Add, .. }));
    let n = Value(0); // the i32 scalar parameter
    if let Op::Binary { rhs, .. } = &mut k.insts[add.index()].op {
        *rhs = n;
    }
    expect_error(&k, Location::Inst(add), "operands must have one type");
}

#[test]
fn declared_result_type_must_match_inferred() {
    let mut k = base();
    let lt = find(&k, |op| matches!(op, Op::Compare { .. }));
    let r = k.insts[lt.index()].results[0];
    k.values[r.index()].ty = Type::tile(DType::I32, vec![64]);
    expect_error(&k, Location::Inst(lt), "differ from inferred");
}

#[test]
fn broadcast_must_follow_numpy_rules() {
    let mut k = base();
    let bc = find(&k, |op| matches!(op, Op::Broadcast { .. }));
    if let Op::Broadcast { arg, .. } = k.insts[bc.index()].op.clone() {
        // Broadcasting a [64] tile to [32] is illegal.
        let arange = find(&k, |op| matches!(op, Op::Arange { .. }));
        let a = k.insts[arange.index()].results[0];
        k.insts[bc.index()].op = Op::Broadcast { arg: a, shape: Shape::new(vec![32]) };
        let _ = arg;
    }
    expect_error(&k, Location::Inst(bc), "does not broadcast");
}

#[test]
fn mask_shape_must_match_offsets() {
    let b = KernelBuilder::new("mask");
    let x = b.buffer("x", DType::F32);
    let offs = b.arange(0, 16);
    let v = b.load(x, offs);
    b.store(x, offs, v);
    let mut k = b.finish().unwrap();
    let load = find(&k, |op| matches!(op, Op::Load { .. }));
    // A scalar bool mask for a 16-lane load.
    let mask = k.new_value(Type::scalar(DType::Bool), ValueDef::Result(Inst(k.insts.len() as u32), 0));
    let c = k.push_inst(k.entry, Op::Constant { value: Literal::Bool(true), ty: Type::scalar(DType::Bool) }, vec![]);
    k.insts[c.index()].results.push(mask);
    k.blocks[0].insts.pop();
    k.blocks[0].insts.insert(0, c);
    if let Op::Load { mask: m, .. } = &mut k.insts[load.index()].op {
        *m = Some(mask);
    }
    expect_error(&k, Location::Inst(load), "mask must be bool[16]");
}

#[test]
fn loop_values_are_not_visible_after_the_loop() {
    let mut k = base();
    let store = find(&k, |op| matches!(op, Op::Store { .. }));
    let (add, _) = *k.walk().iter().find(|(_, depth)| *depth == 1).unwrap();
    assert!(matches!(k.inst(add).op, Op::Binary { op: BinaryOp::Add, .. }));
    let inner = k.insts[add.index()].results[0];
    if let Op::Store { value, .. } = &mut k.insts[store.index()].op {
        *value = inner;
    }
    expect_error(&k, Location::Inst(store), "not in scope");
}

#[test]
fn operands_must_be_defined_before_use() {
    let mut k = base();
    // Move the store to the front of the entry block.
    let store = find(&k, |op| matches!(op, Op::Store { .. }));
    let entry = &mut k.blocks[0].insts;
    entry.retain(|i| *i != store);
    entry.insert(0, store);
    expect_error(&k, Location::Inst(store), "not in scope");
}

#[test]
fn reduction_axis_must_exist() {
    let b = KernelBuilder::new("reduce");
    let x = b.buffer("x", DType::F32);
    let v = b.load(x, b.arange(0, 8));
    b.store(x, b.arange(0, 1), v.sum(0).broadcast_to(&Shape::new(vec![1])));
    let mut k = b.finish().unwrap();
    let red = find(&k, |op| matches!(op, Op::Reduce { .. }));
    if let Op::Reduce { axis, .. } = &mut k.insts[red.index()].op {
        *axis = 1;
    }
    expect_error(&k, Location::Inst(red), "reduction axis 1 out of range");
}

fn dot_kernel(k_dim: u32) -> Kernel {
    let b = KernelBuilder::new("dot");
    let out = b.buffer("out", DType::F32);
    let a = b.full(&[4, 8], 1.0, DType::F16);
    let w = b.full(&[8, 2], 2.0, DType::F16);
    let acc = b.zeros(&[4, 2], DType::F32);
    let d = b.dot(a, w, acc);
    let offs = b.arange(0, 4).col() * 2 + b.arange(0, 2).row();
    b.store(out, offs, d);
    let mut k = b.finish().unwrap();
    if k_dim != 8 {
        let w_inst = find(&k, |op| matches!(op, Op::Constant { ty, .. } if ty.shape.dims() == [8, 2]));
        let r = k.insts[w_inst.index()].results[0];
        let ty = Type::tile(DType::F16, vec![k_dim, 2]);
        k.values[r.index()].ty = ty.clone();
        k.insts[w_inst.index()].op = Op::Constant { value: Literal::Float(2.0), ty };
    }
    k
}

#[test]
fn dot_inner_dims_must_agree() {
    let k = dot_kernel(4);
    let d = find(&k, |op| matches!(op, Op::Dot { .. }));
    expect_error(&k, Location::Inst(d), "inner dims differ");
}

#[test]
fn dot_accumulator_must_be_f32_for_floats() {
    let mut k = dot_kernel(8);
    let d = find(&k, |op| matches!(op, Op::Dot { .. }));
    let acc_inst = find(&k, |op| matches!(op, Op::Constant { ty, .. } if ty.shape.dims() == [4, 2]));
    let r = k.insts[acc_inst.index()].results[0];
    let ty = Type::tile(DType::F16, vec![4, 2]);
    k.values[r.index()].ty = ty.clone();
    k.insts[acc_inst.index()].op = Op::Constant { value: Literal::Float(0.0), ty };
    expect_error(&k, Location::Inst(d), "accumulates into f32");
}

#[test]
fn stored_value_must_have_the_buffer_dtype() {
    let b = KernelBuilder::new("store");
    let y = b.buffer("y", DType::F16);
    b.store(y, b.arange(0, 4), b.full(&[4], 1.0, DType::F16));
    let mut k = b.finish().unwrap();
    k.params[0].kind = kiln_ir::ParamKind::Buffer { dtype: DType::F32 };
    let st = find(&k, |op| matches!(op, Op::Store { .. }));
    expect_error(&k, Location::Inst(st), "store of f16 into a buffer of f32");
}

#[test]
fn memory_ops_must_name_a_buffer() {
    let mut k = base();
    let load = find(&k, |op| matches!(op, Op::Load { .. }));
    if let Op::Load { buffer, .. } = &mut k.insts[load.index()].op {
        *buffer = Param(2); // `n`, a scalar
    }
    expect_error(&k, Location::Inst(load), "param2 is not a buffer parameter");
}

#[test]
fn loop_body_must_end_with_yield() {
    let mut k = base();
    let for_inst = find(&k, |op| matches!(op, Op::For { .. }));
    let body = k.inst(for_inst).op.body().unwrap();
    // Swap the yield with the instruction before it.
    let insts = &mut k.blocks[body.index()].insts;
    let n = insts.len();
    insts.swap(n - 1, n - 2);
    let yield_inst = insts[n - 2];
    expect_error(&k, Location::Inst(for_inst), "does not end with yield");
    expect_error(&k, Location::Inst(yield_inst), "yield must be the last instruction");
}

#[test]
fn yield_types_must_match_carried_types() {
    let mut k = base();
    let yield_inst = find(&k, |op| matches!(op, Op::Yield { .. }));
    let arange = find(&k, |op| matches!(op, Op::Arange { .. }));
    let i32_tile = k.insts[arange.index()].results[0];
    k.insts[yield_inst.index()].op = Op::Yield { values: vec![i32_tile] };
    expect_error(&k, Location::Inst(yield_inst), "differ from carried types");
}

#[test]
fn induction_variable_must_be_i32() {
    let mut k = base();
    let for_inst = find(&k, |op| matches!(op, Op::For { .. }));
    let body = k.inst(for_inst).op.body().unwrap();
    let iv = k.blocks[body.index()].args[0];
    k.values[iv.index()].ty = Type::scalar(DType::U32);
    expect_error(&k, Location::Inst(for_inst), "induction variable must be i32");
}

#[test]
fn loop_bounds_must_be_i32_scalars() {
    let mut k = base();
    let for_inst = find(&k, |op| matches!(op, Op::For { .. }));
    let arange = find(&k, |op| matches!(op, Op::Arange { .. }));
    let tile = k.insts[arange.index()].results[0];
    if let Op::For { end, .. } = &mut k.insts[for_inst.index()].op {
        *end = tile;
    }
    expect_error(&k, Location::Inst(for_inst), "loop end must be an i32 scalar");
}

#[test]
fn yield_only_ends_loop_bodies() {
    let mut k = base();
    k.push_inst(Block(0), Op::Yield { values: vec![] }, vec![]);
    let y = Inst(k.insts.len() as u32 - 1);
    expect_error(&k, Location::Inst(y), "yield outside a loop body");
}

#[test]
fn program_id_axis_must_be_below_three() {
    let mut k = base();
    let pid = find(&k, |op| matches!(op, Op::ProgramId { .. }));
    k.insts[pid.index()].op = Op::ProgramId { axis: 3 };
    expect_error(&k, Location::Inst(pid), "grid axis 3 out of range");
}

#[test]
fn constants_must_fit_their_dtype() {
    let b = KernelBuilder::new("c");
    let y = b.buffer("y", DType::U8);
    b.store(y, b.arange(0, 4), b.full(&[4], 7, DType::U8));
    let mut k = b.finish().unwrap();
    let c = find(&k, |op| matches!(op, Op::Constant { .. }));
    k.insts[c.index()].op = Op::Constant { value: Literal::Int(300), ty: Type::tile(DType::U8, vec![4]) };
    expect_error(&k, Location::Inst(c), "constant 300 out of range for u8");
}

#[test]
fn transcendental_ops_need_floats() {
    let mut k = base();
    let arange = find(&k, |op| matches!(op, Op::Arange { .. }));
    let ints = k.insts[arange.index()].results[0];
    let exp = k.push_inst(
        Block(0),
        Op::Unary { op: kiln_ir::UnaryOp::Exp2, arg: ints },
        vec![Type::tile(DType::I32, vec![64])],
    );
    expect_error(&k, Location::Inst(exp), "exp2 is not defined on i32");
}

#[test]
fn reshape_must_keep_the_element_count() {
    let mut k = base();
    let arange = find(&k, |op| matches!(op, Op::Arange { .. }));
    let a = k.insts[arange.index()].results[0];
    let r = k.push_inst(
        Block(0),
        Op::Reshape { arg: a, shape: Shape::new(vec![8, 9]) },
        vec![Type::tile(DType::I32, vec![8, 9])],
    );
    expect_error(&k, Location::Inst(r), "reshape from [64] (64 elements) to [8, 9] (72 elements)");
}

#[test]
fn tiles_have_a_size_limit() {
    let mut k = base();
    let huge = Type::tile(DType::F32, vec![1 << 13, 1 << 13]);
    let c = k.push_inst(Block(0), Op::Constant { value: Literal::Float(1.0), ty: huge.clone() }, vec![huge]);
    expect_error(&k, Location::Inst(c), "exceeds the limit");
}

#[test]
fn parameter_names_are_unique_identifiers() {
    let mut k = base();
    k.params[1].name = "x".into();
    k.params[2].name = "1n".into();
    expect_error(&k, Location::Param(Param(1)), "duplicate parameter name `x`");
    expect_error(&k, Location::Param(Param(2)), "not an identifier");
}

#[test]
fn value_names_are_unique() {
    let mut k = base();
    let arange = find(&k, |op| matches!(op, Op::Arange { .. }));
    let a = k.insts[arange.index()].results[0];
    k.values[a.index()].name = Some("n".into()); // the scalar parameter's name
    expect_error(&k, Location::Kernel, "value name `n` is used twice");
}

#[test]
fn dangling_ids_are_reported_not_followed() {
    let mut k = base();
    let add = find(&k, |op| matches!(op, Op::Binary { op: BinaryOp::Add, .. }));
    if let Op::Binary { rhs, .. } = &mut k.insts[add.index()].op {
        *rhs = Value(10_000);
    }
    expect_error(&k, Location::Inst(add), "operand %v10000 does not exist");
}

#[test]
fn every_error_is_collected() {
    let mut k = base();
    let pid = find(&k, |op| matches!(op, Op::ProgramId { .. }));
    k.insts[pid.index()].op = Op::ProgramId { axis: 7 };
    let red_store = find(&k, |op| matches!(op, Op::Store { .. }));
    k.params[0].name = "y".into();
    let errs = verify(&k).unwrap_err();
    assert!(errs.errors.len() >= 2, "{errs}");
    assert!(errs.errors.iter().any(|e| e.location == Location::Inst(pid)));
    assert!(errs.errors.iter().any(|e| e.location == Location::Param(Param(1))));
    // The rendering names the kernel and the count, then one line per error.
    let text = errs.to_string();
    assert!(text.starts_with("kernel `base` failed verification with"), "{text}");
    assert_eq!(text.lines().count(), errs.errors.len() + 1);
    let _ = red_store;
}

#[test]
fn scalar_parameter_values_carry_the_parameter_name() {
    let b = KernelBuilder::new("renamed");
    let y = b.buffer("y", DType::I32);
    let n = b.scalar("n", DType::I32).named("len");
    b.store(y, b.arange(0, 1), n.broadcast_to(&Shape::new(vec![1])));
    let err = b.finish().unwrap_err();
    assert!(err.to_string().contains("the parameter's value is named Some(\"len\"), not `n`"), "{err}");
}
