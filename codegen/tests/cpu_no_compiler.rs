//! Without a usable C compiler, compiling is a typed error that says what to do, not a panic.
//! (Its own test binary: the compiler is looked up once per process.)

use kiln_codegen::cpu::compile::{compile, CompileError};
use kiln_codegen::cpu::{CSource, CpuTarget};

#[test]
fn a_missing_compiler_is_a_typed_error() {
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var("CC", "/nonexistent/kiln-test-cc") };
    let src = CSource { name: "k".into(), entry: "kiln_k".into(), code: "int kiln_k(void) { return 0; }\n".into() };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no_compiler");
    let err = compile(&src, &CpuTarget::host(), &dir).unwrap_err();
    assert!(matches!(err, CompileError::NoCompiler { .. }), "{err}");
    assert!(err.to_string().contains("set CC"), "{err}");
}
