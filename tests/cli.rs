//! The `kiln` and `autotune` binaries as a user runs them: help text, `emit` on good and bad
//! input, exit statuses.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("the kiln binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn help_explains_the_commands() {
    let o = kiln(&["--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("emit"), "{}", stdout(&o));
    let o = kiln(&["emit", "--help"]);
    assert!(o.status.success());
    let help = stdout(&o);
    assert!(help.contains("verifier") && help.contains("line") && help.contains("--kernel"), "{help}");
}

#[test]
fn emit_prints_the_example_kernel() {
    let path = format!("{}/examples/int4_gemv.tir", env!("CARGO_MANIFEST_DIR"));
    let o = kiln(&["emit", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = std::fs::read_to_string(&path).unwrap();
    assert_eq!(stdout(&o), expected);
}

#[test]
fn emit_reads_standard_input() {
    let path = format!("{}/examples/online_softmax.tir", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["emit", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(src.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(stdout(&o), src);
}

#[test]
fn emit_reports_parse_errors_with_line_and_column() {
    let path =
        temp_file("bad_syntax.tir", "kernel k(@x: ptr<f32>) {\n  %0: i32 = program_id 0\n  %1: i32 = add %0 %0\n}\n");
    let o = kiln(&["emit", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad_syntax.tir:3:"), "{err}");
    assert!(err.contains("expected"), "{err}");
}

#[test]
fn emit_reports_every_verifier_error_located() {
    let src = "kernel k(@x: ptr<f32>) {\n  %0: i32 = program_id 5\n  %1: f32 = const 1.0\n  %2: f32 = add %0, %1\n}\n";
    let path = temp_file("ill_typed.tir", src);
    let o = kiln(&["emit", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("ill_typed.tir:2:"), "{err}");
    assert!(err.contains("ill_typed.tir:4:"), "{err}");
}

#[test]
fn emit_reports_a_missing_file() {
    let o = kiln(&["emit", "/nonexistent/kernel.tir"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot read /nonexistent/kernel.tir"), "{}", stderr(&o));
}

#[test]
fn autotune_explains_itself_and_asks_for_a_database() {
    let bin = env!("CARGO_BIN_EXE_autotune");
    let o = Command::new(bin).arg("--help").output().unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("tuning database"));
    let o = Command::new(bin).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--db PATH is required"), "{}", stderr(&o));
}

#[test]
fn emit_builds_a_library_kernel_for_a_shape_and_config() {
    let o = kiln(&[
        "emit",
        "--kernel",
        "silu_mul",
        "--shape",
        "tokens=2,dim=100",
        "--config",
        "block=64",
        "--format",
        "ir",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("// launch 1 of 1: grid [2, 2, 1]"), "{out}");
    // What follows the comment lines is a valid kernel.
    let kernel = kiln::ir::text::parse(&out).unwrap();
    kiln::ir::verify(&kernel).unwrap();
}

#[test]
fn emit_emits_every_library_kernel() {
    for k in kiln::kernels::registry::all() {
        let name = k.id().name();
        let o = kiln(&["emit", "--kernel", name, "--format", "ir"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stdout(&o).contains("kernel "), "{name}");
    }
}

#[test]
fn emit_rejects_bad_kernel_requests() {
    for (args, needle) in [
        (vec!["--kernel", "no_such_kernel"], "unknown kernel `no_such_kernel`"),
        (vec!["--kernel", "silu_mul", "--shape", "dim"], "is not key=value"),
        (vec!["--kernel", "silu_mul", "--shape", "tokens=0"], "at least 1"),
        (vec!["--kernel", "silu_mul", "--config", "blk=3"], "unknown config key `blk`"),
        (vec!["--kernel", "silu_mul", "--config", "block=7"], "block = 7"),
    ] {
        let mut full = vec!["emit"];
        full.extend(args);
        let o = kiln(&full);
        assert_eq!(o.status.code(), Some(1), "{full:?}");
        assert!(stderr(&o).contains(needle), "{full:?}: {}", stderr(&o));
    }
}

#[test]
fn kernels_lists_the_library() {
    let o = kiln(&["kernels"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for k in kiln::kernels::registry::all() {
        assert!(out.contains(k.id().name()), "{out}");
    }
}

#[test]
fn emit_prints_the_c_of_a_library_kernel() {
    let o = kiln(&["emit", "--kernel", "rmsnorm", "--format", "c"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("int32_t kiln_rmsnorm(const kiln_args *args"), "{out}");
}

#[test]
fn emit_prints_the_ptx_of_a_library_kernel_for_each_sm() {
    for sm in ["80", "90"] {
        let o = kiln(&["emit", "--kernel", "softmax", "--format", "ptx", "--sm", sm]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(&format!(".target sm_{sm}")) && out.contains(".version 8.0"), "{out}");
        assert!(out.contains(".visible .entry kiln_softmax(") && out.contains("shfl.sync.bfly.b32"), "{out}");
    }
    let o = kiln(&["emit", "--kernel", "softmax", "--format", "ptx", "--sm", "75"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sm 75 is not supported; use 80 or 90"), "{}", stderr(&o));
}

#[test]
fn emit_ptx_takes_num_warps_and_shows_the_specialisation_and_vector_loads() {
    let shape = "tokens=2,dim=1024,dtype=f32";
    let o = kiln(&["emit", "--kernel", "rmsnorm", "--shape", shape, "--format", "ptx", "--config", "num_warps=8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("// 8 warps per block; scalar arguments divisible by") && out.contains(".reqntid 256, 1, 1"),
        "{out}"
    );
    assert!(out.contains("ld.global.v4.f32"), "{out}");
    let o = kiln(&["emit", "--kernel", "rmsnorm", "--shape", shape, "--format", "ptx", "--config", "num_warps=3"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("num_warps = 3 is not one of [1, 2, 4, 8]"), "{}", stderr(&o));
    // The knob is the GPU launch's: the tile IR (and the CPU backend) do not know it.
    let o = kiln(&["emit", "--kernel", "rmsnorm", "--shape", shape, "--config", "num_warps=8"]);
    assert!(!o.status.success(), "{}", stdout(&o));
}

#[test]
fn bench_prints_json_with_the_documented_fields() {
    // A tiny working set keeps this quick; it says nothing about speed, only about the output.
    let o = kiln(&[
        "bench",
        "--target",
        "cpu",
        "--kernel",
        "silu_mul",
        "--shape",
        "tokens=2,dim=300",
        "--threads",
        "1",
        "--warmup",
        "1",
        "--repeats",
        "3",
        "--working-set-mib",
        "16",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    for field in [
        "kernel",
        "shape",
        "config",
        "target",
        "threads",
        "median_us",
        "gbps",
        "gflops",
        "roofline_gbps",
        "roofline_gflops",
        "roofline_frac",
    ] {
        assert!(v.get(field).is_some(), "missing {field} in {line}");
    }
    assert_eq!(v["kernel"], "silu_mul");
    assert_eq!(v["threads"], 1);
    assert!(v["median_us"].as_f64().unwrap() > 0.0);
    assert!(v["roofline_gbps"].as_f64().unwrap() > 0.0);
    // The host's placement of the threads: a positive figure, or null on a one-core machine.
    // Probed after the timed runs and after the roofline, so a fraction that mixes the host's
    // two phases can be told apart: both present, or both null.
    for field in ["core_round_trip_ns", "roofline_round_trip_ns"] {
        let probe = &v[field];
        assert!(probe.is_null() || probe.as_f64().is_some_and(|ns| ns > 0.0), "{field} {probe} in {line}");
    }
    assert_eq!(v["core_round_trip_ns"].is_null(), v["roofline_round_trip_ns"].is_null(), "{line}");
}

#[test]
fn bench_rejects_unknown_targets_and_kernels() {
    let o = kiln(&["bench", "--target", "tpu:0", "--kernel", "silu_mul"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("target `tpu:0` is not available: use `cpu` or `cuda:N`"), "{}", stderr(&o));
    // `cuda:0` is a target; without a driver it fails (see gpu_commands_without_a_driver...).
    let o = kiln(&["bench", "--kernel", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown kernel `nope`"), "{}", stderr(&o));
}

/// Without a CUDA driver, the GPU commands say so in one line and exit non-zero.
#[test]
fn gpu_commands_without_a_driver_fail_in_one_line() {
    if kiln::runtime::cuda::driver_present() {
        eprintln!("SKIPPING: a CUDA driver is present here, so the no-driver message cannot be checked");
        return;
    }
    for args in [&["gpu-check"][..], &["bench", "--target", "cuda:0", "--kernel", "rmsnorm"]] {
        let o = kiln(args);
        assert!(!o.status.success(), "{args:?} succeeded without a driver");
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: no CUDA driver found (libcuda.so)"), "{args:?}: {err}");
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
    let o = kiln(&["gpu-check", "--target", "gpu0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not a CUDA target"), "{}", stderr(&o));
}

#[test]
fn gpu_check_help_documents_the_command() {
    let o = kiln(&["gpu-check", "--help"]);
    assert!(o.status.success());
    let out = stdout(&o);
    for needle in ["conformance suite", "poisoned outputs", "--target", "--configs", "--json", "exit status 1"] {
        assert!(out.contains(needle), "gpu-check --help lacks {needle:?}:\n{out}");
    }
}
