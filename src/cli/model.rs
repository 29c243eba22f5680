//! `kiln fetch-model` and `kiln inspect-model`: getting the demo model and looking inside model
//! files.

use std::path::Path;

use kiln_runtime::model::fetch;
use kiln_runtime::model::gguf::GgufFile;
use kiln_runtime::model::safetensors::SafetensorsModel;
use kiln_runtime::model::tensor::{LlamaConfig, LoadError, TensorSource};
use kiln_runtime::model::tokenizer::Tokenizer;
use tabled::settings::Style;

use super::CliError;

/// Fetches SmolLM2-135M-Instruct (or finds it cached) and returns its path as a line.
pub fn fetch_model(dir: Option<&Path>) -> Result<String, CliError> {
    let path = match dir {
        Some(dir) => fetch::smollm2_in(dir),
        None => fetch::smollm2(),
    }
    .map_err(CliError::Fetch)?;
    Ok(format!("{}\n", path.display()))
}

/// The configuration, tokenizer summary, metadata and tensor table of a GGUF file or a
/// safetensors checkpoint.
pub fn inspect_model(path: &Path) -> Result<String, CliError> {
    let is_safetensors = path.is_dir() || path.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        inspect_safetensors(path)
    } else {
        inspect_gguf(path)
    }
}

fn inspect_gguf(path: &Path) -> Result<String, CliError> {
    let file = GgufFile::open(path).map_err(CliError::Load)?;
    let mut out = format!(
        "{}: GGUF v{}, {} tensors, {} metadata keys, alignment {}\n",
        path.display(),
        file.version(),
        file.tensor_infos().len(),
        file.metadata().len(),
        file.alignment()
    );
    // A file kiln cannot run is still worth looking at: configuration and tokenizer problems are
    // shown in their place rather than hiding the rest.
    out += &config_line(file.config());
    out += &match Tokenizer::from_gguf(&file) {
        Ok(tok) => format!(
            "tokenizer: GPT-2 byte-level BPE, {} tokens, bos {} {:?}, eos {} {:?}\n",
            tok.vocab_size(),
            tok.bos_id(),
            tok.token(tok.bos_id()).unwrap_or_default(),
            tok.eos_id(),
            tok.token(tok.eos_id()).unwrap_or_default()
        ),
        Err(e) => format!("tokenizer: {e}\n"),
    };
    let mut meta = tabled::builder::Builder::default();
    meta.push_record(["key", "type", "value"]);
    for (key, value) in file.metadata() {
        meta.push_record([key.clone(), value.type_name().to_string(), value.summary()]);
    }
    out += &format!("{}\n", meta.build().with(Style::rounded()));
    let mut tensors = tabled::builder::Builder::default();
    tensors.push_record(["tensor", "type", "shape", "bytes"]);
    for t in file.tensor_infos() {
        tensors.push_record([t.name.clone(), t.ggml_type.name(), format!("{:?}", t.shape), t.n_bytes.to_string()]);
    }
    out += &format!("{}\n", tensors.build().with(Style::rounded()));
    Ok(out)
}

fn inspect_safetensors(path: &Path) -> Result<String, CliError> {
    let model = SafetensorsModel::open(path).map_err(CliError::Load)?;
    let mut out = format!("{}: safetensors checkpoint\n", path.display());
    out += &config_line(model.config());
    let mut tensors = tabled::builder::Builder::default();
    tensors.push_record(["tensor (GGUF name)", "type", "shape"]);
    for name in model.gguf_names() {
        let (dtype, shape) = match model.tensor_kind(&name) {
            Ok((dtype, shape)) => (dtype, format!("{shape:?}")),
            Err(e) => ("missing".to_string(), e.to_string()),
        };
        tensors.push_record([name, dtype, shape]);
    }
    out += &format!("{}\n", tensors.build().with(Style::rounded()));
    Ok(out)
}

fn config_line(config: Result<LlamaConfig, LoadError>) -> String {
    match config {
        Ok(c) => format!(
            "config: llama, {} layers, dim {}, ffn {}, {} heads / {} KV heads (head_dim {}), vocab {}, context {}, \
             rope base {}, rms eps {:e}, {} head\n",
            c.n_layers,
            c.dim,
            c.ffn_dim,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.vocab_size,
            c.context_length,
            c.rope_base,
            c.rms_eps,
            if c.tied_head { "tied" } else { "separate" }
        ),
        Err(e) => format!("config: {e}\n"),
    }
}
