//! Tests of the `.tir` text form: round trips of builder kernels, parse errors with their
//! positions, source maps on verifier errors, and that no input makes the parser panic.

use kiln_ir::op::{Literal, Op};
use kiln_ir::text::{parse, parse_with_source_map, print, render_verify_errors, ParseError, MAX_LOOP_DEPTH};
use kiln_ir::{verify, DType, Kernel, KernelBuilder, Type};
use proptest::prelude::*;

/// `parse(print(k)) == k` exactly, and printing is a fixed point.
fn assert_round_trip(k: &Kernel) {
    let text = print(k);
    let back = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&back, k, "round trip changed the kernel:\n{text}");
    assert_eq!(print(&back), text);
    assert_eq!(k.to_string(), text, "Display is print");
}

fn vadd() -> Kernel {
    let b = KernelBuilder::new("vadd");
    let (x, y, out) = (b.buffer("x", DType::F32), b.buffer("y", DType::F32), b.buffer("out", DType::F32));
    let n = b.scalar("n", DType::I32);
    let offs = (b.program_id(0) * 128 + b.arange(0, 128)).named("offs");
    let mask = offs.lt(n).named("mask");
    let a = b.load_masked(x, offs, mask, 0.0);
    let c = b.load_masked(y, offs, mask, 0.0);
    b.store_masked(out, offs, a + c, mask);
    b.finish().unwrap()
}

/// Row sums of an `[m, k]` matrix, 16 rows per program, over K tiles of 32.
fn row_sum() -> Kernel {
    let b = KernelBuilder::new("row_sum");
    let (x, y) = (b.buffer("x", DType::F32), b.buffer("y", DType::F32));
    let k = b.scalar("k", DType::I32);
    let rows = b.program_id(0) * 16 + b.arange(0, 16);
    let acc0 = b.zeros(&[16], DType::F32).named("acc0");
    let [acc] = b.for_range(0, k, 32, [acc0], |kk, [acc]| {
        let cols = kk + b.arange(0, 32);
        let offs = rows.col() * k + cols.row();
        let mask = cols.row().lt(k);
        let tile = b.load_masked(x, offs, mask, 0.0);
        [(acc + tile.sum(1)).named("next")]
    });
    b.store(y, rows, acc.named("total"));
    b.finish().unwrap()
}

/// Two nested loops, two carried values in the outer one, none in the inner one's results.
fn nested() -> Kernel {
    let b = KernelBuilder::new("nested");
    let y = b.buffer("y", DType::I32);
    let n = b.scalar("n", DType::I32);
    let zero = b.zeros(&[8], DType::I32);
    let one = b.constant(1, DType::I32);
    let [s, c] = b.for_range(0, n, 1, [zero, one], |i, [s, c]| {
        let [t] = b.for_range(i, n, 2, [s], |j, [t]| [t + j]);
        let [] = b.for_range(0, 4, 1, [], |_, []| {
            b.store(y, b.arange(0, 8), t);
            []
        });
        [t, c * 2]
    });
    b.store(y, b.arange(8, 16), s + c);
    b.finish().unwrap()
}

/// Every op kind, every unary/binary op and predicate, and the awkward float constants.
fn every_op() -> Kernel {
    let b = KernelBuilder::new("every_op");
    let x = b.buffer("x", DType::F32);
    let h = b.buffer("h", DType::F16);
    let q = b.buffer("q", DType::U8);
    let acc_buf = b.buffer("acc", DType::F32);
    let s = b.scalar("s", DType::F32);
    let _flag = b.scalar("flag", DType::Bool);
    let pid = b.program_id(1);
    let np = b.num_programs(2);
    let offs = b.arange(-4, 12) + pid * np;
    let v = b.load(x, offs);
    let mut f = v;
    for t in [f.exp2(), f.log2(), f.sqrt(), f.rsqrt(), f.recip(), f.abs(), -f] {
        f = f + t;
    }
    f = (f - v) * v / v % v;
    f = f.minimum(v).maximum(s);
    let ints = offs & 7 | 3 ^ 1;
    let ints = (ints << 2) >> 1;
    let ints = !ints;
    let masks = [offs.eq(1), offs.ne(2), offs.lt(3), offs.le(4), offs.gt(5), offs.ge(6)];
    let m = masks[0] | masks[1] & masks[2] ^ !masks[3];
    let m = m | masks[4] | masks[5];
    let sel = b.select(m, f, 0.5);
    let half = sel.cast(DType::F16);
    b.store(h, offs, half);
    let bits = sel.bitcast(DType::I32) + ints;
    let grid = bits.reshape(&[4, 4]).expand_dims(0).broadcast_to(&kiln_ir::Shape::new(vec![2, 4, 4]));
    let red = grid.sum(0).max(1);
    let mat = b.full(&[4, 4], -0.0, DType::F16);
    let acc = b.full(&[4, 4], f64::NAN, DType::F32);
    let d = b.dot(mat, mat, acc);
    let qv = b.load_masked(q, offs, m, 7u8);
    let qd = b.dot(qv.reshape(&[4, 4]), qv.reshape(&[4, 4]), b.zeros(&[4, 4], DType::I32));
    let total = d.sum(1) + (red + qd.sum(0)).cast(DType::F32);
    let consts = [
        b.constant(f64::INFINITY, DType::F32),
        b.constant(f64::NEG_INFINITY, DType::F32),
        b.constant(f64::from_bits(0x7ff8_0000_0000_0001), DType::F32),
        b.constant(-f64::NAN, DType::F32),
        b.constant(1e-300, DType::F32),
        b.constant(123456789.125, DType::F32),
        b.constant(f64::MIN_POSITIVE / 3.0, DType::F32),
    ];
    let mut c = total;
    for k in consts {
        c = c + k;
    }
    let _ = b.constant(true, DType::Bool);
    let _ = b.constant(i64::from(i32::MIN), DType::I32);
    let _ = b.full(&[2, 3], 255u8, DType::U8);
    b.atomic_add(acc_buf, b.arange(0, 4), c, Some(b.arange(0, 4).lt(3)));
    b.atomic_add(acc_buf, b.arange(0, 4), 1.0, None);
    b.finish().unwrap()
}

#[test]
fn builder_kernels_round_trip() {
    for k in [vadd(), row_sum(), nested(), every_op()] {
        assert_round_trip(&k);
    }
}

#[test]
fn every_op_kind_is_covered() {
    let k = every_op();
    let names: std::collections::HashSet<&str> = k.insts.iter().map(|i| i.op.name()).collect();
    for want in [
        "program_id",
        "num_programs",
        "arange",
        "const",
        "neg",
        "not",
        "abs",
        "exp2",
        "log2",
        "sqrt",
        "rsqrt",
        "recip",
        "add",
        "sub",
        "mul",
        "div",
        "rem",
        "min",
        "max",
        "and",
        "or",
        "xor",
        "shl",
        "shr",
        "cmp",
        "select",
        "cast",
        "bitcast",
        "broadcast",
        "reshape",
        "expand_dims",
        "reduce_sum",
        "reduce_max",
        "dot",
        "load",
        "store",
        "atomic_add",
    ] {
        assert!(names.contains(want), "every_op lacks {want}");
    }
    for kernel in [row_sum(), nested()] {
        assert!(kernel.insts.iter().any(|i| matches!(i.op, Op::For { .. })));
    }
}

#[test]
fn prints_the_documented_syntax() {
    let text = print(&row_sum());
    let want = "\
kernel row_sum(@x: ptr<f32>, @y: ptr<f32>, %k: i32) {
  %1: i32 = program_id 0
  %2: i32 = const 16
  %3: i32 = mul %1, %2
  %4: i32[16] = arange 0, 16
  %5: i32[16] = broadcast %3
  %6: i32[16] = add %5, %4
  %acc0: f32[16] = const 0.0
  %8: i32 = const 0
  %9: i32 = const 32
  %total: f32[16] = for %10 = %8 to %k step %9 iter(%11 = %acc0) {
    %12: i32[32] = arange 0, 32
    %13: i32[32] = broadcast %10
    %14: i32[32] = add %13, %12
    %15: i32[16, 1] = expand_dims %6, 1
    %16: i32[16, 1] = broadcast %k
    %17: i32[16, 1] = mul %15, %16
    %18: i32[1, 32] = expand_dims %14, 0
    %19: i32[16, 32] = broadcast %17
    %20: i32[16, 32] = broadcast %18
    %21: i32[16, 32] = add %19, %20
    %22: i32[1, 32] = expand_dims %14, 0
    %23: i32[1, 32] = broadcast %k
    %24: bool[1, 32] = cmp lt %22, %23
    %25: bool[16, 32] = broadcast %24
    %26: f32 = const 0.0
    %27: f32[16, 32] = load @x[%21], mask %25, other %26
    %28: f32[16] = reduce_sum %27, 1
    %next: f32[16] = add %11, %28
    yield %next
  }
  store @y[%6], %total
}
";
    assert_eq!(text, want);
}

#[test]
fn hand_built_kernels_round_trip() {
    // Shapes the builder has no method for: a load with `other` and no mask, a loop whose
    // results are unused, a kernel with no parameters.
    let mut k = Kernel::new("odd");
    let x = k.add_buffer("x", DType::F32);
    let entry = k.entry;
    let offs = k.push_inst(entry, Op::Arange { start: 0, end: 4 }, vec![Type::tile(DType::I32, vec![4])]);
    let offs = k.insts[offs.index()].results[0];
    let other = k.push_inst(
        entry,
        Op::Constant { value: Literal::Float(-0.0), ty: Type::scalar(DType::F32) },
        vec![Type::scalar(DType::F32)],
    );
    let other = k.insts[other.index()].results[0];
    k.push_inst(
        entry,
        Op::Load { buffer: x, offsets: offs, mask: None, other: Some(other) },
        vec![Type::tile(DType::F32, vec![4])],
    );
    verify(&k).unwrap();
    assert_round_trip(&k);
    assert!(print(&k).contains("load @x[%0], other %1"));

    let empty = Kernel::new("empty");
    assert_eq!(print(&empty), "kernel empty() {\n}\n");
    assert_round_trip(&empty);
}

#[test]
fn numeric_names_are_renumbered_and_printing_is_a_fixed_point() {
    let src = "
// numbers in the text are only names; the values get the builder's ids
kernel k(@y: ptr<i32>, %n: i32) {
  %7: i32[4] = arange 0, 4   // trailing comment
  %3: i32 = const 2
  %x: i32[4] = broadcast %3
  %99: i32[4] = add %7, %x
  store @y[%7], %99
}";
    let k = parse(src).unwrap();
    verify(&k).unwrap();
    let once = print(&k);
    assert!(once.contains("%4: i32[4] = add %1, %x"), "{once}");
    assert_eq!(k.values[4].name, None);
    assert_eq!(k.values[3].name.as_deref(), Some("x"));
    let twice = print(&parse(&once).unwrap());
    assert_eq!(once, twice);
    assert_eq!(parse(&once).unwrap(), k);
}

#[test]
fn float_literals_parse_bit_exactly() {
    for (text, want) in [
        ("1.0", 1.0f64),
        ("-2.5e-3", -2.5e-3),
        ("1e-5", 1e-5),
        ("3", 3.0),
        ("-0.0", -0.0),
        ("inf", f64::INFINITY),
        ("-inf", f64::NEG_INFINITY),
        ("nan", f64::NAN),
        ("nan(0x7ff0000000000001)", f64::from_bits(0x7ff0_0000_0000_0001)),
        ("nan(0xfff8000000000000)", -f64::NAN),
        ("100000000000000000000000000000", 1e29),
    ] {
        let src = format!("kernel k() {{\n  %c: f32 = const {text}\n}}");
        let k = parse(&src).unwrap_or_else(|e| panic!("{text}: {e}"));
        match k.insts[0].op {
            Op::Constant { value: Literal::Float(f), .. } => {
                assert_eq!(f.to_bits(), want.to_bits(), "{text}")
            }
            ref other => panic!("{text}: {other:?}"),
        }
    }
    let k = parse("kernel k() {\n  %c: i8 = const -128\n  %d: bool = const false\n}").unwrap();
    assert_eq!(k.insts[0].op, Op::Constant { value: Literal::Int(-128), ty: Type::scalar(DType::I8) });
    assert_eq!(k.insts[1].op, Op::Constant { value: Literal::Bool(false), ty: Type::scalar(DType::Bool) });
}

fn parse_err(src: &str) -> ParseError {
    match parse(src) {
        Ok(k) => panic!("parsed:\n{}", print(&k)),
        Err(e) => e,
    }
}

#[test]
fn parse_errors_name_the_position_and_the_tokens() {
    let cases: &[(&str, &str)] = &[
        ("", "1:1: expected `kernel`, found end of input"),
        ("kernel k(%x: i32 %y: i32) {}", "1:18: expected `,` or `)`, found `%y`"),
        ("kernel k(@x: ptr<f64>) {}", "1:18: expected a dtype (f32, f16, bf16, i32, u32, i8, u8, bool), found `f64`"),
        ("kernel k(@x: f32) {}", "1:14: expected `ptr`, found `f32`"),
        (
            "kernel k(%n: i32, %n: i32) {}",
            "1:19: expected a value name not defined before, found `%n`, already defined at 1:10",
        ),
        (
            "kernel k(@b: ptr<u8>, @b: ptr<u8>) {}",
            "1:23: expected a buffer name not defined before, found `@b`, already defined at 1:10",
        ),
        ("kernel k() {\n  %a: f32 = neg %b\n}", "2:17: expected a value defined earlier, found `%b`"),
        (
            "kernel k() {\n  %a: f32 = const 1.0\n  %a: f32 = neg %a\n}",
            "3:3: expected a value name not defined before, found `%a`, already defined at 2:3",
        ),
        ("kernel k() {\n  %a: f32 = const 1.0\n  %b: f32 = add %a %a\n}", "3:20: expected `,`, found `%a`"),
        ("kernel k() {\n  %a: f32 = frobnicate\n}", "2:13: expected an op name, found `frobnicate`"),
        (
            "kernel k() {\n  %a: f32[4294967296] = const 1.0\n}",
            "2:11: expected a dimension (an integer in 0..=4294967295), found `4294967296`",
        ),
        (
            "kernel k() {\n  %a: i32 = const 99999999999999999999\n}",
            "2:19: expected an integer literal that fits i64, found `99999999999999999999`",
        ),
        (
            "kernel k() {\n  %a: i32[4] = arange 0, 2147483648\n}",
            "2:26: expected an end (an i32 integer), found `2147483648`",
        ),
        (
            "kernel k() {\n  %a: i32 = program_id 256\n}",
            "2:24: expected a grid axis (an integer in 0..=255), found `256`",
        ),
        ("kernel k() {\n  %a: i32 = const 1 $\n}", "2:21: expected a token, found character `$`"),
        ("kernel k() {\n  %a: f32 = const é\n}", "2:19: expected a token, found character `é`"),
        ("kernel k() {\n  %a: i32 = const 1\n", "3:1: expected an instruction or `}`, found end of input"),
        (
            "kernel k() {\n  %a: f32 = const 1.0\n  cast %a\n}",
            "3:3: expected one declared result before `cast` (its type gives the target dtype), found 0 results",
        ),
        (
            "kernel k() {\n  %a: bool = cmp lq %a, %a\n}",
            "2:18: expected a predicate (eq, ne, lt, le, gt, ge), found `lq`",
        ),
        ("kernel k() {\n  %a: f32 = load @x[%a]\n}", "2:18: expected a buffer parameter of this kernel, found `@x`"),
        (
            "kernel k(@x: ptr<f32>) {\n  %i: i32 = const 0\n  %a: f32 = load @x[%i], maks %i\n}",
            "3:26: expected `mask` or `other`, found `maks`",
        ),
        (
            "kernel k() {\n  %c: f32 = const nan(0x1)\n}",
            "2:23: expected the bits of a NaN as `0x` and 16 hex digits, found `0`",
        ),
        ("kernel k() {\n  %c: f32 = const -nan\n}", "2:20: expected `inf` after `-`, found `nan`"),
        (
            "kernel k() {\n  %1a: f32 = const 1.0\n}",
            "2:3: expected a value name (`%` and an identifier or a number), found `%1a`",
        ),
        ("kernel k() {\n}\n}", "3:1: expected end of input after the kernel, found `}`"),
        (
            "kernel k() {\n  %i: i32 = const 0\n  for %j = %i to %i step %i iter(%a = %i {\n  }\n}",
            "3:42: expected `,` or `)`, found `{`",
        ),
        (
            "kernel k() {\n  %i: i32 = const 0\n  for %i = %i to %i step %i {\n  }\n}",
            "3:7: expected a value name not defined before, found `%i`, already defined at 2:3",
        ),
    ];
    for (src, want) in cases {
        assert_eq!(parse_err(src).to_string(), *want, "input:\n{src}");
    }
}

#[test]
fn huge_tokens_are_reported_shortly() {
    let digits = "9".repeat(100_000);
    let e = parse_err(&format!("kernel k() {{\n  %a: i32 = const {digits}\n}}"));
    assert_eq!(e.found, format!("`{}... (100000 characters)`", &digits[..40]));
    // An overlong float just rounds (to infinity here), as Rust's float parsing does.
    let k = parse(&format!("kernel k() {{\n  %a: f32 = const {digits}.5\n}}")).unwrap();
    assert_eq!(k.insts[0].op, Op::Constant { value: Literal::Float(f64::INFINITY), ty: Type::scalar(DType::F32) });
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let nest = |depth: usize| {
        let mut src = String::from("kernel k() {\n  %z: i32 = const 0\n");
        for d in 0..depth {
            src.push_str(&format!("for %i{d} = %z to %z step %z {{\n"));
        }
        for _ in 0..depth {
            src.push_str("yield\n}\n");
        }
        src.push_str("}\n");
        src
    };
    let ok = parse(&nest(MAX_LOOP_DEPTH)).unwrap();
    verify(&ok).unwrap();
    assert_round_trip(&ok);
    let e = parse_err(&nest(MAX_LOOP_DEPTH + 1));
    assert_eq!(e.expected, format!("at most {MAX_LOOP_DEPTH} nested loops"));
    assert_eq!((e.line, e.found.as_str()), (MAX_LOOP_DEPTH as u32 + 3, "`for`"));
    // Far deeper than any stack would take if the parser recursed without a bound.
    let _ = parse_err(&nest(100_000));
}

#[test]
fn loop_values_used_after_the_loop_parse_and_fail_verification_with_positions() {
    let src = "\
kernel k(@y: ptr<f32>, %n: i32) {
  %z: i32 = const 0
  %one: i32 = const 1
  %offs: i32[4] = arange 0, 4
  for %i = %z to %n step %one {
    %inner: f32[4] = const 2.0
    yield
  }
  store @y[%offs], %inner
}
";
    let (k, map) = parse_with_source_map(src).unwrap();
    let errs = verify(&k).unwrap_err();
    let rendered = render_verify_errors(&errs, &map, "scope.tir");
    assert_eq!(rendered, "scope.tir:9:3: store (inst6): operand %inner is not in scope here\n");
    assert_eq!(map.kernel(), (1, 8));
    assert_eq!(map.param(kiln_ir::Param(1)), Some((1, 24)));
    // The loop instruction comes after its body in the arena but maps to its own line.
    assert_eq!(map.inst(kiln_ir::Inst(6)), Some((9, 3)));
    assert_eq!(map.inst(kiln_ir::Inst(5)), Some((5, 3)));
    assert_eq!(map.inst(kiln_ir::Inst(4)), Some((7, 5)));
    assert_eq!(map.locate(&kiln_ir::Location::Block(kiln_ir::Block(1))), Some((5, 3)));
}

#[test]
fn value_ids_follow_the_builders_order() {
    let k = parse(&print(&nested())).unwrap();
    let b = nested();
    assert_eq!(k.values.len(), b.values.len());
    assert_eq!(k.insts.len(), b.insts.len());
    assert_eq!(k.blocks, b.blocks);
}

/// A valid file with most of the syntax in it, for the no-panic checks.
fn sample() -> String {
    let mut s = print(&every_op());
    s.push_str(&print(&nested()));
    s
}

#[test]
fn every_prefix_of_a_valid_file_returns() {
    let text = print(&every_op()) + "// trailing comment\n";
    for (i, _) in text.char_indices() {
        let _ = parse(&text[..i]);
    }
    let nested = print(&nested());
    let last_brace = nested.rfind('}').unwrap();
    for (i, _) in nested.char_indices().take_while(|(i, _)| *i <= last_brace) {
        assert!(parse(&nested[..i]).is_err(), "prefix {i} parsed");
    }
}

#[test]
fn byte_mutations_return() {
    let text = sample();
    let bytes = text.as_bytes();
    // A fixed xorshift stream keeps the test deterministic.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"%@[](){},:=-0123456789.e_xaz \n/\xff";
    for _ in 0..3000 {
        let mut m = bytes.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % m.len();
            match next() % 3 {
                0 => m[at] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    m.remove(at);
                }
                _ => m.insert(at, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        let s = String::from_utf8_lossy(&m);
        if let Ok(k) = parse(&s) {
            // Whatever parses prints and parses back to itself.
            let once = print(&k);
            assert_eq!(print(&parse(&once).unwrap()), once);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_strings_return(s in "\\PC*") {
        let _ = parse(&s);
    }

    #[test]
    fn token_soup_returns(words in proptest::collection::vec(
        prop_oneof![
            Just("kernel"), Just("k"), Just("("), Just(")"), Just("{"), Just("}"), Just("%a"), Just("%0"),
            Just("@x"), Just(":"), Just("f32"), Just("i32[4]"), Just("="), Just("for"), Just("to"),
            Just("step"), Just("iter"), Just(","), Just("yield"), Just("const"), Just("1.5"), Just("ptr<f32>"),
            Just("load"), Just("store"), Just("@x[%a]"), Just("mask"), Just("\n"),
        ],
        0..60,
    )) {
        let _ = parse(&words.join(" "));
    }
}
