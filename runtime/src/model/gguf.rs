//! The GGUF v3 reader: header, metadata, tensor infos, alignment and tensor data.
//!
//! A GGUF file is a header (`GGUF`, version, tensor count, metadata count), the metadata as typed
//! key/value pairs, one info per tensor (name, dimensions, ggml type, offset into the data
//! section), padding to the file's alignment (`general.alignment`, 32 when absent), then the
//! tensor data, each tensor at an offset that is a multiple of the alignment.
//!
//! [`GgufFile::open`] reads the whole file into memory (the models kiln runs are small enough;
//! SmolLM2-135M is 98 MB) and checks everything that can be checked without decoding the data:
//! every count against the bytes left, every tensor's extent against the file end, alignment,
//! overlaps, and that a quantized tensor's rows are whole blocks. Later accessors therefore never
//! read out of bounds. Tensors are handed out as stored ([`TensorSource`]): Q4_0, Q4_1 and Q8_0
//! blocks stay quantized; other ggml types are reported as [`GgufError::UnsupportedTensorType`].
//!
//! [`GgufFile::llama_config`] reads the `llama.*` keys; a file of another architecture is a typed
//! error, as is one whose hyperparameters contradict its tensors.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::tensor::{LlamaConfig, LoadError, RawTensor, TensorData, TensorSource};

/// `GGUF` read as a little-endian `u32`.
const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// Why a GGUF file could not be read. Every variant names what is wrong; the fix for a broken
/// file is to download it again or re-export it (llama.cpp's `convert_hf_to_gguf.py`).
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file: it starts with {found:02x?}, not `GGUF`")]
    BadMagic { found: Vec<u8> },
    #[error("GGUF version {0} is not supported (kiln reads version 3; re-export the model with a current llama.cpp)")]
    UnsupportedVersion(u32),
    #[error(
        "the file is truncated: reading {what} needs {needed} bytes at offset {offset}, but the file has {len} \
         (download it again)"
    )]
    Truncated { what: String, offset: u64, needed: u64, len: u64 },
    #[error("corrupt metadata `{key}`: {message}")]
    BadMetadata { key: String, message: String },
    #[error("metadata key `{key}` appears twice")]
    DuplicateKey { key: String },
    #[error("tensor `{name}`: {message}")]
    BadTensorInfo { name: String, message: String },
    #[error("tensor `{name}` appears twice")]
    DuplicateTensor { name: String },
    #[error(
        "tensor `{name}` has data at bytes {start}..{end} of the data section, past its end at {data_len} \
         (the file is truncated or corrupt)"
    )]
    TensorOutOfBounds { name: String, start: u64, end: u64, data_len: u64 },
    #[error("tensors `{first}` and `{second}` overlap in the data section (the file is corrupt)")]
    OverlappingTensors { first: String, second: String },
    #[error(
        "tensor `{name}` has ggml type {type_name}, which kiln does not read (it reads Q4_0, Q4_1, Q8_0, F16, \
         BF16 and F32); requantize the model, e.g. `llama-quantize MODEL.gguf OUT.gguf Q4_1`"
    )]
    UnsupportedTensorType { name: String, type_name: String },
    #[error("the file has no metadata key `{key}`")]
    MissingKey { key: String },
    #[error("metadata `{key}` is {found}, expected {expected}")]
    WrongType { key: String, expected: &'static str, found: String },
}

/// A ggml tensor type as stored in a tensor info; the id is kept for types kiln knows only by
/// size, so an error can name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    pub const F32: GgmlType = GgmlType(0);
    pub const F16: GgmlType = GgmlType(1);
    pub const Q4_0: GgmlType = GgmlType(2);
    pub const Q4_1: GgmlType = GgmlType(3);
    pub const Q8_0: GgmlType = GgmlType(8);
    pub const BF16: GgmlType = GgmlType(30);

    /// Name, values per block and bytes per block, for every type ggml defines. Knowing the sizes
    /// of types kiln does not decode lets `open` still check every tensor's extent.
    fn layout(self) -> Option<(&'static str, u64, u64)> {
        Some(match self.0 {
            0 => ("F32", 1, 4),
            1 => ("F16", 1, 2),
            2 => ("Q4_0", 32, 18),
            3 => ("Q4_1", 32, 20),
            6 => ("Q5_0", 32, 22),
            7 => ("Q5_1", 32, 24),
            8 => ("Q8_0", 32, 34),
            9 => ("Q8_1", 32, 40),
            10 => ("Q2_K", 256, 84),
            11 => ("Q3_K", 256, 110),
            12 => ("Q4_K", 256, 144),
            13 => ("Q5_K", 256, 176),
            14 => ("Q6_K", 256, 210),
            15 => ("Q8_K", 256, 292),
            16 => ("IQ2_XXS", 256, 66),
            17 => ("IQ2_XS", 256, 74),
            18 => ("IQ3_XXS", 256, 98),
            19 => ("IQ1_S", 256, 50),
            20 => ("IQ4_NL", 32, 18),
            21 => ("IQ3_S", 256, 110),
            22 => ("IQ2_S", 256, 82),
            23 => ("IQ4_XS", 256, 136),
            24 => ("I8", 1, 1),
            25 => ("I16", 1, 2),
            26 => ("I32", 1, 4),
            27 => ("I64", 1, 8),
            28 => ("F64", 1, 8),
            29 => ("IQ1_M", 256, 56),
            30 => ("BF16", 1, 2),
            34 => ("TQ1_0", 256, 54),
            35 => ("TQ2_0", 256, 66),
            39 => ("MXFP4", 32, 17),
            _ => return None,
        })
    }

    /// The ggml name (`Q4_1`), or `type N` for an id ggml does not define.
    pub fn name(self) -> String {
        match self.layout() {
            Some((name, _, _)) => name.to_string(),
            None => format!("type {}", self.0),
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A metadata value. Arrays hold values of one type; GGUF allows arrays of arrays.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The GGUF name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "uint8",
            MetaValue::I8(_) => "int8",
            MetaValue::U16(_) => "uint16",
            MetaValue::I16(_) => "int16",
            MetaValue::U32(_) => "uint32",
            MetaValue::I32(_) => "int32",
            MetaValue::U64(_) => "uint64",
            MetaValue::I64(_) => "int64",
            MetaValue::F32(_) => "float32",
            MetaValue::F64(_) => "float64",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }

    /// Any integer type that holds a non-negative value; writers differ in which width they use.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type, as `i64` (`u64` values above `i64::MAX` are `None`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v.into()),
            MetaValue::I16(v) => Some(v.into()),
            MetaValue::I32(v) => Some(v.into()),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// A float, or an integer read as one.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(v) => Some(v),
            _ => None,
        }
    }

    /// A short rendering for listings: scalars in full, strings up to 60 characters, arrays as
    /// their length and element type.
    pub fn summary(&self) -> String {
        match self {
            MetaValue::String(s) if s.chars().count() > 60 => {
                format!("{:?}… ({} chars)", s.chars().take(60).collect::<String>(), s.chars().count())
            }
            MetaValue::String(s) => format!("{s:?}"),
            MetaValue::Array(v) => match v.first() {
                Some(first) => format!("[{}; {}]", first.type_name(), v.len()),
                None => "[]".to_string(),
            },
            MetaValue::U8(v) => v.to_string(),
            MetaValue::I8(v) => v.to_string(),
            MetaValue::U16(v) => v.to_string(),
            MetaValue::I16(v) => v.to_string(),
            MetaValue::U32(v) => v.to_string(),
            MetaValue::I32(v) => v.to_string(),
            MetaValue::U64(v) => v.to_string(),
            MetaValue::I64(v) => v.to_string(),
            MetaValue::F32(v) => v.to_string(),
            MetaValue::F64(v) => v.to_string(),
            MetaValue::Bool(v) => v.to_string(),
        }
    }
}

/// One tensor's entry in the file: where its data is and how it is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// `shape[0]` varies fastest (GGUF's `ne`), as in [`RawTensor::shape`].
    pub shape: Vec<usize>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data, from the shape and the type's block size.
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// A GGUF file read into memory and checked; see the module doc.
pub struct GgufFile {
    path: PathBuf,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, MetaValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    bytes: Vec<u8>,
    /// Where the data section starts in `bytes`.
    data_offset: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("n_bytes", &self.bytes.len())
            .finish()
    }
}

impl GgufFile {
    /// Reads and checks the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, LoadError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| gguf_error(path, GgufError::Io(e)))?;
        GgufFile::from_bytes(path, bytes)
    }

    /// Checks `bytes` as a GGUF file; `path` names it in errors.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<GgufFile, LoadError> {
        let path = path.as_ref();
        parse(path, bytes).map_err(|e| gguf_error(path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> &[(String, MetaValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// Tensor infos in file order.
    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The metadata value `key`, which must be present.
    pub fn require(&self, key: &str) -> Result<&MetaValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_string() })
    }

    /// A non-negative integer under `key`, of any integer width.
    pub fn require_u64(&self, key: &str) -> Result<u64, GgufError> {
        let value = self.require(key)?;
        value.as_u64().ok_or_else(|| wrong_type(key, "a non-negative integer", value))
    }

    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        let value = self.require(key)?;
        value.as_str().ok_or_else(|| wrong_type(key, "a string", value))
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn require_strings(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let value = self.require(key)?;
        let items = value.as_array().ok_or_else(|| wrong_type(key, "an array of strings", value))?;
        items.iter().map(|item| item.as_str().ok_or_else(|| wrong_type(key, "an array of strings", item))).collect()
    }

    /// An array of integers (e.g. `tokenizer.ggml.token_type`).
    pub fn require_i64s(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        let value = self.require(key)?;
        let items = value.as_array().ok_or_else(|| wrong_type(key, "an array of integers", value))?;
        items.iter().map(|item| item.as_i64().ok_or_else(|| wrong_type(key, "an array of integers", item))).collect()
    }

    /// The stored bytes of tensor `name`, whatever its type.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], LoadError> {
        let info = self.tensor_info(name).ok_or_else(|| LoadError::MissingTensor { name: name.to_string() })?;
        // `parse` checked that every tensor lies inside the file.
        let start = (self.data_offset + info.offset) as usize;
        Ok(&self.bytes[start..start + info.n_bytes as usize])
    }

    /// The Llama hyperparameters from the `llama.*` keys, checked against the tensors.
    pub fn llama_config(&self) -> Result<LlamaConfig, LoadError> {
        let config = |message: String| LoadError::Config(format!("{}: {message}", self.path.display()));
        let meta = |e: GgufError| config(e.to_string());
        let arch = self.require_str("general.architecture").map_err(meta)?;
        if arch != "llama" {
            return Err(config(format!(
                "architecture `{arch}` is not supported; kiln runs Llama-architecture models \
                 (general.architecture = \"llama\"), e.g. SmolLM2, Llama 2/3, TinyLlama"
            )));
        }
        let int = |key: &str| -> Result<usize, LoadError> {
            let v = self.require_u64(key).map_err(meta)?;
            usize::try_from(v).map_err(|_| config(format!("`{key}` = {v} is too large")))
        };
        let float = |key: &str, default: f64| -> Result<f64, LoadError> {
            match self.get(key) {
                None => Ok(default),
                Some(v) => v.as_f64().ok_or_else(|| meta(wrong_type(key, "a number", v))),
            }
        };
        let n_layers = int("llama.block_count")?;
        let dim = int("llama.embedding_length")?;
        let ffn_dim = int("llama.feed_forward_length")?;
        let n_heads = int("llama.attention.head_count")?;
        let n_kv_heads = match self.get("llama.attention.head_count_kv") {
            None => n_heads,
            Some(_) => int("llama.attention.head_count_kv")?,
        };
        let context_length = int("llama.context_length")?;
        let rope_base = float("llama.rope.freq_base", 10000.0)?;
        let rms_eps = float("llama.attention.layer_norm_rms_epsilon", 1e-5)?;
        for (key, v) in [
            ("llama.block_count", n_layers),
            ("llama.embedding_length", dim),
            ("llama.feed_forward_length", ffn_dim),
            ("llama.attention.head_count", n_heads),
            ("llama.attention.head_count_kv", n_kv_heads),
            ("llama.context_length", context_length),
        ] {
            if v == 0 {
                return Err(config(format!("`{key}` is 0")));
            }
        }
        if dim % n_heads != 0 {
            return Err(config(format!("embedding_length {dim} is not a multiple of head_count {n_heads}")));
        }
        if n_heads % n_kv_heads != 0 {
            return Err(config(format!("head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}")));
        }
        let head_dim = dim / n_heads;
        if let Some(v) = self.get("llama.attention.key_length") {
            if v.as_u64() != Some(head_dim as u64) {
                return Err(config(format!(
                    "attention.key_length {} differs from embedding_length / head_count = {head_dim}; kiln needs \
                     head_dim = dim / n_heads",
                    v.summary()
                )));
            }
        }
        if !(rope_base > 0.0 && rope_base.is_finite() && rms_eps > 0.0 && rms_eps.is_finite()) {
            return Err(config(format!("rope.freq_base {rope_base} and layer_norm_rms_epsilon {rms_eps} must be > 0")));
        }
        let embd = self
            .tensor_info("token_embd.weight")
            .ok_or_else(|| LoadError::MissingTensor { name: "token_embd.weight".to_string() })?;
        if embd.shape.len() != 2 || embd.shape[0] != dim {
            return Err(config(format!("token_embd.weight has shape {:?}, expected [{dim}, vocab_size]", embd.shape)));
        }
        let vocab_size = match self.get("llama.vocab_size") {
            Some(_) => int("llama.vocab_size")?,
            None => embd.shape[1],
        };
        if embd.shape[1] != vocab_size {
            return Err(config(format!(
                "llama.vocab_size {vocab_size} differs from token_embd.weight's {} rows",
                embd.shape[1]
            )));
        }
        Ok(LlamaConfig {
            n_layers,
            dim,
            ffn_dim,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length,
            rope_base,
            rms_eps,
            tied_head: self.tensor_info("output.weight").is_none(),
        })
    }
}

impl TensorSource for GgufFile {
    fn config(&self) -> Result<LlamaConfig, LoadError> {
        self.llama_config()
    }

    fn tensor(&self, name: &str) -> Result<RawTensor, LoadError> {
        let info = self.tensor_info(name).ok_or_else(|| LoadError::MissingTensor { name: name.to_string() })?;
        let bytes = self.tensor_bytes(name)?;
        let data = match info.ggml_type {
            GgmlType::F32 => {
                TensorData::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
            GgmlType::F16 => TensorData::F16(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
            GgmlType::BF16 => {
                TensorData::BF16(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect())
            }
            GgmlType::Q4_0 => TensorData::Q4_0(bytes.to_vec()),
            GgmlType::Q4_1 => TensorData::Q4_1(bytes.to_vec()),
            GgmlType::Q8_0 => TensorData::Q8_0(bytes.to_vec()),
            other => {
                return Err(gguf_error(
                    &self.path,
                    GgufError::UnsupportedTensorType { name: name.to_string(), type_name: other.name() },
                ))
            }
        };
        Ok(RawTensor { name: name.to_string(), shape: info.shape.clone(), data })
    }
}

fn gguf_error(path: &Path, source: GgufError) -> LoadError {
    LoadError::Gguf { path: path.to_path_buf(), source }
}

fn wrong_type(key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
    GgufError::WrongType { key: key.to_string(), expected, found: found.type_name().to_string() }
}

/// A cursor over the file that reports truncation with what it was reading.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let left = (self.bytes.len() - self.pos) as u64;
        if n > left {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: n,
                len: self.bytes.len() as u64,
            });
        }
        let slice = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let slice = self.take(N as u64, what)?;
        let mut out = [0; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string: `u64` length, then UTF-8 bytes.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| GgufError::BadMetadata { key: what(), message: "a string is not valid UTF-8".to_string() })
    }

    fn value(&mut self, value_type: u32, key: &str, depth: usize) -> Result<MetaValue, GgufError> {
        let what = || format!("metadata `{key}`");
        Ok(match value_type {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(&what)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(&what)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => {
                    return Err(GgufError::BadMetadata {
                        key: key.to_string(),
                        message: format!("bool byte is {b}, not 0 or 1"),
                    })
                }
            },
            8 => MetaValue::String(self.string(&what)?),
            9 => {
                // Arrays of arrays are legal but never deep; a bound keeps a corrupt file from
                // recursing without end.
                if depth >= 8 {
                    return Err(GgufError::BadMetadata {
                        key: key.to_string(),
                        message: "arrays nested more than 8 deep".to_string(),
                    });
                }
                let elem_type = self.u32(&what)?;
                let count = self.u64(&what)?;
                // Every element takes at least one byte, so a count beyond the bytes left is a
                // truncated (or corrupt) file; checking first avoids a huge allocation.
                let left = (self.bytes.len() - self.pos) as u64;
                if count > left {
                    return Err(GgufError::Truncated {
                        what: format!("metadata `{key}` ({count} array elements)"),
                        offset: self.pos as u64,
                        needed: count,
                        len: self.bytes.len() as u64,
                    });
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_type, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            t => {
                return Err(GgufError::BadMetadata {
                    key: key.to_string(),
                    message: format!("unknown value type {t} (GGUF defines 0..=12)"),
                })
            }
        })
    }
}

fn parse(path: &Path, bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    let mut r = Reader { bytes: &bytes, pos: 0 };
    let header = || "the header".to_string();
    let magic: [u8; 4] = r.array(&header)?;
    if magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic.to_vec() });
    }
    let version = r.u32(&header)?;
    if version != 3 {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = r.u64(&header)?;
    let n_metadata = r.u64(&header)?;

    let mut metadata = Vec::new();
    let mut metadata_index = HashMap::new();
    for i in 0..n_metadata {
        let key = r.string(&|| format!("the key of metadata entry {i} of {n_metadata}"))?;
        let value_type = r.u32(&|| format!("the type of metadata `{key}`"))?;
        let value = r.value(value_type, &key, 0)?;
        if metadata_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::DuplicateKey { key });
        }
        metadata.push((key, value));
    }

    let alignment = match metadata_index.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(&i) => {
            let value = &metadata[i].1;
            match value.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::BadMetadata {
                        key: "general.alignment".to_string(),
                        message: format!("{} is not a power of two", value.summary()),
                    })
                }
            }
        }
    };

    let mut tensors = Vec::new();
    let mut tensor_index = HashMap::new();
    for i in 0..n_tensors {
        let name = r.string(&|| format!("the name of tensor {i} of {n_tensors}"))?;
        let what = || format!("the info of tensor `{name}`");
        let n_dims = r.u32(&what)?;
        if n_dims == 0 || n_dims > 4 {
            return Err(GgufError::BadTensorInfo {
                name,
                message: format!("{n_dims} dimensions (GGUF allows 1 to 4)"),
            });
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.u64(&what)?;
            let d = usize::try_from(d).map_err(|_| GgufError::BadTensorInfo {
                name: name.clone(),
                message: format!("dimension {d} too large"),
            })?;
            shape.push(d);
        }
        let ggml_type = GgmlType(r.u32(&what)?);
        let offset = r.u64(&what)?;
        let n_bytes = tensor_size(&name, &shape, ggml_type)?;
        if offset % alignment != 0 {
            return Err(GgufError::BadTensorInfo {
                name,
                message: format!("data offset {offset} is not a multiple of the alignment {alignment}"),
            });
        }
        if tensor_index.insert(name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor { name });
        }
        tensors.push(TensorInfo { name, shape, ggml_type, offset, n_bytes });
    }

    // The data section starts at the next multiple of the alignment.
    let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
    let data_len = (bytes.len() as u64).saturating_sub(data_offset);
    if !tensors.is_empty() && data_offset > bytes.len() as u64 {
        return Err(GgufError::Truncated {
            what: "the padding before the tensor data".to_string(),
            offset: r.pos as u64,
            needed: data_offset - r.pos as u64,
            len: bytes.len() as u64,
        });
    }
    for t in &tensors {
        let end = t.offset.saturating_add(t.n_bytes);
        if end > data_len {
            return Err(GgufError::TensorOutOfBounds { name: t.name.clone(), start: t.offset, end, data_len });
        }
    }
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(GgufError::OverlappingTensors { first: pair[0].name.clone(), second: pair[1].name.clone() });
        }
    }

    Ok(GgufFile {
        path: path.to_path_buf(),
        version,
        alignment,
        metadata,
        metadata_index,
        tensors,
        tensor_index,
        bytes,
        data_offset,
    })
}

/// Bytes of a tensor of `shape` and `ggml_type`: rows along `shape[0]` must be whole blocks.
fn tensor_size(name: &str, shape: &[usize], ggml_type: GgmlType) -> Result<u64, GgufError> {
    let bad = |message: String| GgufError::BadTensorInfo { name: name.to_string(), message };
    let (type_name, block, block_bytes) =
        ggml_type.layout().ok_or_else(|| bad(format!("unknown ggml type {} (the file is corrupt)", ggml_type.0)))?;
    if !(shape[0] as u64).is_multiple_of(block) {
        return Err(bad(format!(
            "shape {shape:?}: a {type_name} row of {} values is not a whole number of {block}-value blocks",
            shape[0]
        )));
    }
    let too_large = || bad(format!("shape {shape:?} is too large"));
    let n = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).ok_or_else(too_large)?;
    (n / block).checked_mul(block_bytes).ok_or_else(too_large)
}
