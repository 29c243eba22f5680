//! Lossless greedy speculative decoding on the real model: SmolLM2-135M-Instruct (fetched with
//! pinned hashes when missing) generates 64 tokens after each of three chat prompts target-only,
//! and speculative decoding with each draft source gives the same tokens, token for token:
//! prompt n-gram lookup, self-speculation from the first 2 of 30 layers (sharing the target's
//! cache), and a separate draft model — the target file's first layer loaded as a model of its
//! own with its own cache (SmolLM2-135M is the smallest model of its tokenizer, so the
//! draft model is a prefix of the target; the code path is the one any GGUF draft takes).

mod common;

use kiln_autotune::lookup::Defaults;
use kiln_runtime::cpu::CpuDevice;
use kiln_runtime::generate::{generate, GenerateOptions};
use kiln_runtime::model::gguf::GgufFile;
use kiln_runtime::model::llama::{LlamaModel, ModelOptions};
use kiln_runtime::model::sampling::SamplingParams;
use kiln_runtime::model::tensor::TensorSource;
use kiln_runtime::model::tokenizer::Tokenizer;
use kiln_runtime::speculative::accept::Greedy;
use kiln_runtime::speculative::adaptive::KPolicy;
use kiln_runtime::speculative::decode::generate_speculative;
use kiln_runtime::speculative::draft::{
    check_same_tokenizer, DraftModel, DraftSource, LayerPrefix, NgramDraft, SelfDraft,
};
use std::sync::{Arc, OnceLock};

fn gguf() -> &'static GgufFile {
    static FILE: OnceLock<GgufFile> = OnceLock::new();
    FILE.get_or_init(|| {
        let path = kiln_runtime::model::fetch::smollm2().unwrap_or_else(|e| panic!("{e}"));
        GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn options() -> ModelOptions {
    ModelOptions { max_seq_len: 256, ..ModelOptions::default() }
}

fn load(src: &dyn TensorSource, device: &Arc<CpuDevice>) -> LlamaModel {
    LlamaModel::load(src, device.clone(), Arc::new(Defaults::cpu()), options()).unwrap()
}

const PROMPTS: [&str; 3] = [
    "Add type hints to this Python code and return the whole code:\n```python\ndef area(width, height):\n    return width * height\n\n\
     def perimeter(width, height):\n    return 2 * (width + height)\n```",
    "Summarise in one sentence: The Rhine rises in the Swiss Alps, flows through Germany and the Netherlands, \
     and reaches the North Sea at Rotterdam.",
    "Write a short poem about the sea.",
];

#[test]
fn greedy_speculative_output_equals_target_only_greedy_for_every_source() {
    let device = Arc::new(CpuDevice::host(None).unwrap());
    let tokenizer = Tokenizer::from_gguf(gguf()).unwrap();
    let mut target = load(gguf(), &device);
    let config = target.config.clone();
    let prefix = LayerPrefix { source: gguf(), layers: 1 };
    // Fixed draft lengths, so that every step verifies several positions at once: up to 7 for
    // the n-gram source (the GEMM path of 5 or more rows), 3 and 4 for the models (the GEMV path).
    let mut drafts: Vec<(Box<dyn DraftSource>, usize)> = vec![
        (Box::new(NgramDraft::new(6).unwrap()), 6),
        (Box::new(SelfDraft::new(2, &config).unwrap()), 2),
        (Box::new(DraftModel::new(load(&prefix, &device), &config, "first layer as a draft model").unwrap()), 3),
    ];
    let options = GenerateOptions { max_tokens: 64, sampling: SamplingParams::greedy(), stop: vec![] };
    for text in PROMPTS {
        let prompt = tokenizer.encode(&tokenizer.chat_prompt(text), true).unwrap();
        let want = generate(&mut target, &prompt, &options, &mut |_| Ok(())).unwrap().tokens;
        for (draft, k) in drafts.iter_mut() {
            let g = generate_speculative(
                &mut target,
                draft.as_mut(),
                Box::new(Greedy),
                KPolicy::fixed(*k),
                &prompt,
                &options,
                &mut |_| Ok(()),
            )
            .unwrap();
            eprintln!(
                "{:?} / {}: {} steps, acceptance {:.2}, {:.2} kept per step",
                &text[..20],
                draft.name(),
                g.steps,
                g.acceptance_rate(),
                g.mean_accepted()
            );
            assert_eq!(
                g.tokens,
                want,
                "{}: speculative {:?}\n target-only {:?}",
                draft.name(),
                tokenizer.decode(&g.tokens).unwrap_or_default(),
                tokenizer.decode(&want).unwrap_or_default()
            );
        }
    }
}

#[test]
fn the_draft_tokenizer_must_be_the_targets() {
    let tokenizer = Tokenizer::from_gguf(gguf()).unwrap();
    check_same_tokenizer(&tokenizer, &tokenizer).unwrap();
}
