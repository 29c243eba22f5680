//! The real model on the CUDA path, without a GPU: SmolLM2-135M-Instruct loaded for the SIMT
//! simulator with the GPU's default configs. Every kernel `kiln generate --target cuda:0` runs for
//! the chat prompt (its 16-token prefill and its decode steps) is lowered at the model's real
//! sizes and assembled by `ptxas` for sm_90 within the register file; and one decode step (the
//! first token, through all 30 layers and the 49152-row head) runs in the simulator and gives
//! the CPU device's logits. The simulator runs every GPU thread on the host, so the prefill
//! itself is not run here (`forward_simt.rs` runs prefills of a small model).

mod common;

use kiln_autotune::lookup::Defaults;
use kiln_codegen::ptx::{self, ptxas, PtxOptions, Sm};
use kiln_runtime::cuda::{check_registers, check_resources, DeviceLimits};
use kiln_runtime::model::device::{ModelDevice, Module};
use kiln_runtime::model::gguf::GgufFile;
use kiln_runtime::model::llama::{LlamaModel, Logits, ModelOptions, SeqInput};
use std::sync::Arc;

/// The chat prompt's ids (see `smollm2.rs`).
const CHAT_IDS: [u32; 16] = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198];

/// Both devices keep activations and the cache in f32 and run the same integer head; their
/// kernels sum in different orders (the GPU's default tiles are not the CPU's), so the logits
/// agree to f32 rounding over 30 layers (measured 6.5e-6); a wrong kernel moves them by far more.
const TOLERANCE: f64 = 1e-4;

#[test]
fn smollm2_runs_on_the_cuda_path_and_its_kernels_assemble() {
    let path = kiln_runtime::model::fetch::smollm2().unwrap_or_else(|e| panic!("{e}"));
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let options = ModelOptions { max_seq_len: 64, kv_blocks: Some(4), max_step_tokens: 16, ..ModelOptions::default() };
    let sm = Sm::Sm90;
    let device = ModelDevice::Simt(PtxOptions::new(sm));
    let mut gpu = LlamaModel::load(&file, device, Arc::new(Defaults::gpu()), options.clone()).unwrap();
    gpu.prepare(&[CHAT_IDS.len()]).unwrap();
    gpu.prepare(&[1]).unwrap();

    // Every lowered kernel through ptxas, once per distinct text.
    let ptxas_path = ptxas::ptxas_path().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("ptxas: {}", ptxas_path.display());
    let dir = std::env::temp_dir().join(format!("kiln-smollm2-simt-{}", std::process::id()));
    let limits = DeviceLimits::for_sm(sm);
    let mut texts = std::collections::BTreeMap::new();
    for module in gpu.loaded_modules() {
        let Module::Simt { thread, .. } = &*module else { panic!("a module of another device on the simulator") };
        check_resources(thread, &limits).unwrap_or_else(|e| panic!("{e}"));
        texts.entry(ptx::print(thread, sm)).or_insert_with(|| thread.clone());
    }
    assert!(texts.len() >= 10, "only {} distinct kernels", texts.len());
    for (i, (text, thread)) in texts.iter().enumerate() {
        let name = format!("{}_{i}", thread.name);
        let report = ptxas::assemble(text, &name, sm, &dir).unwrap_or_else(|e| panic!("{e}"));
        check_registers(&thread.name, report.registers, thread.threads, &limits).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{:<28} {:>4} threads {:>4} registers {:>5} B spilled",
            thread.name, thread.threads, report.registers, report.spill_stores
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    // One decode step of the first token on both devices.
    let seq = gpu.add_sequence();
    let got = gpu.step(&[SeqInput { seq, tokens: &CHAT_IDS[..1], logits: Logits::Last }]).unwrap().remove(0);
    let mut cpu = LlamaModel::load(&file, common::random_model::device(), Arc::new(Defaults::cpu()), options).unwrap();
    let seq = cpu.add_sequence();
    let want = cpu.step(&[SeqInput { seq, tokens: &CHAT_IDS[..1], logits: Logits::Last }]).unwrap().remove(0);
    let want = vec![want.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>()];
    let err = common::reference::rel_error(&got, &want);
    eprintln!("SmolLM2, first token, simulator against CPU: relative error {err:.3e}");
    assert!(err < TOLERANCE, "relative error {err:.3e}");
    assert_eq!(
        kiln_runtime::model::sampling::argmax(&got).unwrap(),
        kiln_runtime::model::sampling::argmax(&want[0].iter().map(|&x| x as f32).collect::<Vec<_>>()).unwrap()
    );
}
