//! A small GGUF v3 writer for tests, written from the format description independently of the
//! reader in `kiln_runtime::model::gguf`, so the reader is tested against files it did not make.
//! It records where every section ends, for truncation tests.

#![allow(dead_code)]

/// A metadata value as written; `Array` holds elements of one type.
#[derive(Clone, Debug)]
pub enum Value {
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
    Str(String),
    /// Element type id, elements.
    Array(u32, Vec<Value>),
}

impl Value {
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(..) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    pub fn str(s: &str) -> Value {
        Value::Str(s.to_string())
    }

    pub fn strings(items: &[&str]) -> Value {
        Value::Array(8, items.iter().map(|s| Value::str(s)).collect())
    }

    pub fn i32s(items: &[i32]) -> Value {
        Value::Array(5, items.iter().map(|&v| Value::I32(v)).collect())
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.extend(v.to_le_bytes()),
            Value::I8(v) => out.extend(v.to_le_bytes()),
            Value::U16(v) => out.extend(v.to_le_bytes()),
            Value::I16(v) => out.extend(v.to_le_bytes()),
            Value::U32(v) => out.extend(v.to_le_bytes()),
            Value::I32(v) => out.extend(v.to_le_bytes()),
            Value::U64(v) => out.extend(v.to_le_bytes()),
            Value::I64(v) => out.extend(v.to_le_bytes()),
            Value::F32(v) => out.extend(v.to_le_bytes()),
            Value::F64(v) => out.extend(v.to_le_bytes()),
            Value::Bool(v) => out.push(*v as u8),
            Value::Str(s) => write_str(out, s),
            Value::Array(elem, items) => {
                out.extend(elem.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

pub struct Tensor {
    pub name: String,
    /// GGUF `ne` order: the first dimension varies fastest.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
    /// Overrides the offset the writer would choose (to write corrupt files).
    pub offset: Option<u64>,
}

#[derive(Default)]
pub struct GgufWriter {
    pub version: u32,
    /// Alignment used to place tensor data; also written as `general.alignment` when `Some`.
    pub alignment: Option<u64>,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
}

/// The bytes of a written file and the offsets at which its sections end.
pub struct Written {
    pub bytes: Vec<u8>,
    /// (what ends here, offset), in file order.
    pub boundaries: Vec<(String, usize)>,
    /// Where the data of the last tensor ends: a file cut anywhere before it is incomplete.
    pub data_end: usize,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter { version: 3, ..GgufWriter::default() }
    }

    pub fn meta(mut self, key: &str, value: Value) -> GgufWriter {
        self.metadata.push((key.to_string(), value));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> GgufWriter {
        self.tensors.push(Tensor { name: name.to_string(), dims: dims.to_vec(), ggml_type, data, offset: None });
        self
    }

    pub fn write(&self) -> Written {
        let align = self.alignment.unwrap_or(32) as usize;
        let mut metadata = self.metadata.clone();
        if let Some(a) = self.alignment {
            metadata.push(("general.alignment".to_string(), Value::U32(a as u32)));
        }
        let mut out = Vec::new();
        let mut boundaries = Vec::new();
        out.extend(b"GGUF");
        boundaries.push(("magic".to_string(), out.len()));
        out.extend(self.version.to_le_bytes());
        boundaries.push(("version".to_string(), out.len()));
        out.extend((self.tensors.len() as u64).to_le_bytes());
        boundaries.push(("tensor count".to_string(), out.len()));
        out.extend((metadata.len() as u64).to_le_bytes());
        boundaries.push(("metadata count".to_string(), out.len()));
        for (key, value) in &metadata {
            write_str(&mut out, key);
            boundaries.push((format!("key {key}"), out.len()));
            out.extend(value.type_id().to_le_bytes());
            boundaries.push((format!("type of {key}"), out.len()));
            value.write(&mut out);
            boundaries.push((format!("value of {key}"), out.len()));
        }
        // Offsets: each tensor's data padded to the alignment, as llama.cpp writes them.
        let mut offsets = Vec::new();
        let mut next = 0usize;
        for t in &self.tensors {
            let offset = t.offset.map(|o| o as usize).unwrap_or(next);
            offsets.push(offset);
            next = (offset + t.data.len()).div_ceil(align) * align;
        }
        for (t, &offset) in self.tensors.iter().zip(&offsets) {
            write_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ggml_type.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            boundaries.push((format!("info of {}", t.name), out.len()));
        }
        let data_start = out.len().div_ceil(align) * align;
        out.resize(data_start, 0);
        boundaries.push(("padding before data".to_string(), out.len()));
        let mut data_end = data_start;
        for (t, &offset) in self.tensors.iter().zip(&offsets) {
            let start = data_start + offset;
            if out.len() < start + t.data.len() {
                out.resize(start + t.data.len(), 0);
            }
            out[start..start + t.data.len()].copy_from_slice(&t.data);
            data_end = data_end.max(start + t.data.len());
            boundaries.push((format!("data of {}", t.name), start + t.data.len()));
        }
        let padded = out.len().div_ceil(align) * align;
        out.resize(padded, 0);
        Written { bytes: out, boundaries, data_end }
    }
}
