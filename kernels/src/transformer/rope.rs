//! `rope`: rotary position embedding of `q` and `k` in place.
//!
//! For a token at position `p` and a pair index `i < head_dim / 2`, the angle is
//! `θ = p · base^(-2i / head_dim)` and the pair `(x0, x1)` becomes
//! `(x0 cos θ - x1 sin θ, x0 sin θ + x1 cos θ)`. The variant says which elements pair up:
//! - `adjacent`: `(2i, 2i + 1)`, GGUF / llama.cpp "normal" mode (Llama and SmolLM2 GGUFs);
//! - `half`: `(i, i + head_dim / 2)`, NeoX mode (Hugging Face `rotate_half`).
//!
//! Layouts (row-major): `q` `[tokens, heads, head_dim]` and `k` `[tokens, kv_heads, head_dim]`
//! of `dtype` (f32 or f16, InOut: rotated in place); `positions` `[tokens]` i32 (Input, each in
//! `0..max_pos`; one outside is an out-of-bounds error of the interpreter); `cos` and `sin`
//! `[max_pos, head_dim / 2]` f32 (Input).
//!
//! The IR has no sin/cos, so the kernel reads angles' cosines and sines from a cache that
//! [`rope_cache`] computes on the host in f64 and rounds to f32; the runtime builds it once per
//! model from the model's base and context length. The reference does not use the cache: it
//! computes every rotation from `base` and the positions in f64.
//!
//! Grid: `[tokens, ceil(max(heads, kv_heads) / block_h)]`; program `(t, y)` rotates heads
//! `y · block_h ..` of token `t` in both `q` and `k` (masking heads past each tensor's count) as
//! `[block_h, head_dim / 2]` tiles of `x0` and `x1`, in f32, rounding to `dtype` at the store.
//! Every element is loaded and stored by the same lane of the same program, so in place is safe.

use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::{Config, Knob, Problem, SpaceLimits, TileKernel};
use crate::plan::{buf, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::tiles::covering;
use crate::{ensure, KernelError};
use kiln_ir::interp::HostBuffer;
use kiln_ir::{Buf, DType, KernelBuilder, Tile};
use std::fmt;
use std::str::FromStr;

const NAME: &str = "rope";

/// Which elements of a head form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeVariant {
    /// `(2i, 2i + 1)`: GGUF / llama.cpp normal mode.
    Adjacent,
    /// `(i, i + head_dim / 2)`: NeoX mode.
    Half,
}

impl RopeVariant {
    /// Element offsets (within a head) of the two halves of pair `i`.
    fn pair(self, i: usize, half: usize) -> (usize, usize) {
        match self {
            RopeVariant::Adjacent => (2 * i, 2 * i + 1),
            RopeVariant::Half => (i, i + half),
        }
    }
}

impl fmt::Display for RopeVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RopeVariant::Adjacent => "adjacent",
            RopeVariant::Half => "half",
        })
    }
}

impl FromStr for RopeVariant {
    type Err = ();
    fn from_str(s: &str) -> Result<RopeVariant, ()> {
        match s {
            "adjacent" => Ok(RopeVariant::Adjacent),
            "half" => Ok(RopeVariant::Half),
            _ => Err(()),
        }
    }
}

/// The cos/sin cache the kernel reads: `(cos, sin)`, each `[max_pos, head_dim / 2]` row-major,
/// entry `[p, i]` the cosine / sine of `p · base^(-2i / head_dim)`, computed in f64 and rounded
/// to f32. The same cache serves both variants (they differ only in which elements pair up).
pub fn rope_cache(base: f64, max_pos: u32, head_dim: u32) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim as usize / 2;
    let mut cos = Vec::with_capacity(max_pos as usize * half);
    let mut sin = Vec::with_capacity(max_pos as usize * half);
    for p in 0..max_pos {
        for i in 0..half {
            let angle = f64::from(p) * inv_freq(base, i, head_dim);
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// `base^(-2i / head_dim)`, the angular frequency of pair `i`.
fn inv_freq(base: f64, i: usize, head_dim: u32) -> f64 {
    base.powf(-(2.0 * i as f64) / f64::from(head_dim))
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeProblem {
    pub tokens: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Rows of the cos/sin cache: every position must be below it.
    pub max_pos: u32,
    pub base: f64,
    pub variant: RopeVariant,
    /// Dtype of `q` and `k`: f32 or f16.
    pub dtype: DType,
}

impl RopeProblem {
    fn half(&self) -> u32 {
        self.head_dim / 2
    }
    fn max_heads(&self) -> u32 {
        self.heads.max(self.kv_heads)
    }
}

impl Problem for RopeProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let tokens = r.get("tokens")?;
        let heads = r.get("heads")?;
        let kv_heads = r.get("kv_heads")?;
        let head_dim = r.get("head_dim")?;
        let max_pos = r.get("max_pos")?;
        let base = r.get_or("base", 10_000.0)?;
        let variant: String = r.get_or("variant", "adjacent".to_string())?;
        let dtype: String = r.get_or("dtype", "f32".to_string())?;
        r.finish()?;
        let variant = variant.parse().map_err(|()| KernelError::Constraint {
            kernel: NAME,
            constraint: format!("variant `{variant}` is not one of adjacent, half"),
        })?;
        let dtype = parse_dtype(NAME, "dtype", &dtype, &[DType::F32, DType::F16])?;
        let p = RopeProblem { tokens, heads, kv_heads, head_dim, max_pos, base, variant, dtype };
        ensure(NAME, p.tokens >= 1 && p.heads >= 1 && p.kv_heads >= 1 && p.max_pos >= 1, || {
            "tokens, heads, kv_heads and max_pos must be at least 1".into()
        })?;
        ensure(NAME, p.head_dim >= 2 && p.head_dim.is_multiple_of(2), || {
            format!("head_dim = {} must be even and at least 2", p.head_dim)
        })?;
        ensure(NAME, p.base.is_finite() && p.base > 1.0, || format!("base = {} must be finite and > 1", p.base))?;
        let q_len = u64::from(p.tokens) * u64::from(p.max_heads()) * u64::from(p.head_dim);
        let cache_len = u64::from(p.max_pos) * u64::from(p.half());
        ensure(NAME, q_len.max(cache_len) <= i32::MAX as u64, || {
            format!("tokens · heads · head_dim = {q_len} or max_pos · head_dim / 2 = {cache_len} exceeds the i32 offset range")
        })?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        Args::new()
            .with("tokens", self.tokens)
            .with("heads", self.heads)
            .with("kv_heads", self.kv_heads)
            .with("head_dim", self.head_dim)
            .with("max_pos", self.max_pos)
            .with("base", self.base)
            .with("variant", self.variant)
            .with("dtype", self.dtype)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// Heads per program (of `q` and of `k` each).
    pub block_h: u32,
}

impl Config for RopeConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = RopeConfig { block_h: r.one_of("block_h", &BLOCK_H)? };
        r.finish()?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new().with("block_h", self.block_h)
    }
}

const BLOCK_H: [u32; 6] = [1, 2, 4, 8, 16, 32];

pub struct Rope;

impl TileKernel for Rope {
    type Problem = RopeProblem;
    type Config = RopeConfig;

    fn id(&self) -> KernelId {
        KernelId::Rope
    }

    fn example_problem(&self) -> Args {
        // SmolLM2-135M's attention.
        Args::new()
            .with("tokens", 4)
            .with("heads", 9)
            .with("kv_heads", 3)
            .with("head_dim", 64)
            .with("max_pos", 2048)
            .with("base", 100_000)
            .with("variant", "adjacent")
            .with("dtype", "f32")
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob { name: "block_h", values: BLOCK_H.map(i64::from).to_vec(), help: "heads per program" }]
    }

    fn default_config(&self, p: &RopeProblem) -> RopeConfig {
        // All heads of a token in one program up to 16 heads.
        RopeConfig { block_h: covering(&BLOCK_H, p.max_heads().min(16)) }
    }

    fn space(&self, p: &RopeProblem, limits: &SpaceLimits) -> Vec<RopeConfig> {
        let cover = covering(&BLOCK_H, p.max_heads());
        let width = u64::from(p.half().next_power_of_two());
        let mut space: Vec<RopeConfig> = BLOCK_H
            .into_iter()
            .filter(|&h| h <= cover && u64::from(h) * width <= limits.max_tile_elements && grid_y(p, h) <= 65_535)
            .map(|block_h| RopeConfig { block_h })
            .collect();
        let default = self.default_config(p);
        if !space.contains(&default) {
            space.push(default);
        }
        space
    }

    fn plan(&self, p: &RopeProblem, c: &RopeConfig) -> Result<Plan, KernelError> {
        ensure(NAME, BLOCK_H.contains(&c.block_h), || format!("block_h = {} is not one of {BLOCK_H:?}", c.block_h))?;
        let grid_y = grid_y(p, c.block_h);
        ensure(NAME, grid_y <= 65_535, || format!("{grid_y} head blocks exceed the grid limit 65535 (raise block_h)"))?;
        let kernel = build(p, c).map_err(|source| KernelError::Build { kernel: NAME, source })?;
        let (tokens, head_dim) = (p.tokens as usize, p.head_dim as usize);
        let cache_len = p.max_pos as usize * p.half() as usize;
        let spec = |name: &str, dtype, len, role| BufferSpec { name: name.into(), dtype, len, role };
        Ok(Plan {
            buffers: vec![
                spec("q", p.dtype, tokens * p.heads as usize * head_dim, Role::InOut),
                spec("k", p.dtype, tokens * p.kv_heads as usize * head_dim, Role::InOut),
                spec("positions", DType::I32, tokens, Role::Input),
                spec("cos", DType::F32, cache_len, Role::Input),
                spec("sin", DType::F32, cache_len, Role::Input),
            ],
            launches: vec![Launch {
                kernel,
                grid: [p.tokens, grid_y, 1],
                args: vec![
                    buf("q"),
                    buf("k"),
                    buf("positions"),
                    buf("cos"),
                    buf("sin"),
                    i32_arg(p.heads.into()),
                    i32_arg(p.kv_heads.into()),
                    i32_arg(p.head_dim.into()),
                ],
            }],
        })
    }

    fn inputs(&self, p: &RopeProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let (tokens, head_dim) = (p.tokens as usize, p.head_dim as usize);
        let q = random::uniform(&mut rng, p.dtype, tokens * p.heads as usize * head_dim, -2.0, 2.0);
        let k = random::uniform(&mut rng, p.dtype, tokens * p.kv_heads as usize * head_dim, -2.0, 2.0);
        let positions = random::integers(&mut rng, DType::I32, tokens, 0, i64::from(p.max_pos));
        let (cos, sin) = rope_cache(p.base, p.max_pos, p.head_dim);
        Buffers::from([
            ("q".to_string(), q),
            ("k".to_string(), k),
            ("positions".to_string(), positions),
            ("cos".to_string(), HostBuffer::F32(cos)),
            ("sin".to_string(), HostBuffer::F32(sin)),
        ])
    }

    fn reference(&self, p: &RopeProblem, inputs: &Buffers) -> Reference {
        let positions = inputs["positions"].to_f64();
        let rotate = |x: Vec<f64>, heads: usize| {
            let (head_dim, half) = (p.head_dim as usize, p.half() as usize);
            let mut out = x.clone();
            for (t, &pos) in positions.iter().enumerate() {
                for h in 0..heads {
                    let head = (t * heads + h) * head_dim;
                    for i in 0..half {
                        let angle = pos * inv_freq(p.base, i, p.head_dim);
                        let (a, b) = p.variant.pair(i, half);
                        let (x0, x1) = (x[head + a], x[head + b]);
                        out[head + a] = x0 * angle.cos() - x1 * angle.sin();
                        out[head + b] = x0 * angle.sin() + x1 * angle.cos();
                    }
                }
            }
            out
        };
        Reference::from([
            ("q".to_string(), rotate(inputs["q"].to_f64(), p.heads as usize)),
            ("k".to_string(), rotate(inputs["k"].to_f64(), p.kv_heads as usize)),
        ])
    }
}

fn grid_y(p: &RopeProblem, block_h: u32) -> u32 {
    p.max_heads().div_ceil(block_h)
}

/// Builds the kernel: program `(t, y)` rotates heads `y · block_h ..` of token `t`.
fn build(p: &RopeProblem, c: &RopeConfig) -> Result<kiln_ir::Kernel, kiln_ir::BuildError> {
    use DType::{F32, I32};
    let b = KernelBuilder::new(NAME);
    let (q, k) = (b.buffer("q", p.dtype), b.buffer("k", p.dtype));
    let (positions, cos, sin) = (b.buffer("positions", I32), b.buffer("cos", F32), b.buffer("sin", F32));
    let (heads, kv_heads, head_dim) = (b.scalar("heads", I32), b.scalar("kv_heads", I32), b.scalar("head_dim", I32));
    let half = head_dim / 2;
    let t = b.program_id(0);
    let pair_idx = b.arange(0, p.half().next_power_of_two() as i32);
    let pair_ok = pair_idx.lt(half);
    let head_idx = b.program_id(1) * c.block_h as i32 + b.arange(0, c.block_h as i32);

    // The token's cos/sin row, shared by every head: [1, half].
    let pos = b.load(positions, t);
    let cos_row = b.load_masked(cos, pos * half + pair_idx, pair_ok, 0.0).row();
    let sin_row = b.load_masked(sin, pos * half + pair_idx, pair_ok, 0.0).row();

    let rotate = |x: Buf, n_heads: Tile| {
        let mask = head_idx.lt(n_heads).col() & pair_ok.row();
        let head_start = ((t * n_heads + head_idx) * head_dim).col();
        let (o0, o1) = match p.variant {
            RopeVariant::Adjacent => {
                let o0 = head_start + (pair_idx * 2).row();
                (o0, o0 + 1)
            }
            RopeVariant::Half => {
                let o0 = head_start + pair_idx.row();
                (o0, o0 + half)
            }
        };
        let x0 = b.load_masked(x, o0, mask, 0.0).cast(F32);
        let x1 = b.load_masked(x, o1, mask, 0.0).cast(F32);
        b.store_masked(x, o0, (x0 * cos_row - x1 * sin_row).cast(p.dtype), mask);
        b.store_masked(x, o1, (x0 * sin_row + x1 * cos_row).cast(p.dtype), mask);
    };
    rotate(q, heads);
    rotate(k, kv_heads);
    b.finish()
}
