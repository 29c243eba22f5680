//! File tests: every `tests/tir/*.tir` file is one test, named after the file.
//!
//! A file opens with comment lines that say what to do with it:
//!
//! ```text
//! // test: verify                 parse; the verifier must pass; golden = the printed kernel
//! // test: verify-error           parse; the verifier must fail; golden = every error, located
//! // test: parse-error            golden = the parse error, located
//! // test: run grid=4,1,1         parse, verify, run in the interpreter; golden = every buffer after
//! // arg @x = f32 [1.5, 2, -3]    a buffer's initial contents (`[v; n]` repeats, `range(a, b)`
//! // arg %n = i32 3               counts up); a scalar's value; one `arg` per parameter
//! // expect @y = [3.0, 4.0, -6.0] a buffer's contents after the run, checked per dtype: exact for
//!                                 integers and bool, relative 1e-6 for f32, 1e-3 for f16, 8e-3 for bf16
//! // expect error                 the run must fail; golden = the error
//! ```
//!
//! Every kernel that parses must also print and parse back to itself. Goldens sit beside the
//! file as `NAME.tir.golden`; a mismatch fails with a line diff, a missing golden fails, and
//! `BLESS=1 cargo test --test filetests` rewrites them.

use half::{bf16, f16};
use kiln_ir::interp::{run, Arg, HostBuffer, Scalar};
use kiln_ir::text::{parse, parse_with_source_map, print, render_verify_errors};
use kiln_ir::{verify, DType, Kernel, ParamKind};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};

fn main() {
    let args = Arguments::from_args();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("tir");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "tir"))
            .collect(),
        Err(e) => {
            eprintln!("cannot read {}: {e}", dir.display());
            std::process::exit(1);
        }
    };
    files.sort();
    let trials = files
        .into_iter()
        .map(|path| {
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Trial::test(name, move || run_file(&path).map_err(Failed::from))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// What a file asks for.
enum Mode {
    Verify,
    VerifyError,
    ParseError,
    Run { grid: [u32; 3] },
}

/// The header of a file.
struct Spec {
    mode: Mode,
    /// `(param name with its sigil, dtype if given, values)`.
    args: Vec<(String, Option<DType>, Vec<f64>)>,
    expects: Vec<(String, Vec<f64>)>,
    expect_error: bool,
}

fn run_file(path: &Path) -> Result<(), String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let spec = parse_header(&src)?;
    let actual = match spec.mode {
        Mode::ParseError => match parse(&src) {
            Ok(k) => return Err(format!("expected a parse error, but it parsed:\n{}", print(&k))),
            Err(e) => format!("{file}:{e}\n"),
        },
        Mode::Verify => {
            let kernel = parse_round_trip(&src, &file)?;
            if let Err(errs) = verify(&kernel) {
                return Err(format!("verification failed:\n{errs}"));
            }
            print(&kernel)
        }
        Mode::VerifyError => {
            let kernel = parse_round_trip(&src, &file)?;
            let (_, map) = parse_with_source_map(&src).map_err(|e| format!("{file}:{e}"))?;
            match verify(&kernel) {
                Ok(()) => return Err("expected verifier errors, but the kernel verified".to_string()),
                Err(errs) => render_verify_errors(&errs, &map, &file),
            }
        }
        Mode::Run { grid } => {
            let kernel = parse_round_trip(&src, &file)?;
            run_kernel(&kernel, grid, &spec)?
        }
    };
    check_golden(path, &actual)
}

/// Parses `src` and checks that the kernel prints and parses back to itself.
fn parse_round_trip(src: &str, file: &str) -> Result<Kernel, String> {
    let kernel = parse(src).map_err(|e| format!("{file}:{e}"))?;
    let text = print(&kernel);
    match parse(&text) {
        Ok(back) if back == kernel => Ok(kernel),
        Ok(_) => Err(format!("the printed kernel parses to a different kernel:\n{text}")),
        Err(e) => Err(format!("the printed kernel does not parse: {e}\n{text}")),
    }
}

fn parse_header(src: &str) -> Result<Spec, String> {
    let mut spec = Spec { mode: Mode::Verify, args: Vec::new(), expects: Vec::new(), expect_error: false };
    let mut mode = None;
    for line in src.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some(comment) = line.strip_prefix("//") else { break };
        let comment = comment.trim();
        if let Some(rest) = comment.strip_prefix("test:") {
            let mut words = rest.split_whitespace();
            mode = Some(match (words.next(), words.next()) {
                (Some("verify"), None) => Mode::Verify,
                (Some("verify-error"), None) => Mode::VerifyError,
                (Some("parse-error"), None) => Mode::ParseError,
                (Some("run"), grid) => Mode::Run { grid: parse_grid(grid.unwrap_or("grid=1,1,1"))? },
                _ => return Err(format!("unknown test directive `{comment}`")),
            });
        } else if let Some(rest) = comment.strip_prefix("arg ") {
            let (name, value) = rest.split_once('=').ok_or_else(|| format!("`arg` needs `=`: `{comment}`"))?;
            let value = value.trim();
            let (dtype, list) = match value.split_once(|c: char| c.is_whitespace()) {
                Some((d, list)) => (d, list.trim()),
                None => return Err(format!("`arg` needs a dtype and a value: `{comment}`")),
            };
            let dtype = DType::from_name(dtype).ok_or_else(|| format!("unknown dtype `{dtype}` in `{comment}`"))?;
            spec.args.push((name.trim().to_string(), Some(dtype), parse_values(list)?));
        } else if comment == "expect error" {
            spec.expect_error = true;
        } else if let Some(rest) = comment.strip_prefix("expect ") {
            let (name, value) = rest.split_once('=').ok_or_else(|| format!("`expect` needs `=`: `{comment}`"))?;
            spec.expects.push((name.trim().to_string(), parse_values(value.trim())?));
        }
    }
    spec.mode = mode.ok_or("the file names no `// test:` mode")?;
    Ok(spec)
}

fn parse_grid(s: &str) -> Result<[u32; 3], String> {
    let dims = s.strip_prefix("grid=").ok_or_else(|| format!("expected `grid=X,Y,Z`, got `{s}`"))?;
    let dims: Vec<u32> = dims
        .split(',')
        .map(|d| d.trim().parse::<u32>().map_err(|e| format!("bad grid dim `{d}`: {e}")))
        .collect::<Result<_, _>>()?;
    match dims[..] {
        [x] => Ok([x, 1, 1]),
        [x, y] => Ok([x, y, 1]),
        [x, y, z] => Ok([x, y, z]),
        _ => Err(format!("a grid has 1 to 3 dims, got `{s}`")),
    }
}

/// `[v, v, ...]`, `[v; n]`, `range(a, b)` or a single value.
fn parse_values(s: &str) -> Result<Vec<f64>, String> {
    if let Some(inner) = s.strip_prefix("range(").and_then(|r| r.strip_suffix(')')) {
        let bounds: Vec<f64> = inner.split(',').map(parse_number).collect::<Result<_, _>>()?;
        let [start, end] = bounds[..] else { return Err(format!("range takes two bounds: `{s}`")) };
        return Ok((start as i64..end as i64).map(|i| i as f64).collect());
    }
    let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
        return Ok(vec![parse_number(s)?]);
    };
    if let Some((value, count)) = inner.split_once(';') {
        let count: usize = count.trim().parse().map_err(|e| format!("bad repeat count in `{s}`: {e}"))?;
        return Ok(vec![parse_number(value)?; count]);
    }
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    inner.split(',').map(parse_number).collect()
}

fn parse_number(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let (negative, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let magnitude = match body {
        "true" => 1.0,
        "false" => 0.0,
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        hex if hex.starts_with("0x") => {
            u64::from_str_radix(&hex[2..], 16).map_err(|e| format!("bad hex `{s}`: {e}"))? as f64
        }
        dec => dec.parse::<f64>().map_err(|e| format!("bad number `{s}`: {e}"))?,
    };
    Ok(if negative { -magnitude } else { magnitude })
}

/// Binds the `arg` lines to the signature, runs, checks the `expect` lines and renders every
/// buffer (or the error, under `expect error`).
fn run_kernel(kernel: &Kernel, grid: [u32; 3], spec: &Spec) -> Result<String, String> {
    if let Err(errs) = verify(kernel) {
        return Err(format!("verification failed:\n{errs}"));
    }
    for (name, _, _) in &spec.args {
        let known = kernel.params.iter().any(|p| sigil_name(p) == *name);
        if !known {
            return Err(format!("`arg {name}` names no parameter"));
        }
    }
    let mut args = Vec::with_capacity(kernel.params.len());
    for p in &kernel.params {
        let name = sigil_name(p);
        let found: Vec<_> = spec.args.iter().filter(|(n, _, _)| *n == name).collect();
        let [(_, dtype, values)] = found[..] else {
            return Err(format!("parameter {name} needs exactly one `// arg {name} = ...` line"));
        };
        let want = match p.kind {
            ParamKind::Buffer { dtype } => dtype,
            ParamKind::Scalar { value } => kernel.ty(value).dtype,
        };
        if *dtype != Some(want) {
            return Err(format!("`arg {name}` must be {want}"));
        }
        args.push(match p.kind {
            ParamKind::Buffer { dtype } => Arg::Buffer(buffer_from_f64(dtype, values)),
            ParamKind::Scalar { .. } => match values[..] {
                [v] => Arg::Scalar(scalar_from_f64(want, v)),
                _ => return Err(format!("scalar {name} takes one value")),
            },
        });
    }
    // The PTX backend runs every file too, in the SIMT simulator, and must agree with the interpreter.
    let mut simt_args = args.clone();
    let options = kiln::codegen::ptx::PtxOptions::new(kiln::codegen::ptx::Sm::Sm80);
    let simt = kiln::runtime::simt::run(kernel, grid, &mut simt_args, &options);
    if let Err(e) = run(kernel, grid, &mut args) {
        if let Ok(()) = simt {
            return Err(format!("the interpreter failed ({e}) but the SIMT simulator ran"));
        }
        return if spec.expect_error { Ok(format!("error: {e}\n")) } else { Err(format!("the run failed: {e}")) };
    }
    simt.map_err(|e| format!("the SIMT simulator failed: {e}"))?;
    for (p, (a, b)) in kernel.params.iter().zip(args.iter().zip(&simt_args)) {
        if let (Arg::Buffer(want), Arg::Buffer(got)) = (a, b) {
            let ((dtype, want), (_, got)) = (buffer_to_f64(want), buffer_to_f64(got));
            if let Some(msg) = compare(dtype, &got, &want) {
                return Err(format!("{}: the SIMT simulator differs from the interpreter: {msg}", sigil_name(p)));
            }
        }
    }
    if spec.expect_error {
        return Err("expected the run to fail, but it succeeded".to_string());
    }
    let mut out = String::new();
    let mut failures = Vec::new();
    for (p, arg) in kernel.params.iter().zip(&args) {
        let Arg::Buffer(buffer) = arg else { continue };
        let name = sigil_name(p);
        let (dtype, values) = buffer_to_f64(buffer);
        out.push_str(&render_buffer(&name, dtype, &values));
        for (_, want) in spec.expects.iter().filter(|(n, _)| *n == name) {
            if let Some(msg) = compare(dtype, &values, want) {
                failures.push(format!("{name}: {msg}"));
            }
        }
    }
    for (name, _) in &spec.expects {
        if !kernel.params.iter().any(|p| sigil_name(p) == *name && matches!(p.kind, ParamKind::Buffer { .. })) {
            failures.push(format!("`expect {name}` names no buffer parameter"));
        }
    }
    if failures.is_empty() {
        Ok(out)
    } else {
        Err(format!("{}\nbuffers after the run:\n{out}", failures.join("\n")))
    }
}

fn sigil_name(p: &kiln_ir::ParamData) -> String {
    match p.kind {
        ParamKind::Buffer { .. } => format!("@{}", p.name),
        ParamKind::Scalar { .. } => format!("%{}", p.name),
    }
}

/// Per-dtype check of a buffer against expected values; `None` when they match.
fn compare(dtype: DType, got: &[f64], want: &[f64]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!("has {} elements, the expectation lists {}", got.len(), want.len()));
    }
    let rtol = match dtype {
        DType::F32 => 1e-6,
        DType::F16 => 1e-3,
        DType::BF16 => 8e-3,
        DType::I32 | DType::U32 | DType::I8 | DType::U8 | DType::Bool => 0.0,
    };
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() || rtol == 0.0 {
            g == w
        } else {
            (g - w).abs() <= rtol * w.abs().max(1e-6)
        };
        if !ok {
            bad.push(format!("[{i}] = {g}, expected {w}"));
        }
    }
    if bad.is_empty() {
        None
    } else {
        let shown = bad.len().min(8);
        Some(format!("{} mismatches: {}", bad.len(), bad[..shown].join("; ")))
    }
}

fn render_buffer(name: &str, dtype: DType, values: &[f64]) -> String {
    let mut out = format!("{name}: {dtype}[{}] = [", values.len());
    for (i, v) in values.iter().enumerate() {
        if i % 16 == 0 {
            out.push_str("\n   ");
        }
        out.push(' ');
        out.push_str(&render_value(dtype, *v));
        if i + 1 < values.len() {
            out.push(',');
        }
    }
    out.push_str("\n]\n");
    out
}

fn render_value(dtype: DType, v: f64) -> String {
    match dtype {
        // Every f16/bf16 value is an exact f32, so f32's shortest form names it exactly.
        DType::F32 | DType::F16 | DType::BF16 => format!("{:?}", v as f32),
        DType::Bool => (v != 0.0).to_string(),
        DType::I32 | DType::U32 | DType::I8 | DType::U8 => format!("{}", v as i64),
    }
}

fn buffer_from_f64(dtype: DType, values: &[f64]) -> HostBuffer {
    match dtype {
        DType::F32 => HostBuffer::F32(values.iter().map(|&v| v as f32).collect()),
        DType::F16 => HostBuffer::F16(values.iter().map(|&v| f16::from_f64(v)).collect()),
        DType::BF16 => HostBuffer::BF16(values.iter().map(|&v| bf16::from_f64(v)).collect()),
        DType::I32 => HostBuffer::I32(values.iter().map(|&v| v as i64 as i32).collect()),
        DType::U32 => HostBuffer::U32(values.iter().map(|&v| v as i64 as u32).collect()),
        DType::I8 => HostBuffer::I8(values.iter().map(|&v| v as i64 as i8).collect()),
        DType::U8 => HostBuffer::U8(values.iter().map(|&v| v as i64 as u8).collect()),
        DType::Bool => HostBuffer::Bool(values.iter().map(|&v| v != 0.0).collect()),
    }
}

fn scalar_from_f64(dtype: DType, v: f64) -> Scalar {
    match dtype {
        DType::F32 => Scalar::F32(v as f32),
        DType::F16 => Scalar::F16(f16::from_f64(v)),
        DType::BF16 => Scalar::BF16(bf16::from_f64(v)),
        DType::I32 => Scalar::I32(v as i64 as i32),
        DType::U32 => Scalar::U32(v as i64 as u32),
        DType::I8 => Scalar::I8(v as i64 as i8),
        DType::U8 => Scalar::U8(v as i64 as u8),
        DType::Bool => Scalar::Bool(v != 0.0),
    }
}

fn buffer_to_f64(buffer: &HostBuffer) -> (DType, Vec<f64>) {
    match buffer {
        HostBuffer::F32(v) => (DType::F32, v.iter().map(|&x| x as f64).collect()),
        HostBuffer::F16(v) => (DType::F16, v.iter().map(|x| x.to_f64()).collect()),
        HostBuffer::BF16(v) => (DType::BF16, v.iter().map(|x| x.to_f64()).collect()),
        HostBuffer::I32(v) => (DType::I32, v.iter().map(|&x| x as f64).collect()),
        HostBuffer::U32(v) => (DType::U32, v.iter().map(|&x| x as f64).collect()),
        HostBuffer::I8(v) => (DType::I8, v.iter().map(|&x| x as f64).collect()),
        HostBuffer::U8(v) => (DType::U8, v.iter().map(|&x| x as f64).collect()),
        HostBuffer::Bool(v) => (DType::Bool, v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect()),
    }
}

/// Compares with `PATH.golden`, or rewrites it under `BLESS=1`.
fn check_golden(path: &Path, actual: &str) -> Result<(), String> {
    let mut golden = path.as_os_str().to_owned();
    golden.push(".golden");
    let golden = PathBuf::from(golden);
    if std::env::var_os("BLESS").is_some_and(|v| v == "1") {
        return std::fs::write(&golden, actual).map_err(|e| format!("cannot write {}: {e}", golden.display()));
    }
    let expected = match std::fs::read_to_string(&golden) {
        Ok(s) => s,
        Err(_) => {
            return Err(format!(
                "missing golden {}; run `BLESS=1 cargo test --test filetests` to write it. Output:\n{actual}",
                golden.display()
            ))
        }
    };
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "output differs from {} (-golden +actual); `BLESS=1` rewrites it:\n{}",
            golden.display(),
            line_diff(&expected, actual)
        ))
    }
}

/// A line diff by longest common subsequence: `-` lines only in `a`, `+` only in `b`.
fn line_diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}
