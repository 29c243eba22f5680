//! The compile step: cached builds, and a failing compiler reported with the source's path and a
//! command that reproduces the failure.

use kiln_codegen::cpu::compile::{compile, CompileError};
use kiln_codegen::cpu::{render, CSource, CpuTarget};
use kiln_ir::{DType, KernelBuilder};

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn compiled_objects_are_cached_by_source() {
    let b = KernelBuilder::new("cache_probe");
    let y = b.buffer("y", DType::F32);
    b.store(y, b.arange(0, 8), b.full(&[8], 2.0, DType::F32));
    let kernel = b.finish().unwrap();
    let target = CpuTarget::host();
    let src = render(&kernel, &target).unwrap();
    let dir = scratch_dir("cache_probe");
    let first = compile(&src, &target, &dir).unwrap();
    assert!(!first.cached && first.path.exists());
    let second = compile(&src, &target, &dir).unwrap();
    assert!(second.cached);
    assert_eq!(first.path, second.path);
    // Another source is another object.
    let mut other = src.clone();
    other.code.push_str("\n/* changed */\n");
    let third = compile(&other, &target, &dir).unwrap();
    assert_ne!(third.path, first.path);
}

#[test]
fn a_compiler_failure_names_the_source_and_a_repro_command() {
    let src = CSource {
        name: "broken".into(),
        entry: "kiln_broken".into(),
        code: "int kiln_broken(void) { return undeclared_variable; }\n".into(),
    };
    let dir = scratch_dir("broken");
    let err = compile(&src, &CpuTarget::host(), &dir).unwrap_err();
    let CompileError::Failed { source_path, command, stderr } = &err else { panic!("expected Failed, got {err}") };
    assert!(source_path.exists(), "the failing source is kept for the repro");
    assert!(command.contains(&source_path.display().to_string()), "{command}");
    assert!(stderr.contains("undeclared_variable"), "{stderr}");
    let shown = err.to_string();
    assert!(shown.contains("repro: ") && shown.contains("broken"), "{shown}");
    // No object is left under the cached name.
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e.unwrap().path().to_string_lossy().ends_with(".so")));
}
