//! Records the target triple, so the CPU backend can ask the `cc` crate for the C compiler of the
//! platform kiln was built for (cc reads it from the environment of build scripts only).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    println!("cargo:rustc-env=KILN_TARGET_TRIPLE={target}");
    println!("cargo:rustc-env=KILN_HOST_TRIPLE={host}");
}
