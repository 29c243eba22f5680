//! The tokenizer of a GGUF model: GPT-2 byte-level BPE built from the file's vocabulary and
//! merges, the pre-tokenizer its `tokenizer.ggml.pre` names, control tokens, and the ChatML chat
//! prompt.
//!
//! Encoding runs in three steps. Control tokens (`token_type` 3: `<|im_start|>`, `<|im_end|>`,
//! `<|endoftext|>`, …) are cut out of the text first when the caller asks for them, so a chat
//! prompt's markers become single ids while user text that merely contains `<|im_end|>` can be
//! encoded as plain text. Each remaining piece goes through the Hugging Face `tokenizers` crate:
//! the pre-tokenizer (SmolLM2's `smollm` splits every digit on its own, then applies the GPT-2
//! pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` to the
//! bytes mapped to printable characters) and the BPE model with the file's merge ranks.
//!
//! Decoding does not need the crate: every id maps to its bytes (the byte-level alphabet mapped
//! back, or a control token's own text), and [`StreamDecoder`] turns ids into text as they arrive
//! without splitting a UTF-8 character that spans tokens.

use std::collections::HashMap;

use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;

use super::gguf::{GgufError, GgufFile};

/// `tokenizer.ggml.token_type` of control tokens (llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`).
const TOKEN_TYPE_CONTROL: i64 = 3;

/// Why a tokenizer could not be built or used.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    #[error(
        "tokenizer model `{0}` is not supported; kiln reads GPT-2 byte-level BPE tokenizers \
         (tokenizer.ggml.model = \"gpt2\"), e.g. SmolLM2's"
    )]
    UnsupportedModel(String),
    #[error(
        "pre-tokenizer `{0}` is not supported; kiln knows \"smollm\" and \"gpt-2\" (tokenizer.ggml.pre); \
         use a model with one of those, e.g. SmolLM2"
    )]
    UnsupportedPreTokenizer(String),
    #[error("{key} has {found} entries but tokenizer.ggml.tokens has {expected}; the file is corrupt")]
    LengthMismatch { key: &'static str, found: usize, expected: usize },
    #[error("token {id} `{token}` appears twice in the vocabulary (first as {first}); the file is corrupt")]
    DuplicateToken { id: u32, token: String, first: u32 },
    #[error("merge {index} `{merge}` is not two tokens separated by one space; the file is corrupt")]
    BadMerge { index: usize, merge: String },
    #[error("{what} id {id} is outside the vocabulary of {vocab_size} tokens")]
    BadTokenId { what: &'static str, id: u64, vocab_size: usize },
    #[error("building the BPE model: {0}")]
    Build(String),
    #[error("encoding {text:?}: {message}")]
    Encode { text: String, message: String },
}

/// A GPT-2 byte-level BPE tokenizer read from a GGUF file; see the module doc.
pub struct Tokenizer {
    bpe: tokenizers::Tokenizer,
    /// Token text as stored in the file, by id.
    tokens: Vec<String>,
    /// What each id decodes to.
    token_bytes: Vec<Vec<u8>>,
    /// Control tokens, longest text first so that matching takes the longest at each position.
    controls: Vec<(String, u32)>,
    is_control: Vec<bool>,
    ids: HashMap<String, u32>,
    bos: u32,
    eos: u32,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.tokens.len())
            .field("n_controls", &self.controls.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from the `tokenizer.ggml.*` metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let model = file.require_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        // llama.cpp treats a missing `pre` as the GPT-2 default.
        let pre = match file.get("tokenizer.ggml.pre") {
            Some(_) => file.require_str("tokenizer.ggml.pre")?,
            None => "gpt-2",
        };
        let split_digits = match pre {
            "smollm" => true,
            "gpt-2" | "default" => false,
            other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
        };
        let tokens = file.require_strings("tokenizer.ggml.tokens")?;
        let types = match file.get("tokenizer.ggml.token_type") {
            Some(_) => file.require_i64s("tokenizer.ggml.token_type")?,
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(TokenizerError::LengthMismatch {
                key: "tokenizer.ggml.token_type",
                found: types.len(),
                expected: tokens.len(),
            });
        }
        let merges = file.require_strings("tokenizer.ggml.merges")?;
        let vocab_size = tokens.len();
        let id_of = |what: &'static str, key: &str, default: Option<u32>| -> Result<u32, TokenizerError> {
            let id = match (file.get(key), default) {
                (None, Some(d)) => d.into(),
                _ => file.require_u64(key)?,
            };
            if id >= vocab_size as u64 {
                return Err(TokenizerError::BadTokenId { what, id, vocab_size });
            }
            Ok(id as u32)
        };
        let bos = id_of("bos", "tokenizer.ggml.bos_token_id", None)?;
        let eos = id_of("eos", "tokenizer.ggml.eos_token_id", None)?;
        let add_bos = file.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false);

        let mut ids = HashMap::with_capacity(vocab_size);
        for (id, token) in tokens.iter().enumerate() {
            if let Some(first) = ids.insert(token.to_string(), id as u32) {
                return Err(TokenizerError::DuplicateToken { id: id as u32, token: token.to_string(), first });
            }
        }
        let is_control: Vec<bool> = types.iter().map(|&t| t == TOKEN_TYPE_CONTROL).collect();
        let mut controls: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|&(id, t)| is_control[id] && !t.is_empty())
            .map(|(id, t)| (t.to_string(), id as u32))
            .collect();
        controls.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));

        let unicode_to_byte = unicode_to_byte();
        let token_bytes = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| {
                if is_control[id] {
                    return token.as_bytes().to_vec();
                }
                // A character outside the byte-level alphabet cannot come from the
                // pre-tokenizer; decoding it as its UTF-8 keeps it visible rather than lost.
                let mut bytes = Vec::with_capacity(token.len());
                for c in token.chars() {
                    match unicode_to_byte.get(&c) {
                        Some(&b) => bytes.push(b),
                        None => bytes.extend(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                bytes
            })
            .collect();

        let vocab: Vocab = tokens.iter().enumerate().map(|(id, t)| (t.to_string(), id as u32)).collect();
        let merges: Merges = merges
            .iter()
            .enumerate()
            .map(|(index, merge)| match merge.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    Ok((a.to_string(), b.to_string()))
                }
                _ => Err(TokenizerError::BadMerge { index, merge: merge.to_string() }),
            })
            .collect::<Result<_, _>>()?;
        let model =
            BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| TokenizerError::Build(e.to_string()))?;
        // `add_prefix_space` false: GPT-2 tokenizers do not add one; `trim_offsets` only affects
        // offsets, which kiln does not use; `use_regex` applies the GPT-2 pattern.
        let byte_level = PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
        let pre_tokenizer = if split_digits {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                byte_level,
            ]))
        } else {
            byte_level
        };
        let mut bpe = tokenizers::Tokenizer::new(model);
        bpe.with_pre_tokenizer(Some(pre_tokenizer));

        Ok(Tokenizer {
            bpe,
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            token_bytes,
            controls,
            is_control,
            ids,
            bos,
            eos,
            add_bos,
        })
    }

    /// The ids of `text`. With `specials`, control-token text (`<|im_start|>`) becomes the
    /// control token; without, it is encoded as the characters it is made of. No BOS is added
    /// (see [`Tokenizer::add_bos`]).
    pub fn encode(&self, text: &str, specials: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = Vec::new();
        let mut plain_start = 0;
        let mut at = 0;
        while specials && at < text.len() {
            match self.control_at(text, at) {
                Some((len, id)) => {
                    self.encode_plain(&text[plain_start..at], &mut ids)?;
                    ids.push(id);
                    at += len;
                    plain_start = at;
                }
                None => at += text[at..].chars().next().map_or(1, char::len_utf8),
            }
        }
        self.encode_plain(&text[plain_start..], &mut ids)?;
        Ok(ids)
    }

    /// The longest control token starting at byte `at` of `text`: its length and id.
    fn control_at(&self, text: &str, at: usize) -> Option<(usize, u32)> {
        let rest = &text[at..];
        self.controls.iter().find(|(token, _)| rest.starts_with(token.as_str())).map(|(token, id)| (token.len(), *id))
    }

    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) -> Result<(), TokenizerError> {
        if text.is_empty() {
            return Ok(());
        }
        let encoding = self
            .bpe
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode { text: text.to_string(), message: e.to_string() })?;
        ids.extend_from_slice(encoding.get_ids());
        Ok(())
    }

    /// The text of `ids`, control tokens included as their text. Bytes that do not form UTF-8
    /// (a character cut off at the end of `ids`) become U+FFFD, as in every byte-level decoder.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The bytes id `id` decodes to.
    pub fn token_bytes(&self, id: u32) -> Result<&[u8], TokenizerError> {
        self.token_bytes.get(id as usize).map(Vec::as_slice).ok_or(TokenizerError::BadTokenId {
            what: "token",
            id: id.into(),
            vocab_size: self.tokens.len(),
        })
    }

    /// A decoder that turns ids into text as they arrive.
    pub fn stream(&self) -> StreamDecoder<'_> {
        StreamDecoder { tokenizer: self, pending: Vec::new() }
    }

    /// The ChatML prompt for one user message, ready for the assistant's answer:
    /// `<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n`. Encode it with
    /// `specials = true`. The model's template adds a default system message when none is given;
    /// kiln leaves it out, which keeps prompts short and is what SmolLM2 answers well without.
    pub fn chat_prompt(&self, user: &str) -> String {
        format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
    }

    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// `<|im_end|>`, which ends a ChatML turn, when the vocabulary has it.
    pub fn im_end_id(&self) -> Option<u32> {
        self.token_id("<|im_end|>")
    }

    /// The ids that end generation: EOS and `<|im_end|>`, without repeats.
    pub fn stop_ids(&self) -> Vec<u32> {
        let mut stops = vec![self.eos];
        stops.extend(self.im_end_id().filter(|&id| id != self.eos));
        stops
    }

    /// Whether the model expects a BOS token before a prompt (`tokenizer.ggml.add_bos_token`;
    /// false for SmolLM2).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The id of a token by its stored text.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The stored text of a token (byte-level characters, e.g. `Ġthe`).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.is_control.get(id as usize).copied().unwrap_or(false)
    }
}

/// Turns ids into text as they arrive; a UTF-8 character split over several tokens (emoji,
/// CJK in byte-level vocabularies) is held back until it is complete.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    pending: Vec<u8>,
}

impl StreamDecoder<'_> {
    /// The text that `id` completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String, TokenizerError> {
        self.pending.extend_from_slice(self.tokenizer.token_bytes(id)?);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return Ok(out);
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Checked valid just above.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Bytes that can never start a character: replace them, go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        // An incomplete character at the end: wait for the next token.
                        None => {
                            self.pending.drain(..valid);
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is held back, as text (U+FFFD for an incomplete character); call at the end.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// The inverse of GPT-2's byte-to-character table: printable bytes map to themselves, the rest
/// (control bytes, space, a few Latin-1 ones) to U+0100 upwards, so every byte is a visible
/// character in the vocabulary.
fn unicode_to_byte() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    let mut map = HashMap::with_capacity(256);
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("256..512 are characters")
        };
        map.insert(c, b);
    }
    map
}
