//! The CPU renderer end to end: every library kernel and every verifying `.tir` file renders for
//! AVX-512, AVX2, NEON and generic targets; the x86 and generic sources compile with
//! `gcc -Wall -Werror`; and the compiled code, run on this machine, matches the interpreter
//! (`.tir` run files exactly per dtype tolerance, library kernels by relative error norm with the
//! library's tolerances) and reports the interpreter's errors as `kiln_error`s.

mod common;

use common::{compile, have_gcc, run, KilnError};
use kiln_codegen::cpu::{render, CpuTarget, RenderError};
use kiln_ir::interp::{self, Arg, HostBuffer, Scalar};
use kiln_ir::{DType, Kernel, ParamKind};
use kiln_kernels::check::{compare, prepare_buffers, Executor};
use kiln_kernels::plan::{Binding, Buffers, Launch, Role};
use kiln_kernels::{registry, Args, SpaceLimits};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn all_targets() -> [CpuTarget; 4] {
    [CpuTarget::avx512(), CpuTarget::avx2(), CpuTarget::neon(), CpuTarget::generic()]
}

/// Targets gcc here can build (NEON needs an AArch64 compiler).
fn compile_targets() -> Vec<CpuTarget> {
    all_targets().into_iter().filter(|t| t.isa.is_x86() || t.isa == kiln_codegen::cpu::CpuIsa::Generic).collect()
}

/// Targets this machine can run.
fn run_targets() -> Vec<CpuTarget> {
    let host = CpuTarget::host();
    let mut out = vec![CpuTarget::generic()];
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && host.f16c {
            out.push(CpuTarget::avx2());
        }
        if host.isa == kiln_codegen::cpu::CpuIsa::Avx512 && host.vnni {
            out.push(CpuTarget::avx512());
        }
    }
    let _ = host;
    out
}

fn tir_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tir");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/tir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tir"))
        .collect();
    files.sort();
    files
}

/// Every `.tir` file that parses and verifies.
fn tir_kernels() -> Vec<(PathBuf, String, Kernel)> {
    tir_files()
        .into_iter()
        .filter_map(|p| {
            let src = std::fs::read_to_string(&p).ok()?;
            let k = kiln_ir::text::parse(&src).ok()?;
            kiln_ir::verify(&k).ok()?;
            Some((p, src, k))
        })
        .collect()
}

/// Every launch of every library kernel's example problem with its default config.
fn library_launches() -> Vec<(String, Launch)> {
    let mut out = Vec::new();
    for k in registry::all() {
        let shape = k.example_problem();
        let config = k.target_default(&shape, kiln_kernels::TargetKind::Cpu).expect("default config");
        let plan = k.plan(&shape, &config).expect("plan");
        for l in plan.launches {
            out.push((k.id().name().to_string(), l));
        }
    }
    out
}

fn render_and_compile(what: &str, kernel: &Kernel) -> Vec<String> {
    let mut failures = Vec::new();
    for t in all_targets() {
        let src = match render(kernel, &t) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{what} [{}]: {e}", t.fingerprint()));
                continue;
            }
        };
        assert!(src.code.starts_with(kiln_codegen::cpu::ABI_HEADER));
        assert_eq!(src.entry, format!("kiln_{}", src.name));
        assert!(src.code.contains(&format!("int32_t {}(const kiln_args *args", src.entry)));
        if have_gcc() && compile_targets().contains(&t) {
            if let Err(e) = compile(&src, &t) {
                failures.push(format!("{what} [{}]: {e}", t.fingerprint()));
            }
        }
    }
    failures
}

#[test]
fn library_kernels_render_and_compile_for_every_target() {
    let start = Instant::now();
    let launches = library_launches();
    let failures: Vec<String> = launches.iter().flat_map(|(name, l)| render_and_compile(name, &l.kernel)).collect();
    eprintln!("{} launches x 4 targets rendered (3 compiled) in {:.1?}", launches.len(), start.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn tir_files_render_and_compile_for_every_target() {
    let kernels = tir_kernels();
    assert!(kernels.len() >= 15, "expected the verifying .tir files, found {}", kernels.len());
    let failures: Vec<String> =
        kernels.iter().flat_map(|(p, _, k)| render_and_compile(&p.display().to_string(), k)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The whole legal config space of three kernels with different code shapes (a row reduction,
/// flash attention's tiled dots, the int4 GEMM / GEMV with split-K), for one target (the C
/// differs per config, rarely per target).
#[test]
fn whole_config_spaces_render_and_compile() {
    let start = Instant::now();
    let mut count = 0;
    let mut failures = Vec::new();
    for (name, shape) in [("rmsnorm", None), ("attention_prefill", None), ("dequant_gemm_w4", None)] {
        let k = registry::lookup(name).expect("kernel");
        let shape: Args = shape.unwrap_or_else(|| k.example_problem());
        for config in k.space(&shape, &SpaceLimits::default()).expect("space") {
            let plan = k.plan(&shape, &config).expect("plan");
            for l in plan.launches {
                count += 1;
                let target = CpuTarget::avx512();
                match render(&l.kernel, &target) {
                    Ok(src) if have_gcc() => {
                        if let Err(e) = compile(&src, &target) {
                            failures.push(format!("{name} [{config}]: {e}"));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => failures.push(format!("{name} [{config}]: {e}")),
                }
            }
        }
    }
    eprintln!("{count} space launches rendered and compiled in {:.1?}", start.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn an_invalid_kernel_is_a_typed_error() {
    let mut k = Kernel::new("bad");
    let x = k.add_buffer("x", DType::F32);
    let v = k.add_scalar("v", DType::I32);
    // A store of an i32 scalar into an f32 buffer fails verification.
    k.push_inst(k.entry, kiln_ir::Op::Store { buffer: x, offsets: v, value: v, mask: None }, vec![]);
    match render(&k, &CpuTarget::generic()) {
        Err(RenderError::Invalid(e)) => assert!(!e.errors.is_empty()),
        Ok(_) => panic!("an invalid kernel rendered"),
    }
}

// ---- execution against the interpreter ----

/// `(parameter with sigil, dtype, values)` of one `// arg` line.
type ArgLine = (String, DType, Vec<f64>);

/// `// arg NAME = DTYPE VALUES` and `// test: run grid=...` of a `.tir` file, and whether it
/// expects an error.
fn run_spec(src: &str) -> Option<([u32; 3], Vec<ArgLine>, bool)> {
    let mut grid = None;
    let mut args = Vec::new();
    let mut expect_error = false;
    for line in src.lines() {
        let Some(c) = line.trim().strip_prefix("//") else { break };
        let c = c.trim();
        if let Some(rest) = c.strip_prefix("test: run") {
            let dims: Vec<u32> = rest
                .trim()
                .strip_prefix("grid=")
                .unwrap_or("1,1,1")
                .split(',')
                .map(|d| d.trim().parse().expect("grid"))
                .collect();
            grid = Some([dims[0], *dims.get(1).unwrap_or(&1), *dims.get(2).unwrap_or(&1)]);
        } else if let Some(rest) = c.strip_prefix("arg ") {
            let (name, value) = rest.split_once('=')?;
            let (dtype, list) = value.trim().split_once(char::is_whitespace)?;
            args.push((name.trim().to_string(), DType::from_name(dtype)?, values(list.trim())));
        } else if c == "expect error" {
            expect_error = true;
        }
    }
    Some((grid?, args, expect_error))
}

fn values(s: &str) -> Vec<f64> {
    if let Some(inner) = s.strip_prefix("range(").and_then(|r| r.strip_suffix(')')) {
        let b: Vec<i64> = inner.split(',').map(|x| number(x) as i64).collect();
        return (b[0]..b[1]).map(|i| i as f64).collect();
    }
    let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else { return vec![number(s)] };
    if let Some((v, n)) = inner.split_once(';') {
        return vec![number(v); n.trim().parse().expect("count")];
    }
    inner.split(',').filter(|x| !x.trim().is_empty()).map(number).collect()
}

fn number(s: &str) -> f64 {
    let s = s.trim();
    let (neg, body) = s.strip_prefix('-').map_or((false, s), |b| (true, b));
    let m = match body {
        "true" => 1.0,
        "false" => 0.0,
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        h if h.starts_with("0x") => u64::from_str_radix(&h[2..], 16).expect("hex") as f64,
        d => d.parse().expect("number"),
    };
    if neg {
        -m
    } else {
        m
    }
}

/// The arguments of a `.tir` run file, converted as the file tests convert them.
fn bind(kernel: &Kernel, spec: &[ArgLine]) -> Vec<Arg> {
    kernel
        .params
        .iter()
        .map(|p| {
            let sigil = match p.kind {
                ParamKind::Buffer { .. } => format!("@{}", p.name),
                ParamKind::Scalar { .. } => format!("%{}", p.name),
            };
            let (_, dtype, vals) = spec.iter().find(|(n, _, _)| *n == sigil).expect("an arg line per parameter");
            match p.kind {
                ParamKind::Buffer { .. } => Arg::Buffer(buffer(*dtype, vals)),
                ParamKind::Scalar { .. } => Arg::Scalar(match buffer(*dtype, &vals[..1]) {
                    HostBuffer::F32(v) => Scalar::F32(v[0]),
                    HostBuffer::F16(v) => Scalar::F16(v[0]),
                    HostBuffer::BF16(v) => Scalar::BF16(v[0]),
                    HostBuffer::I32(v) => Scalar::I32(v[0]),
                    HostBuffer::U32(v) => Scalar::U32(v[0]),
                    HostBuffer::I8(v) => Scalar::I8(v[0]),
                    HostBuffer::U8(v) => Scalar::U8(v[0]),
                    HostBuffer::Bool(v) => Scalar::Bool(v[0]),
                }),
            }
        })
        .collect()
}

fn buffer(dtype: DType, v: &[f64]) -> HostBuffer {
    match dtype {
        DType::F32 => HostBuffer::F32(v.iter().map(|&x| x as f32).collect()),
        DType::F16 => HostBuffer::F16(v.iter().map(|&x| half::f16::from_f64(x)).collect()),
        DType::BF16 => HostBuffer::BF16(v.iter().map(|&x| half::bf16::from_f64(x)).collect()),
        DType::I32 => HostBuffer::I32(v.iter().map(|&x| x as i64 as i32).collect()),
        DType::U32 => HostBuffer::U32(v.iter().map(|&x| x as i64 as u32).collect()),
        DType::I8 => HostBuffer::I8(v.iter().map(|&x| x as i64 as i8).collect()),
        DType::U8 => HostBuffer::U8(v.iter().map(|&x| x as i64 as u8).collect()),
        DType::Bool => HostBuffer::Bool(v.iter().map(|&x| x != 0.0).collect()),
    }
}

/// Elementwise check of `got` against the interpreter's `want`: exact for integers and bool,
/// NaN for NaN, infinities exactly, else a relative tolerance per float dtype (f32 leaves room
/// for a few ulps of `exp2` / `log2` and reassociated sums).
fn same(dtype: DType, got: &[f64], want: &[f64]) -> Result<(), String> {
    let rtol = match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 1e-3,
        DType::BF16 => 8e-3,
        DType::I32 | DType::U32 | DType::I8 | DType::U8 | DType::Bool => 0.0,
    };
    let bad: Vec<String> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (&g, &w))| {
            if w.is_nan() {
                !g.is_nan()
            } else if w.is_infinite() || rtol == 0.0 {
                g != w
            } else {
                (g - w).abs() > rtol * w.abs().max(1e-6)
            }
        })
        .map(|(i, (g, w))| format!("[{i}] cpu {g} vs interp {w}"))
        .take(8)
        .collect();
    if got.len() != want.len() || !bad.is_empty() {
        return Err(format!("{} elements vs {}: {}", got.len(), want.len(), bad.join("; ")));
    }
    Ok(())
}

#[test]
fn tir_run_files_match_the_interpreter() {
    if !have_gcc() {
        return;
    }
    let mut checked = 0;
    let mut failures = Vec::new();
    for (path, src, kernel) in tir_kernels() {
        let Some((grid, spec, expect_error)) = run_spec(&src) else { continue };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut want = bind(&kernel, &spec);
        let interp_result = interp::run(&kernel, grid, &mut want);
        assert_eq!(interp_result.is_err(), expect_error, "{name}: the interpreter disagrees with the file");
        for t in run_targets() {
            let mut got = bind(&kernel, &spec);
            let result = run(&kernel, &t, grid, &mut got);
            checked += 1;
            match (&interp_result, result) {
                (Ok(()), Ok(())) => {
                    for ((p, g), w) in kernel.params.iter().zip(&got).zip(&want) {
                        if let (Arg::Buffer(g), Arg::Buffer(w)) = (g, w) {
                            if let Err(e) = same(g.dtype(), &g.to_f64(), &w.to_f64()) {
                                failures.push(format!("{name} [{}] @{}: {e}", t.fingerprint(), p.name));
                            }
                        }
                    }
                }
                (Err(ie), Err(ce)) => {
                    let kind = match ie {
                        interp::InterpError::OutOfBounds { .. } => 1,
                        interp::InterpError::DivisionByZero { .. } => 2,
                        interp::InterpError::BadStep { .. } => 3,
                        _ => -1,
                    };
                    if ce.code != kind {
                        failures.push(format!("{name} [{}]: cpu error {ce:?}, interpreter {ie}", t.fingerprint()));
                    }
                }
                (i, c) => failures.push(format!("{name} [{}]: interpreter {i:?}, cpu {c:?}", t.fingerprint())),
            }
        }
    }
    eprintln!("{checked} (file, target) runs compared");
    assert!(checked >= 30, "only {checked} runs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs library launches on the rendered C for one target.
struct Cpu(CpuTarget);

impl Executor for Cpu {
    fn name(&self) -> String {
        format!("cpu-test[{}]", self.0.fingerprint())
    }

    fn launch(&mut self, launch: &Launch, buffers: &mut Buffers) -> Result<(), String> {
        let mut args = Vec::new();
        for b in &launch.args {
            args.push(match b {
                Binding::Buffer(name) => Arg::Buffer(buffers.remove(name).ok_or(format!("no buffer {name}"))?),
                Binding::Scalar(s) => Arg::Scalar(*s),
            });
        }
        let result = run(&launch.kernel, &self.0, launch.grid, &mut args);
        for (b, a) in launch.args.iter().zip(args) {
            if let (Binding::Buffer(name), Arg::Buffer(buf)) = (b, a) {
                buffers.insert(name.clone(), buf);
            }
        }
        result.map_err(|e| format!("kiln error {e:?}"))
    }
}

/// Every library kernel (example problem, default config, plus a few more configs of its space)
/// on the rendered C against the interpreter, with the library's per-dtype tolerances, and
/// against the naive reference through the library's own check.
#[test]
fn library_kernels_match_the_interpreter() {
    if !have_gcc() {
        return;
    }
    let start = Instant::now();
    let mut failures = Vec::new();
    let mut checked = 0;
    let target = run_targets().pop().expect("a runnable target");
    for k in registry::all() {
        let name = k.id().name();
        let shape = k.example_problem();
        let default = k.default_config(&shape).expect("default config");
        let space = k.space(&shape, &SpaceLimits::default()).expect("space");
        let stride = (space.len() / 3).max(1);
        let mut configs = vec![default.clone()];
        configs.extend(space.iter().step_by(stride).filter(|c| **c != default).take(3).cloned());
        for (i, config) in configs.iter().enumerate() {
            let plan = k.plan(&shape, config).expect("plan");
            let inputs = k.inputs(&shape, 7 + i as u64).expect("inputs");
            let mut want = prepare_buffers(name, &plan, &inputs).expect("buffers");
            let mut got = want.clone();
            kiln_kernels::check::run_plan(name, &plan, &mut kiln_kernels::check::Interpreter, &mut want)
                .expect("interpreter");
            if let Err(e) = kiln_kernels::check::run_plan(name, &plan, &mut Cpu(target.clone()), &mut got) {
                failures.push(format!("{name} [{config}]: {e}"));
                continue;
            }
            checked += 1;
            for spec in plan.buffers.iter().filter(|b| matches!(b.role, Role::Output | Role::InOut)) {
                let tol = k.tolerance(&shape, spec.dtype).expect("tolerance");
                let c = compare(&spec.name, &got[&spec.name], &want[&spec.name].to_f64(), tol.max(1e-6));
                if !c.passed() {
                    failures.push(format!("{name} [{config}] {}: {c:?}", spec.name));
                }
            }
            let report = kiln_kernels::check::check(k, &shape, config, &mut Cpu(target.clone()), 11).expect("check");
            if !report.passed() {
                failures.push(format!("{report}"));
            }
        }
    }
    eprintln!("{checked} (kernel, config) runs on {} compared in {:.1?}", target.fingerprint(), start.elapsed());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- failures are kiln errors, not crashes ----

fn parse(src: &str) -> Kernel {
    let k = kiln_ir::text::parse(src).expect("parses");
    kiln_ir::verify(&k).expect("verifies");
    k
}

fn inst_of(k: &Kernel, mnemonic: &str) -> i32 {
    k.walk().into_iter().find(|(i, _)| k.inst(*i).op.name() == mnemonic).expect("inst").0 .0 as i32
}

#[test]
fn an_out_of_bounds_store_reports_and_writes_nothing() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel oob(@y: ptr<f32>) {
           %offs: i32[8] = arange 2, 10
           %v: f32[8] = const 1.0
           store @y[%offs], %v
         }",
    );
    for t in run_targets() {
        let mut args = vec![Arg::Buffer(HostBuffer::F32(vec![7.0; 6]))];
        let e = run(&k, &t, [3, 1, 1], &mut args).expect_err("out of bounds");
        let want = KilnError { code: 1, inst: inst_of(&k, "store"), param: 0, pad: 0, index: 6, len: 6, program: 0 };
        assert_eq!(e, want, "{}", t.fingerprint());
        assert_eq!(args[0], Arg::Buffer(HostBuffer::F32(vec![7.0; 6])), "nothing written before the check");
    }
}

#[test]
fn an_out_of_bounds_gather_names_the_lane_and_program() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel gather(@idx: ptr<i32>, @x: ptr<f16>, @y: ptr<f16>) {
           %pid: i32 = program_id 0
           %four: i32 = const 4
           %base: i32 = mul %pid, %four
           %lane: i32[4] = arange 0, 4
           %b: i32[4] = broadcast %base
           %offs: i32[4] = add %b, %lane
           %i: i32[4] = load @idx[%offs]
           %v: f16[4] = load @x[%i]
           store @y[%offs], %v
         }",
    );
    for t in run_targets() {
        let idx = HostBuffer::I32(vec![0, 1, 2, 3, 3, 2, -1, 0]);
        let mut args = vec![
            Arg::Buffer(idx),
            Arg::Buffer(HostBuffer::F16(vec![half::f16::ONE; 4])),
            Arg::Buffer(HostBuffer::F16(vec![half::f16::ZERO; 8])),
        ];
        let e = run(&k, &t, [2, 1, 1], &mut args).expect_err("negative index");
        let loads: Vec<i32> =
            k.walk().into_iter().filter(|(i, _)| k.inst(*i).op.name() == "load").map(|(i, _)| i.0 as i32).collect();
        assert_eq!(
            (e.code, e.inst, e.param, e.index, e.len, e.program),
            (1, loads[1], 1, -1, 4, 1),
            "{}",
            t.fingerprint()
        );
    }
}

#[test]
fn an_out_of_bounds_transposed_load_names_the_first_lane_in_row_major_order() {
    if !have_gcc() {
        return;
    }
    // Columns of the [4, 4] offsets are contiguous (read column by column, then transposed);
    // columns 1 and 3 start past the buffer, and lane (0, 1) is the first in row-major order.
    let k = parse(
        "kernel transposed(@idx: ptr<i32>, @x: ptr<f32>, @y: ptr<f32>) {
           %four: i32[4] = arange 0, 4
           %cols: i32[4] = load @idx[%four]
           %width: i32[4] = const 4
           %starts: i32[4] = mul %cols, %width
           %i1: i32[4, 1] = expand_dims %four, 1
           %i: i32[4, 4] = broadcast %i1
           %s1: i32[1, 4] = expand_dims %starts, 0
           %s: i32[4, 4] = broadcast %s1
           %offs: i32[4, 4] = add %s, %i
           %v: f32[4, 4] = load @x[%offs]
           %flat: f32[16] = reshape %v
           %sixteen: i32[16] = arange 0, 16
           store @y[%sixteen], %flat
         }",
    );
    for t in run_targets() {
        let mut args = vec![
            Arg::Buffer(HostBuffer::I32(vec![0, 100, 1, 200])),
            Arg::Buffer(HostBuffer::F32(vec![1.0; 24])),
            Arg::Buffer(HostBuffer::F32(vec![0.0; 16])),
        ];
        let e = run(&k, &t, [1, 1, 1], &mut args).expect_err("out of bounds");
        let loads: Vec<i32> =
            k.walk().into_iter().filter(|(i, _)| k.inst(*i).op.name() == "load").map(|(i, _)| i.0 as i32).collect();
        assert_eq!((e.code, e.inst, e.param, e.index, e.len), (1, loads[1], 1, 400, 24), "{}", t.fingerprint());
    }
}

#[test]
fn division_by_zero_and_bad_steps_are_errors() {
    if !have_gcc() {
        return;
    }
    let div = parse(
        "kernel div(@x: ptr<i32>, @y: ptr<i32>) {
           %offs: i32[4] = arange 0, 4
           %a: i32[4] = load @x[%offs]
           %q: i32[4] = div %a, %a
           store @y[%offs], %q
         }",
    );
    let step = parse(
        "kernel step(@y: ptr<i32>, %s: i32) {
           %zero: i32 = const 0
           %ten: i32 = const 10
           %r: i32 = for %i = %zero to %ten step %s iter(%a = %zero) {
             %b: i32 = add %a, %i
             yield %b
           }
           %o: i32[1] = arange 0, 1
           %rb: i32[1] = broadcast %r
           store @y[%o], %rb
         }",
    );
    for t in run_targets() {
        // i32::MIN / -1 wraps instead of trapping; a zero lane is an error.
        let mut ok =
            vec![Arg::Buffer(HostBuffer::I32(vec![i32::MIN, -1, 5, 7])), Arg::Buffer(HostBuffer::I32(vec![0; 4]))];
        run(&div, &t, [1, 1, 1], &mut ok).expect("no zero divisor");
        assert_eq!(ok[1], Arg::Buffer(HostBuffer::I32(vec![1; 4])));
        let mut args = vec![Arg::Buffer(HostBuffer::I32(vec![3, 0, 5, 7])), Arg::Buffer(HostBuffer::I32(vec![9; 4]))];
        let e = run(&div, &t, [2, 1, 1], &mut args).expect_err("zero divisor");
        assert_eq!((e.code, e.inst, e.param, e.program), (2, inst_of(&div, "div"), -1, 0), "{}", t.fingerprint());
        assert_eq!(args[1], Arg::Buffer(HostBuffer::I32(vec![9; 4])));

        let mut args = vec![Arg::Buffer(HostBuffer::I32(vec![0])), Arg::Scalar(Scalar::I32(-2))];
        let e = run(&step, &t, [1, 1, 1], &mut args).expect_err("bad step");
        assert_eq!((e.code, e.inst, e.index), (3, inst_of(&step, "for"), -2), "{}", t.fingerprint());
        let mut args = vec![Arg::Buffer(HostBuffer::I32(vec![0])), Arg::Scalar(Scalar::I32(3))];
        run(&step, &t, [1, 1, 1], &mut args).expect("good step");
        assert_eq!(args[0], Arg::Buffer(HostBuffer::I32(vec![18])));
    }
}

/// Corners the `.tir` files leave out, each compared with the interpreter on every runnable
/// target: 8-bit arithmetic, division and shifts; IEEE min / max with NaN and signed zeros;
/// saturating float → int casts; integer → f16 / bf16 rounding from the exact integer; f16 and
/// bf16 arithmetic rounded per op; reductions over NaN; bitcasts between f16 and bf16.
#[test]
fn edge_cases_match_the_interpreter() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel edges(@a8: ptr<i8>, @b8: ptr<i8>, @u8s: ptr<u8>, @f: ptr<f32>, @g: ptr<f32>, @big: ptr<i32>,
                      @o_i8: ptr<i8>, @o_u8: ptr<u8>, @o_f: ptr<f32>, @o_h: ptr<f16>, @o_bf: ptr<bf16>,
                      @o_i: ptr<i32>, @o_u: ptr<u32>, @o_r: ptr<f32>) {
           %l: i32[8] = arange 0, 8
           %l2: i32[8] = arange 8, 16
           %l3: i32[8] = arange 16, 24
           %l4: i32[8] = arange 24, 32
           %a: i8[8] = load @a8[%l]
           %b: i8[8] = load @b8[%l]
           %q: i8[8] = div %a, %b
           %r: i8[8] = rem %a, %b
           %m: i8[8] = mul %a, %b
           %sh: i8[8] = shr %a, %b
           %sl: i8[8] = shl %a, %b
           %ab: i8[8] = abs %a
           store @o_i8[%l], %q
           store @o_i8[%l2], %r
           store @o_i8[%l3], %m
           store @o_i8[%l4], %sh
           %l5: i32[8] = arange 32, 40
           store @o_i8[%l5], %sl
           %l6: i32[8] = arange 40, 48
           store @o_i8[%l6], %ab
           %u: u8[8] = load @u8s[%l]
           %ub: u8[8] = bitcast %b
           %us: u8[8] = shr %u, %ub
           %ua: u8[8] = add %u, %ub
           %un: u8[8] = neg %u
           store @o_u8[%l], %us
           store @o_u8[%l2], %ua
           store @o_u8[%l3], %un
           %x: f32[8] = load @f[%l]
           %y: f32[8] = load @g[%l]
           %mx: f32[8] = max %x, %y
           %mn: f32[8] = min %x, %y
           %rm: f32[8] = rem %x, %y
           store @o_f[%l], %mx
           store @o_f[%l2], %mn
           store @o_f[%l3], %rm
           %xi: i32[8] = cast %x
           %xu: u32[8] = cast %x
           %x8: u8[8] = cast %x
           %xs8: i8[8] = cast %x
           %x8i: i32[8] = cast %x8
           %xs8i: i32[8] = cast %xs8
           store @o_i[%l], %xi
           store @o_u[%l], %xu
           store @o_i[%l2], %x8i
           store @o_i[%l3], %xs8i
           %bi: i32[8] = load @big[%l]
           %bh: f16[8] = cast %bi
           %bb: bf16[8] = cast %bi
           %bu: u32[8] = bitcast %bi
           %buh: f16[8] = cast %bu
           store @o_h[%l], %bh
           store @o_bf[%l], %bb
           store @o_h[%l2], %buh
           %xh: f16[8] = cast %x
           %yh: f16[8] = cast %y
           %ph: f16[8] = mul %xh, %yh
           %sh2: f16[8] = add %ph, %xh
           %dh: f16[8] = div %xh, %yh
           store @o_h[%l3], %sh2
           store @o_h[%l4], %dh
           %xb: bf16[8] = cast %x
           %yb: bf16[8] = cast %y
           %pb: bf16[8] = mul %xb, %yb
           %sb: bf16[8] = sub %pb, %yb
           store @o_bf[%l2], %sb
           %hb: bf16[8] = bitcast %xh
           store @o_bf[%l3], %hb
           %t: f32[2, 4] = reshape %x
           %rmax: f32[2] = reduce_max %t, 1
           %rsum: f32[4] = reduce_sum %t, 0
           %cmax: f32[4] = reduce_max %t, 0
           %z2: i32[2] = arange 0, 2
           %z4: i32[4] = arange 2, 6
           %z5: i32[4] = arange 6, 10
           store @o_r[%z2], %rmax
           store @o_r[%z4], %rsum
           store @o_r[%z5], %cmax
         }",
    );
    let nan = f32::NAN;
    let inputs = || {
        vec![
            Arg::Buffer(HostBuffer::I8(vec![-128, -128, 127, -7, 7, -1, 100, -100])),
            Arg::Buffer(HostBuffer::I8(vec![-1, 3, 2, 2, -3, 9, 1, 8])),
            Arg::Buffer(HostBuffer::U8(vec![255, 128, 1, 0, 200, 17, 99, 3])),
            Arg::Buffer(HostBuffer::F32(vec![nan, -0.0, 0.0, 3e9, -3e9, 300.7, -129.5, 1.000_976_6])),
            Arg::Buffer(HostBuffer::F32(vec![1.0, 0.0, -0.0, nan, 2.5, -7.25, 1e-3, 3.0])),
            Arg::Buffer(HostBuffer::I32(vec![
                65519,
                65520,
                2049,
                2051,
                16_777_217,
                -33_554_435,
                2_147_483_647,
                -2_147_483_648,
            ])),
            Arg::Buffer(HostBuffer::I8(vec![0; 48])),
            Arg::Buffer(HostBuffer::U8(vec![0; 24])),
            Arg::Buffer(HostBuffer::F32(vec![0.0; 24])),
            Arg::Buffer(HostBuffer::F16(vec![half::f16::ZERO; 32])),
            Arg::Buffer(HostBuffer::BF16(vec![half::bf16::ZERO; 24])),
            Arg::Buffer(HostBuffer::I32(vec![0; 24])),
            Arg::Buffer(HostBuffer::U32(vec![0; 8])),
            Arg::Buffer(HostBuffer::F32(vec![0.0; 10])),
        ]
    };
    let mut want = inputs();
    interp::run(&k, [1, 1, 1], &mut want).expect("interpreter");
    for t in run_targets() {
        let mut got = inputs();
        run(&k, &t, [1, 1, 1], &mut got).expect("cpu");
        for ((p, g), w) in k.params.iter().zip(&got).zip(&want) {
            let (Arg::Buffer(g), Arg::Buffer(w)) = (g, w) else { continue };
            // Exact, except that a NaN need only be a NaN.
            let (gf, wf) = (g.to_f64(), w.to_f64());
            let ok = gf.iter().zip(&wf).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
            assert!(ok, "{} @{}: cpu {gf:?}\n interp {wf:?}", t.fingerprint(), p.name);
        }
    }
}

// ---- byte dots ----

/// The int8-activation GEMV of `dequant_gemm_w4` (`xq=i8`), whose inner loop is a byte dot:
/// AVX-512 VNNI sources use `vpdpbusd`, the others the scalar form, and every target this machine
/// runs matches the reference (group inside one tile, groups of 32 and of 64 across a tile of
/// 128, split-K, ragged n, f16 and f32).
#[test]
fn pairs_of_f16_per_row_are_gathered_on_avx512_and_match_the_reference() {
    // Group 32 and 64-column steps: each row of 16 reads two scales and two mins per step, a
    // `[16, 2]` f16 tile of evenly spaced rows, on AVX-512 gathered 32 bits a row (the f16 GEMV)
    // or, in a kernel with a byte dot, assembled in a register from its rows and converted at
    // once (the int8 GEMV, whose next loads span the tile), and copied row by row elsewhere and
    // in the ragged last tile (n = 45: two whole tiles, then 13 rows).
    if !have_gcc() {
        eprintln!("SKIPPED: no C compiler on this machine");
        return;
    }
    let k = registry::lookup("dequant_gemm_w4").expect("kernel");
    let cases = [
        (
            "m=1,n=45,k=192,group=32,act=f32,xq=i8",
            "block_m=1,block_n=16,block_k=64,split_k=1",
            1,
            "kiln_f16_pack_rows(&",
        ),
        (
            "m=2,n=45,k=192,group=32,act=f16,quant=asym",
            "block_m=1,block_n=32,block_k=64,split_k=1",
            0,
            "kiln_f16_gather_pairs(&",
        ),
    ];
    let mut failures = Vec::new();
    for (shape, config, launch, helper) in cases {
        let (shape, config) = (Args::parse(shape).unwrap(), Args::parse(config).unwrap());
        let plan = k.plan(&shape, &config).expect("plan");
        let gemv = &plan.launches[launch].kernel;
        for t in all_targets() {
            let code = render(gemv, &t).expect("renders").code;
            let gathers = code.matches(helper).count();
            let want = if t.isa == kiln_codegen::cpu::CpuIsa::Avx512 { 2 } else { 0 };
            // Once per version of the step loop (see `the_row_loop_gemv_checks_its_steps_once`).
            let versions = if code.contains("int version") { 2 } else { 1 };
            assert_eq!(gathers, want * versions, "[{}] {shape}: scale and min gathers", t.fingerprint());
        }
        for t in run_targets() {
            let report = kiln_kernels::check::check(k, &shape, &config, &mut Cpu(t.clone()), 7).expect("check");
            if !report.passed() {
                failures.push(format!("[{}] {report}", t.fingerprint()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_row_loop_gemv_checks_its_steps_once() {
    // Loop versioning (`render/versioning.rs`): the weight and x tiles of a step are checked at
    // the first and the last step before the loop, and the loop's first version checks nothing
    // per step. Both versions are compared with the interpreter by the conformance suite and
    // `library_kernels_match_the_interpreter` (ragged n: the last program's masked rows take
    // the checking version); `run_loop_version*.tir` do the same on a small loop, in bounds and
    // two elements short.
    let k = registry::lookup("dequant_gemm_w4").expect("kernel");
    let shape = Args::parse("m=1,n=45,k=256,group=128,act=f32").unwrap();
    let config = Args::parse("gemv=1,block_m=1,block_n=32,block_k=128,row_loop=4,split_k=1").unwrap();
    let plan = k.plan(&shape, &config).expect("plan");
    let gemv = &plan.launches.last().expect("the GEMV launch").kernel;
    for t in all_targets() {
        let code = render(gemv, &t).expect("renders").code;
        assert_eq!(code.matches("int version").count(), 1, "[{}] one versioned loop", t.fingerprint());
        let proven = code.matches("const int dk_ok = 1;").count();
        assert!(
            proven >= 4,
            "[{}] {proven} tiles without per-step checks (weights, x halves, x sums)",
            t.fingerprint()
        );
    }
    if !have_gcc() {
        eprintln!("SKIPPED (run part): no C compiler on this machine");
        return;
    }
    for t in run_targets() {
        let report = kiln_kernels::check::check(k, &shape, &config, &mut Cpu(t.clone()), 11).expect("check");
        assert!(report.passed(), "[{}] {report}", t.fingerprint());
    }
}

#[test]
fn int8_gemv_byte_dots_use_vnni_and_match_the_reference() {
    if !have_gcc() {
        eprintln!("SKIPPED: no C compiler on this machine");
        return;
    }
    let k = registry::lookup("dequant_gemm_w4").expect("kernel");
    let cases = [
        ("m=1,n=45,k=256,group=128,act=f32,xq=i8", "block_m=1,block_n=32,block_k=128,split_k=1"),
        ("m=2,n=70,k=256,group=32,act=f16,quant=sym,xq=i8", "block_m=1,block_n=64,block_k=128,split_k=1"),
        ("m=1,n=33,k=512,group=64,act=f32,xq=i8", "block_m=1,block_n=16,block_k=128,split_k=2"),
        ("m=1,n=20,k=128,group=32,act=f32,xq=i8", "block_m=1,block_n=16,block_k=64,split_k=1"),
    ];
    let mut failures = Vec::new();
    for (shape, config) in cases {
        let (shape, config) = (Args::parse(shape).unwrap(), Args::parse(config).unwrap());
        let plan = k.plan(&shape, &config).expect("plan");
        let gemv = &plan.launches[1].kernel;
        for t in all_targets() {
            let code = render(gemv, &t).expect("renders").code;
            let vnni = code.contains("_dpbusd_epi32(");
            assert_eq!(vnni, t.vnni && t.isa == kiln_codegen::cpu::CpuIsa::Avx512, "[{}] {shape}", t.fingerprint());
            // The weight rows are read in place: the dot steps rows by the stride set at run
            // time (the buffer's row length, or the fallback tile's), not out of a stack copy.
            let in_place = code.lines().any(|l| l.contains("_dpbusd_epi32(") && l.contains("_s0)"));
            assert_eq!(in_place, vnni, "[{}] {shape}: weights not read in place", t.fingerprint());
        }
        for t in run_targets() {
            let report = kiln_kernels::check::check(k, &shape, &config, &mut Cpu(t.clone()), 5).expect("check");
            if !report.passed() {
                failures.push(format!("[{}] {report}", t.fingerprint()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The prelude's exp2 (`kiln_exp2f`, and `kiln_exp2v` in loops of whole vectors) against f64
/// `exp2` rounded to f32, for arguments swept over [-200, 200] plus the edges: -inf, large
/// negatives and everything below -150 give 0, subnormal results, 128 and above overflow to inf,
/// NaN stays NaN. 64 lanes run a vector at a time; 5 lanes (not a whole vector) run scalar, and
/// the two forms give the same bits.
#[test]
fn exp2_matches_f64_over_a_wide_range_in_vector_and_scalar_loops() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel exp2s(@x: ptr<f32>, @y: ptr<f32>, @x5: ptr<f32>, @y5: ptr<f32>) {
           %p: i32 = program_id 0
           %l: i32[64] = arange 0, 64
           %c64: i32 = const 64
           %base: i32 = mul %p, %c64
           %bb: i32[64] = broadcast %base
           %o: i32[64] = add %bb, %l
           %a: f32[64] = load @x[%o]
           %e: f32[64] = exp2 %a
           store @y[%o], %e
           %l5: i32[5] = arange 0, 5
           %c5: i32 = const 5
           %five: i32 = mul %p, %c5
           %b5: i32[5] = broadcast %five
           %o5: i32[5] = add %b5, %l5
           %a5: f32[5] = load @x5[%o5]
           %e5: f32[5] = exp2 %a5
           store @y5[%o5], %e5
         }",
    );
    let mut xs: Vec<f32> = (0..64 * 60).map(|i| -200.0 + 400.0 * i as f32 / (64.0 * 60.0 - 1.0) + 0.013).collect();
    let edges = [
        f32::NEG_INFINITY,
        -1e30,
        -1000.0,
        -160.0,
        -150.0,
        -149.5,
        -149.0,
        -140.3,
        -127.0,
        -126.0,
        -0.5,
        -0.0,
        0.0,
        1e-8,
        0.5,
        1.0,
        126.9,
        127.999,
        128.0,
        1e30,
        f32::INFINITY,
        f32::NAN,
    ];
    xs.extend_from_slice(&edges);
    xs.resize(xs.len().div_ceil(64) * 64, 3.25);
    let programs = (xs.len() / 64) as u32;
    let x5: Vec<f32> = xs[..programs as usize * 5].to_vec();
    for t in run_targets() {
        let mut args = vec![
            Arg::Buffer(HostBuffer::F32(xs.clone())),
            Arg::Buffer(HostBuffer::F32(vec![-7.0; xs.len()])),
            Arg::Buffer(HostBuffer::F32(x5.clone())),
            Arg::Buffer(HostBuffer::F32(vec![-7.0; x5.len()])),
        ];
        run(&k, &t, [programs, 1, 1], &mut args).unwrap();
        let (Arg::Buffer(HostBuffer::F32(y)), Arg::Buffer(HostBuffer::F32(y5))) = (&args[1], &args[3]) else {
            unreachable!("f32 outputs")
        };
        let mut worst = 0.0f64;
        for (&x, &got) in xs.iter().zip(y) {
            let want = (x as f64).exp2() as f32;
            if want.is_nan() {
                assert!(got.is_nan(), "{}: exp2({x}) = {got}, want NaN", t.fingerprint());
            } else if want == 0.0 || want.is_infinite() || want < f32::MIN_POSITIVE {
                // Zero, overflow and subnormal results: within the smallest subnormal.
                assert!(
                    got == want || (got - want).abs() <= 2.0 * f32::from_bits(1),
                    "{}: exp2({x}) = {got:e}, want {want:e}",
                    t.fingerprint()
                );
            } else {
                let rel = ((got as f64) - (x as f64).exp2()).abs() / (x as f64).exp2();
                worst = worst.max(rel);
                assert!(rel < 2.4e-7, "{}: exp2({x}) = {got:e}, want {want:e} (relative {rel:e})", t.fingerprint());
            }
        }
        assert!(worst > 0.0, "a polynomial exp2 is not exact everywhere; the sweep must see it");
        for (i, &got) in y5.iter().enumerate() {
            let vector = y[i];
            assert!(
                got.to_bits() == vector.to_bits() || (got.is_nan() && vector.is_nan()),
                "{}: scalar exp2({}) = {got:e}, vector {vector:e}",
                t.fingerprint(),
                x5[i]
            );
        }
    }
}

/// A transposed load read only by a `dot` is stored by columns and the dot reads them in place
/// (no transpose): on a whole tile, with masked-off columns, and when a masked-off column starts
/// out of bounds (every lane then goes on its own, into the column-major storage).
#[test]
fn a_transposed_load_read_by_dot_is_stored_by_columns() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel qk(@q: ptr<f32>, @k: ptr<f32>, @out: ptr<f32>, %n_keys: i32) {
           %r: i32[4] = arange 0, 4
           %d: i32[32] = arange 0, 32
           %c32: i32 = const 32
           %c32v: i32[4] = broadcast %c32
           %rq: i32[4] = mul %r, %c32v
           %rq2: i32[4, 1] = expand_dims %rq, 1
           %rqb: i32[4, 32] = broadcast %rq2
           %d2: i32[1, 32] = expand_dims %d, 0
           %d2b: i32[4, 32] = broadcast %d2
           %qo: i32[4, 32] = add %rqb, %d2b
           %q: f32[4, 32] = load @q[%qo]
           %keys: i32[16] = arange 0, 16
           %nk: i32[16] = broadcast %n_keys
           %ok: bool[16] = cmp lt %keys, %nk
           %ks: i32[16] = broadcast %c32
           %kb: i32[16] = mul %keys, %ks
           %dc: i32[32, 1] = expand_dims %d, 1
           %dcb: i32[32, 16] = broadcast %dc
           %kr: i32[1, 16] = expand_dims %kb, 0
           %krb: i32[32, 16] = broadcast %kr
           %ko: i32[32, 16] = add %dcb, %krb
           %okr: bool[1, 16] = expand_dims %ok, 0
           %okb: bool[32, 16] = broadcast %okr
           %zero: f32 = const 0.0
           %kt: f32[32, 16] = load @k[%ko], mask %okb, other %zero
           %acc: f32[4, 16] = const 0.5
           %s: f32[4, 16] = dot %q, %kt, %acc
           %c16: i32 = const 16
           %c16v: i32[4] = broadcast %c16
           %ro: i32[4] = mul %r, %c16v
           %ro2: i32[4, 1] = expand_dims %ro, 1
           %rob: i32[4, 16] = broadcast %ro2
           %kc: i32[1, 16] = expand_dims %keys, 0
           %kcb: i32[4, 16] = broadcast %kc
           %oo: i32[4, 16] = add %rob, %kcb
           store @out[%oo], %s
         }",
    );
    let q: Vec<f32> = (0..128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    let keys: Vec<f32> = (0..12 * 32).map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0).collect();
    let src = kiln_codegen::cpu::render(&k, &CpuTarget::avx512()).unwrap().code;
    assert!(!src.contains("kiln_transpose_f32(v"), "the dot reads the columns as stored");
    assert!(src.contains("_rows[j + 0][kk]"), "the dot reads the columns where they lie");
    // The buffer holds 12 keys: with 12 visible, the masked-off columns 12..15 start out of
    // bounds; with 7, every column is in bounds and 7..15 are masked off.
    for n_keys in [7, 12] {
        let bind = || {
            vec![
                Arg::Buffer(HostBuffer::F32(q.clone())),
                Arg::Buffer(HostBuffer::F32(keys.clone())),
                Arg::Buffer(HostBuffer::F32(vec![f32::NAN; 64])),
                Arg::Scalar(Scalar::I32(n_keys)),
            ]
        };
        let mut want = bind();
        interp::run(&k, [1, 1, 1], &mut want).unwrap();
        for t in run_targets() {
            let mut got = bind();
            run(&k, &t, [1, 1, 1], &mut got).unwrap();
            let (Arg::Buffer(g), Arg::Buffer(w)) = (&got[2], &want[2]) else { unreachable!("buffers") };
            same(DType::F32, &g.to_f64(), &w.to_f64())
                .unwrap_or_else(|e| panic!("{} n_keys {n_keys}: {e}", t.fingerprint()));
        }
    }
}

/// Decode attention's `kᵀ` against f32 query rows: f16 keys at gathered row starts (pages),
/// widened by a cast that views the load, read by a column dot. The columns are read where
/// they lie, through a table of pointers the dot converts from, and match the interpreter:
/// every key visible, masked-off keys, a masked-off key whose start lies far out of bounds,
/// and a visible key whose row runs past the buffer, which fails as the interpreter does.
#[test]
fn gathered_f16_key_columns_read_by_a_dot_through_a_cast_stay_in_place() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel qk(@q: ptr<f32>, @k: ptr<f16>, @idx: ptr<i32>, @out: ptr<f32>, %n: i32) {
           %r: i32[4] = arange 0, 4
           %d: i32[32] = arange 0, 32
           %c32: i32 = const 32
           %c32v: i32[4] = broadcast %c32
           %rq: i32[4] = mul %r, %c32v
           %rq2: i32[4, 1] = expand_dims %rq, 1
           %rqb: i32[4, 32] = broadcast %rq2
           %d2: i32[1, 32] = expand_dims %d, 0
           %d2b: i32[4, 32] = broadcast %d2
           %qo: i32[4, 32] = add %rqb, %d2b
           %q: f32[4, 32] = load @q[%qo]
           %keys: i32[16] = arange 0, 16
           %nk: i32[16] = broadcast %n
           %ok: bool[16] = cmp lt %keys, %nk
           %slot: i32[16] = load @idx[%keys]
           %ks: i32[16] = broadcast %c32
           %kb: i32[16] = mul %slot, %ks
           %dc: i32[32, 1] = expand_dims %d, 1
           %dcb: i32[32, 16] = broadcast %dc
           %kr: i32[1, 16] = expand_dims %kb, 0
           %krb: i32[32, 16] = broadcast %kr
           %ko: i32[32, 16] = add %dcb, %krb
           %okr: bool[1, 16] = expand_dims %ok, 0
           %okb: bool[32, 16] = broadcast %okr
           %zero: f16 = const 0.0
           %kh: f16[32, 16] = load @k[%ko], mask %okb, other %zero
           %kt: f32[32, 16] = cast %kh
           %acc: f32[4, 16] = const 0.5
           %s: f32[4, 16] = dot %q, %kt, %acc
           %c16: i32 = const 16
           %c16v: i32[4] = broadcast %c16
           %ro: i32[4] = mul %r, %c16v
           %ro2: i32[4, 1] = expand_dims %ro, 1
           %rob: i32[4, 16] = broadcast %ro2
           %kc: i32[1, 16] = expand_dims %keys, 0
           %kcb: i32[4, 16] = broadcast %kc
           %oo: i32[4, 16] = add %rob, %kcb
           store @out[%oo], %s
         }",
    );
    for t in all_targets() {
        let src = render(&k, &t).unwrap().code;
        assert!(src.contains("_rows[j + 0][kk]"), "{}: the dot reads the key rows in place", t.fingerprint());
        assert!(!src.contains("kiln_transpose_f32(v"), "{}: nothing is transposed", t.fingerprint());
    }
    let q: Vec<f32> = (0..128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
    let keys: Vec<f64> = (0..20 * 32).map(|i| ((i * 53 % 97) as f64 - 48.0) / 16.0).collect();
    check_paged_rows(&k, HostBuffer::F32(q), HostBuffer::from_f64(DType::F16, &keys), 64);
}

/// A `select` on a compare and a stored `bool` tile, over `[4, 32]` (whole vectors along the
/// last dim), runs as a vector loop on masks (attention's score mask) and picks exactly the
/// interpreter's bits: NaN and -0 operands, an infinite fill, lanes true and false in every
/// vector and whole rows of each.
#[test]
fn a_select_on_masks_runs_a_vector_at_a_time_and_matches_the_interpreter() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel masked(@x: ptr<f32>, @lim: ptr<i32>, @out: ptr<f32>, @flags: ptr<bool>, %n: i32, %scale: f32) {
           %r: i32[4] = arange 0, 4
           %c: i32[32] = arange 0, 32
           %c32: i32 = const 32
           %c32v: i32[4] = broadcast %c32
           %ro: i32[4] = mul %r, %c32v
           %ro2: i32[4, 1] = expand_dims %ro, 1
           %rob: i32[4, 32] = broadcast %ro2
           %co: i32[1, 32] = expand_dims %c, 0
           %cob: i32[4, 32] = broadcast %co
           %o: i32[4, 32] = add %rob, %cob
           %x: f32[4, 32] = load @x[%o]
           %lim: i32[4] = load @lim[%r]
           %lim2: i32[4, 1] = expand_dims %lim, 1
           %limb: i32[4, 32] = broadcast %lim2
           %nb: i32[32] = broadcast %n
           %ok: bool[32] = cmp lt %c, %nb
           store @flags[%c], %ok
           %ok2: bool[1, 32] = expand_dims %ok, 0
           %okb: bool[4, 32] = broadcast %ok2
           %vis: bool[4, 32] = cmp le %cob, %limb
           %both: bool[4, 32] = and %vis, %okb
           %sb: f32[4, 32] = broadcast %scale
           %xs: f32[4, 32] = mul %x, %sb
           %ninf: f32 = const -inf
           %ninfb: f32[4, 32] = broadcast %ninf
           %y: f32[4, 32] = select %both, %xs, %ninfb
           store @out[%o], %y
         }",
    );
    let src = render(&k, &CpuTarget::avx512()).unwrap().code;
    assert!(src.contains("kiln_u8v_widen(kiln_u8v_load("), "the stored bool tile is read as a mask");
    let program = &src[src.find("masked_program(").expect("the program function")..];
    assert!(!program.contains(" ? "), "no scalar select is left:\n{program}");
    let mut x: Vec<f32> = (0..128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0).collect();
    x[3] = f32::NAN;
    x[40] = -0.0;
    x[77] = f32::INFINITY;
    for (n, lim) in [(32, [0, 31, 5, 17]), (20, [-1, 40, 19, 20]), (0, [3, 3, 3, 3])] {
        let bind = || {
            vec![
                Arg::Buffer(HostBuffer::F32(x.clone())),
                Arg::Buffer(HostBuffer::I32(lim.to_vec())),
                Arg::Buffer(HostBuffer::F32(vec![7.0; 128])),
                Arg::Buffer(HostBuffer::Bool(vec![true; 32])),
                Arg::Scalar(Scalar::I32(n)),
                Arg::Scalar(Scalar::F32(0.75)),
            ]
        };
        let mut want = bind();
        interp::run(&k, [1, 1, 1], &mut want).unwrap();
        for t in run_targets() {
            let mut got = bind();
            run(&k, &t, [1, 1, 1], &mut got).unwrap();
            let (Arg::Buffer(HostBuffer::F32(g)), Arg::Buffer(HostBuffer::F32(w))) = (&got[2], &want[2]) else {
                unreachable!("f32 outputs")
            };
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{} n {n} lim {lim:?} lane {i}: {a} against the interpreter's {b}",
                    t.fingerprint()
                );
            }
        }
    }
}

/// An f16 tile of gathered rows read only as a `dot`'s right operand (attention's V over a
/// paged cache) is a table of row pointers, not a converted copy: its masked-off rows read as
/// zeros (even when their start is out of bounds), an active row out of bounds is an error as
/// in the interpreter, and the results match the interpreter's.
#[test]
fn gathered_rows_read_by_dot_stay_in_place() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel pv(@p: ptr<f16>, @v: ptr<f16>, @idx: ptr<i32>, @out: ptr<f32>, %n: i32) {
           %r: i32[4] = arange 0, 4
           %keys: i32[16] = arange 0, 16
           %c16: i32 = const 16
           %c16v: i32[4] = broadcast %c16
           %pr: i32[4] = mul %r, %c16v
           %pr2: i32[4, 1] = expand_dims %pr, 1
           %prb: i32[4, 16] = broadcast %pr2
           %kc: i32[1, 16] = expand_dims %keys, 0
           %kcb: i32[4, 16] = broadcast %kc
           %po: i32[4, 16] = add %prb, %kcb
           %p: f16[4, 16] = load @p[%po]
           %nb: i32[16] = broadcast %n
           %ok: bool[16] = cmp lt %keys, %nb
           %slot: i32[16] = load @idx[%keys]
           %c32: i32 = const 32
           %c32v: i32[16] = broadcast %c32
           %start: i32[16] = mul %slot, %c32v
           %st2: i32[16, 1] = expand_dims %start, 1
           %stb: i32[16, 32] = broadcast %st2
           %d: i32[32] = arange 0, 32
           %d2: i32[1, 32] = expand_dims %d, 0
           %db: i32[16, 32] = broadcast %d2
           %vo: i32[16, 32] = add %stb, %db
           %ok2: bool[16, 1] = expand_dims %ok, 1
           %okb: bool[16, 32] = broadcast %ok2
           %zero: f16 = const 0.0
           %vt: f16[16, 32] = load @v[%vo], mask %okb, other %zero
           %acc: f32[4, 32] = const 0.25
           %s: f32[4, 32] = dot %p, %vt, %acc
           %c32r: i32[4] = broadcast %c32
           %or: i32[4] = mul %r, %c32r
           %or2: i32[4, 1] = expand_dims %or, 1
           %orb: i32[4, 32] = broadcast %or2
           %dc: i32[1, 32] = expand_dims %d, 0
           %dcb: i32[4, 32] = broadcast %dc
           %oo: i32[4, 32] = add %orb, %dcb
           store @out[%oo], %s
         }",
    );
    for t in all_targets() {
        let src = render(&k, &t).unwrap().code;
        assert!(src.contains("_rows[k][j"), "{}: the dot reads the rows in place", t.fingerprint());
    }
    let p: Vec<f64> = (0..64).map(|i| ((i * 37 % 29) as f64 - 14.0) / 8.0).collect();
    let v: Vec<f64> = (0..20 * 32).map(|i| ((i * 53 % 97) as f64 - 48.0) / 16.0).collect();
    check_paged_rows(&k, HostBuffer::from_f64(DType::F16, &p), HostBuffer::from_f64(DType::F16, &v), 128);
}

/// Runs `k(@lhs, @rows, @idx, @out, %n)` (`idx` picks 16 rows of 32 out of the 20 in `rows`,
/// `n` of them visible) against the interpreter on every run target: all rows visible, some
/// masked off, a masked-off one whose start lies far out of bounds, and a visible one running
/// past the buffer, which must fail on both sides.
fn check_paged_rows(k: &Kernel, lhs: HostBuffer, rows: HostBuffer, out_len: usize) {
    let base: Vec<i32> = (0..16).map(|i| (i * 7 + 3) % 20).collect();
    let mut masked_far = base.clone();
    masked_far[13] = 1 << 20;
    let mut active_far = base.clone();
    active_far[5] = 20;
    for (n, idx, fails) in
        [(16, base.clone(), false), (11, base, false), (11, masked_far, false), (16, active_far, true)]
    {
        let bind = || {
            vec![
                Arg::Buffer(lhs.clone()),
                Arg::Buffer(rows.clone()),
                Arg::Buffer(HostBuffer::I32(idx.clone())),
                Arg::Buffer(HostBuffer::F32(vec![f32::NAN; out_len])),
                Arg::Scalar(Scalar::I32(n)),
            ]
        };
        let mut want = bind();
        let interp_result = interp::run(k, [1, 1, 1], &mut want);
        assert_eq!(interp_result.is_err(), fails, "n {n}, {idx:?}: the interpreter");
        for t in run_targets() {
            let mut got = bind();
            let result = run(k, &t, [1, 1, 1], &mut got);
            assert_eq!(result.is_err(), fails, "{} n {n}, {idx:?}: {result:?}", t.fingerprint());
            if fails {
                continue;
            }
            let (Arg::Buffer(g), Arg::Buffer(w)) = (&got[3], &want[3]) else { unreachable!("buffers") };
            same(DType::F32, &g.to_f64(), &w.to_f64())
                .unwrap_or_else(|e| panic!("{} n {n}, {idx:?}: {e}", t.fingerprint()));
        }
    }
}

/// A store whose offsets run down the columns (`[8, 16]`, column `c` at `c · stride`, a `yᵀ`
/// tile written into `y`) goes through registers into whole rows when its columns are in bounds
/// and apart, and lane by lane otherwise, with the interpreter's results in every case: a whole
/// tile, masked lanes (a ragged edge on both dims), columns that overlap (`stride` below the
/// column length: the later lane in row-major order wins) and a column past the buffer (the
/// first lane out of bounds in row-major order is reported and nothing is written).
#[test]
fn a_transposed_store_writes_rows_and_matches_the_interpreter() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel yt(@x: ptr<f32>, @y: ptr<f32>, %stride: i32, %rows: i32, %cols: i32) {
           %i: i32[8] = arange 0, 8
           %c: i32[16] = arange 0, 16
           %c16: i32 = const 16
           %c16v: i32[8] = broadcast %c16
           %xr: i32[8] = mul %i, %c16v
           %xr2: i32[8, 1] = expand_dims %xr, 1
           %xrb: i32[8, 16] = broadcast %xr2
           %cc: i32[1, 16] = expand_dims %c, 0
           %ccb: i32[8, 16] = broadcast %cc
           %xo: i32[8, 16] = add %xrb, %ccb
           %v: f32[8, 16] = load @x[%xo]
           %sv: i32[16] = broadcast %stride
           %cs: i32[16] = mul %c, %sv
           %cs2: i32[1, 16] = expand_dims %cs, 0
           %csb: i32[8, 16] = broadcast %cs2
           %ic: i32[8, 1] = expand_dims %i, 1
           %icb: i32[8, 16] = broadcast %ic
           %yo: i32[8, 16] = add %csb, %icb
           %rv: i32[8] = broadcast %rows
           %rok: bool[8] = cmp lt %i, %rv
           %cv: i32[16] = broadcast %cols
           %cok: bool[16] = cmp lt %c, %cv
           %rok2: bool[8, 1] = expand_dims %rok, 1
           %rokb: bool[8, 16] = broadcast %rok2
           %cok2: bool[1, 16] = expand_dims %cok, 0
           %cokb: bool[8, 16] = broadcast %cok2
           %ok: bool[8, 16] = and %rokb, %cokb
           store @y[%yo], %v, mask %ok
         }",
    );
    let src = kiln_codegen::cpu::render(&k, &CpuTarget::avx512()).unwrap().code;
    assert!(src.contains("kiln_transpose_f32(kt"), "the tile is transposed through registers");
    let x: Vec<f32> = (0..128).map(|i| ((i * 29 % 83) as f32 - 41.0) / 16.0).collect();
    // (stride, rows, cols), y length, and the offset the store fails at: lane (0, 13), offset
    // 104, is the first past a buffer of 100 in row-major order.
    let cases =
        [([8, 8, 16], 128, None), ([10, 5, 13], 160, None), ([5, 8, 16], 128, None), ([8, 8, 16], 100, Some(104))];
    check_store_cases(&k, &x, &cases);
}

/// A store of evenly strided rows (`[4, 8]`, lane `j` of row `r` at `r · 20 + j · d`: RoPE's
/// even or odd elements) is written from its offset form, without an offsets tile, with the
/// interpreter's results: stride 2 with a ragged mask, stride 0 (every lane of a row on one
/// offset: the last active lane wins), a negative stride, and a row past the buffer (the first
/// lane out of bounds in row-major order is reported and nothing is written).
#[test]
fn a_strided_store_matches_the_interpreter() {
    if !have_gcc() {
        return;
    }
    let k = parse(
        "kernel strided(@x: ptr<f32>, @y: ptr<f32>, %d: i32, %base: i32, %cols: i32) {
           %r: i32[4] = arange 0, 4
           %j: i32[8] = arange 0, 8
           %c8: i32 = const 8
           %c8v: i32[4] = broadcast %c8
           %xr: i32[4] = mul %r, %c8v
           %xr2: i32[4, 1] = expand_dims %xr, 1
           %xrb: i32[4, 8] = broadcast %xr2
           %jr: i32[1, 8] = expand_dims %j, 0
           %jrb: i32[4, 8] = broadcast %jr
           %xo: i32[4, 8] = add %xrb, %jrb
           %v: f32[4, 8] = load @x[%xo]
           %c20: i32 = const 20
           %c20v: i32[4] = broadcast %c20
           %rs: i32[4] = mul %r, %c20v
           %bv: i32[4] = broadcast %base
           %rsb: i32[4] = add %rs, %bv
           %rs2: i32[4, 1] = expand_dims %rsb, 1
           %rsbb: i32[4, 8] = broadcast %rs2
           %dv: i32[8] = broadcast %d
           %jd: i32[8] = mul %j, %dv
           %jd2: i32[1, 8] = expand_dims %jd, 0
           %jdb: i32[4, 8] = broadcast %jd2
           %yo: i32[4, 8] = add %rsbb, %jdb
           %cv: i32[8] = broadcast %cols
           %ok: bool[8] = cmp lt %j, %cv
           %ok2: bool[1, 8] = expand_dims %ok, 0
           %okb: bool[4, 8] = broadcast %ok2
           store @y[%yo], %v, mask %okb
         }",
    );
    let src = kiln_codegen::cpu::render(&k, &CpuTarget::avx512()).unwrap().code;
    assert!(src.contains("+ (int64_t)j * d] = "), "the rows are written from the form");
    let x: Vec<f32> = (0..32).map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0).collect();
    // (d, base, cols), y length, and the offset the store fails at: row 3 starts at 70, and
    // lane (3, 4), offset 82, is the first past a buffer of 80.
    let cases = [([2, 0, 7], 96, None), ([0, 3, 8], 96, None), ([-2, 14, 8], 96, None), ([3, 10, 8], 80, Some(82))];
    check_store_cases(&k, &x, &cases);
}

/// Runs a store kernel `(@x: ptr<f32>, @y: ptr<f32>, three i32 scalars)` on the interpreter and
/// on every run target, for each case `(scalars, y length, failing offset)`: the same `y` (NaN
/// where nothing is written), and where a case fails, the store's out-of-bounds error at that
/// offset, reported by the interpreter too.
fn check_store_cases(k: &Kernel, x: &[f32], cases: &[([i32; 3], usize, Option<i64>)]) {
    for &(scalars, len, fails_at) in cases {
        let bind = || {
            let mut args =
                vec![Arg::Buffer(HostBuffer::F32(x.to_vec())), Arg::Buffer(HostBuffer::F32(vec![f32::NAN; len]))];
            args.extend(scalars.map(|v| Arg::Scalar(Scalar::I32(v))));
            args
        };
        let mut want = bind();
        let expected = interp::run(k, [1, 1, 1], &mut want);
        assert_eq!(expected.is_err(), fails_at.is_some(), "{scalars:?}: {expected:?}");
        for t in run_targets() {
            let mut got = bind();
            let case = format!("{} scalars {scalars:?} len {len}", t.fingerprint());
            match (run(k, &t, [1, 1, 1], &mut got), fails_at) {
                (Ok(()), None) => {}
                (Ok(()), Some(_)) => panic!("{case}: ran where the interpreter failed"),
                (Err(e), None) => panic!("{case}: {e:?}"),
                (Err(e), Some(index)) => {
                    let store = inst_of(k, "store");
                    assert_eq!((e.code, e.inst, e.param, e.index, e.len), (1, store, 1, index, len as i64), "{case}");
                }
            }
            let (Arg::Buffer(g), Arg::Buffer(w)) = (&got[1], &want[1]) else { unreachable!("buffers") };
            same(DType::F32, &g.to_f64(), &w.to_f64()).unwrap_or_else(|e| panic!("{case}: {e}"));
        }
    }
}

/// `tests/tir/run_cast_vector.tir` (whose results `tir_run_files_match_the_interpreter` checks
/// on every run target) takes the vector forms on AVX-512: the saturating casts through the
/// prelude's `kiln_f2*v`, `abs` as a sign mask, the stride-2 read as two loads and a permute.
#[test]
fn saturating_casts_abs_and_stride_2_reads_run_a_vector_at_a_time_on_avx512() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/tir/run_cast_vector.tir");
    let k = parse(&std::fs::read_to_string(&path).expect("the tir file"));
    let src = render(&k, &CpuTarget::avx512()).unwrap().code;
    let program = &src[src.find("cast_vector_program(").expect("the program function")..];
    for helper in
        ["kiln_f2i32v(", "kiln_f2i8v(", "kiln_f2u8v(", "kiln_i32v_splat(0x7fffffff)", "kiln_f32_load_stride2("]
    {
        assert!(program.contains(helper), "no {helper}:\n{program}");
    }
    assert!(!program.contains("kiln_f2i8(") && !program.contains("fabsf("), "a scalar cast or abs is left:\n{program}");
}

/// f16 rows that are only copied (loaded, then stored to an f16 buffer: `paged_kv_gather`) are
/// held as their 16-bit patterns: the tile is `uint16_t`, the rows move by `memcpy`, and every
/// pattern arrives unchanged, a signalling NaN's payload, -0, subnormals and infinities
/// included (through f32 the NaN would come back quieted). Rows at gathered starts and at affine
/// starts, a lane mask over rows and columns (masked lanes take `other`, zero, or are not
/// written), and a gathered row past the buffer (an error, as in the interpreter). A tile that
/// is also added to stays f32.
#[test]
fn copied_f16_rows_keep_their_bit_patterns() {
    if !have_gcc() {
        return;
    }
    let copy = |start: &str, extra: &str| {
        format!(
            "kernel copy(@src: ptr<f16>, @idx: ptr<i32>, @dst: ptr<f16>, @sum: ptr<f16>, %n: i32, %cols: i32) {{
               %r: i32[4] = arange 0, 4
               %c: i32[16] = arange 0, 16
               {start}
               %c16: i32 = const 16
               %c16v: i32[4] = broadcast %c16
               %base: i32[4] = mul %row, %c16v
               %b2: i32[4, 1] = expand_dims %base, 1
               %bb: i32[4, 16] = broadcast %b2
               %cc: i32[1, 16] = expand_dims %c, 0
               %ccb: i32[4, 16] = broadcast %cc
               %off: i32[4, 16] = add %bb, %ccb
               %nv: i32[4] = broadcast %n
               %rok: bool[4] = cmp lt %r, %nv
               %rok2: bool[4, 1] = expand_dims %rok, 1
               %rokb: bool[4, 16] = broadcast %rok2
               %colsv: i32[16] = broadcast %cols
               %cok: bool[16] = cmp lt %c, %colsv
               %cok2: bool[1, 16] = expand_dims %cok, 0
               %cokb: bool[4, 16] = broadcast %cok2
               %m: bool[4, 16] = and %rokb, %cokb
               %zero: f16 = const 0.0
               %v: f16[4, 16] = load @src[%off], mask %m, other %zero
               %out: i32[4] = mul %r, %c16v
               %o2: i32[4, 1] = expand_dims %out, 1
               %ob: i32[4, 16] = broadcast %o2
               %doff: i32[4, 16] = add %ob, %ccb
               store @dst[%doff], %v, mask %m
               {extra}
             }}"
        )
    };
    let gathered = "%ir: i32 = const 0
                    %irv: i32[4] = broadcast %ir
                    %io: i32[4] = add %irv, %r
                    %row: i32[4] = load @idx[%io]";
    let affine = "%two: i32 = const 2
                  %twov: i32[4] = broadcast %two
                  %row: i32[4] = add %r, %twov";
    let add = "%w: f16[4, 16] = add %v, %v
               store @sum[%doff], %w";
    // Patterns: a signalling NaN with a payload, -0, the smallest subnormal, -inf, then ordinary
    // values.
    let special: [u16; 4] = [0x7D01, 0x8000, 0x0001, 0xFC00];
    let src: Vec<half::f16> = (0..8 * 16)
        .map(|i| half::f16::from_bits(special.get(i % 19).copied().unwrap_or(0x3C00 + (i as u16 * 37) % 0x800)))
        .collect();
    for (start, raw_expected) in [(gathered, true), (affine, true)] {
        for (extra, raw) in [("", raw_expected), (add, false)] {
            let k = parse(&copy(start, extra));
            for t in run_targets() {
                let code = render(&k, &t).unwrap().code;
                let raw_tile = code.lines().any(|l| l.trim_start().starts_with("uint16_t v") && l.contains("[64]"));
                assert_eq!(raw_tile, raw, "{}: a raw [4, 16] tile expected: {raw}\n{code}", t.fingerprint());
            }
            for (n, cols, idx, fails) in [
                (4, 16, vec![3, 0, 7, 5], false),
                (3, 11, vec![6, 1, 1, 1 << 20], false),
                (4, 16, vec![3, 0, 8, 5], true),
            ] {
                let bind = || {
                    vec![
                        Arg::Buffer(HostBuffer::F16(src.clone())),
                        Arg::Buffer(HostBuffer::I32(idx.clone())),
                        Arg::Buffer(HostBuffer::F16(vec![half::f16::from_bits(0x5555); 64])),
                        Arg::Buffer(HostBuffer::F16(vec![half::f16::from_bits(0x5555); 64])),
                        Arg::Scalar(Scalar::I32(n)),
                        Arg::Scalar(Scalar::I32(cols)),
                    ]
                };
                // The affine rows (2..6) never fail.
                let fails = fails && start == gathered;
                let mut want = bind();
                assert_eq!(interp::run(&k, [1, 1, 1], &mut want).is_err(), fails, "interpreter, {idx:?}");
                for t in run_targets() {
                    let mut got = bind();
                    let result = run(&k, &t, [1, 1, 1], &mut got);
                    assert_eq!(result.is_err(), fails, "{} {idx:?}: {result:?}", t.fingerprint());
                    if fails {
                        continue;
                    }
                    let bits = |a: &Arg| match a {
                        Arg::Buffer(HostBuffer::F16(v)) => v.iter().map(|x| x.to_bits()).collect::<Vec<u16>>(),
                        other => panic!("not an f16 buffer: {other:?}"),
                    };
                    let what = format!("{} n {n} cols {cols} {idx:?}", t.fingerprint());
                    if raw {
                        assert_eq!(bits(&got[2]), bits(&want[2]), "{what}");
                        assert!(bits(&got[2]).contains(&0x7D01), "{what}: the signalling NaN was not copied");
                    } else {
                        // Through f32 a signalling NaN comes back quieted: equal as values.
                        for i in [2, 3] {
                            let (Arg::Buffer(g), Arg::Buffer(w)) = (&got[i], &want[i]) else { unreachable!("buffers") };
                            same(DType::F16, &g.to_f64(), &w.to_f64()).unwrap_or_else(|e| panic!("{what}: {e}"));
                        }
                    }
                }
            }
        }
    }
}
