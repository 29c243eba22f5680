//! Byte dots: `reduce_sum` along a last axis of 4 of `Σ cast(u8 a) · cast(i8 b)` in `i32` (see
//! [`super::analysis::byte_dot_pairs`]), the lanes of x86 VNNI's `vpdpbusd`, which sums four
//! u8 × s8 products into each i32 lane.
//!
//! The operands are walked by one loop nest over the reduction's input shape (with the flat
//! row-major index as an extra operand, so output `flat / 4` receives the element at `flat`).
//! On an AVX-512 VNNI target, when the innermost loop runs a multiple of 16 bytes and every
//! operand walks it contiguously (or not at all), each step is one `vpdpbusd` per product of
//! 64 (or 32, or 16) bytes, whose `u8` operand is computed as a GCC byte vector (`&`, `|`, `^`
//! and shifts right by a uniform amount of its leaves); the products of bytes are exact in i32
//! and `vpdpbusd` wraps like the IR's `i32` adds. Otherwise the same nest is written as scalar C
//! (widening, multiplying, wrapping), which is what targets without VNNI run.

use super::analysis::{byte_dot_pairs, row_major};
use super::tile::{collapsed_nest_with, Nest};
use super::Emitter;
use kiln_ir::{BinaryOp, DType, Op, Value, ValueDef};

impl Emitter<'_> {
    /// Emits the byte dot `out = Σ_last arg` (the analysis marked it and inlined `arg`'s tree).
    pub(crate) fn emit_byte_dot(&mut self, out: Value, arg: Value) {
        let dims = self.k.ty(arg).shape.dims().to_vec();
        let len = *dims.last().expect("a byte dot reduces a last axis");
        let mut leaves = Vec::new();
        self.a.tree_leaves(self.k, arg, &mut leaves);
        let mut strides = vec![row_major(&dims)];
        strides.extend(leaves.iter().map(|&l| self.a.repr(l).strides.clone()));
        let mut runtime = vec![None];
        runtime.extend(leaves.iter().map(|&l| self.leaf_runtime_strides(l)));
        let nest = collapsed_nest_with(&dims, &strides, &runtime, "i");
        self.declare(out);
        let o = self.name(out);
        let scalar_out = self.a.repr(out).scalar_root;
        // The vector form writes every output once; the scalar one accumulates into zeros.
        if !scalar_out && self.emit_vnni_dot(&o, arg, &nest) {
            return;
        }
        if scalar_out {
            self.line(&format!("{o} = 0;"));
        } else {
            self.line(&format!("memset({o}, 0, sizeof {o});"));
        }
        let n = self.open_nest(&nest);
        let at = if scalar_out { o.clone() } else { format!("{o}[({}) / {len}]", nest.index[0]) };
        let e = self.tree_expr(arg, &nest.index, &mut 1);
        self.line(&format!("{at} = (int32_t)((uint32_t){at} + (uint32_t)({e}));"));
        self.close_n(n);
    }

    /// The `vpdpbusd` form of a byte dot, if the target has it and the operands allow it.
    fn emit_vnni_dot(&mut self, o: &str, arg: Value, nest: &Nest) -> bool {
        if !(self.target.vnni && self.target.isa == crate::cpu::target::CpuIsa::Avx512) {
            return false;
        }
        let Some((var, extent)) = nest.innermost.clone() else { return false };
        let Some(width) = [64u64, 32, 16].into_iter().find(|w| extent % w == 0) else { return false };
        if nest.inner_strides[0] != Some(1) {
            return false;
        }
        let Some(pairs) = byte_dot_pairs(self.k, arg) else { return false };
        // Operand C in leaf order: the tree is `Σ cast(a)·cast(b)`, read left to right.
        let mut pos = 1;
        let mut terms = Vec::new();
        if !self.dot_terms(arg, nest, width, &mut pos, &mut terms) || terms.len() != pairs.len() {
            return false;
        }
        let (reg, dp, zero) = match width {
            64 => ("__m512i", "_mm512_dpbusd_epi32", "_mm512_setzero_si512()"),
            32 => ("__m256i", "_mm256_dpbusd_epi32", "_mm256_setzero_si256()"),
            _ => ("__m128i", "_mm_dpbusd_epi32", "_mm_setzero_si128()"),
        };
        let last = nest.headers.len() - 1;
        for h in &nest.headers[..last] {
            self.open(h);
        }
        self.open(&format!("for (int {var} = 0; {var} < {extent}; {var} += {width})"));
        self.line(&format!("{reg} acc = {zero};"));
        for (a, b) in &terms {
            self.line(&format!("acc = {dp}(acc, ({reg})({a}), ({reg})({b}));"));
        }
        self.line(&format!("memcpy(&{o}[({}) / 4], &acc, sizeof acc);", nest.index[0]));
        self.close_n(nest.headers.len());
        true
    }

    /// Appends the `(u8, i8)` byte-vector C of each product of the tree `v`; false if an operand
    /// is not expressible a vector at a time.
    fn dot_terms(&self, v: Value, nest: &Nest, width: u64, pos: &mut usize, terms: &mut Vec<(String, String)>) -> bool {
        let ValueDef::Result(inst, _) = self.k.value(v).def else { return false };
        let Op::Binary { op, lhs, rhs } = self.k.inst(inst).op else { return false };
        match op {
            BinaryOp::Add => {
                self.dot_terms(lhs, nest, width, pos, terms) && self.dot_terms(rhs, nest, width, pos, terms)
            }
            BinaryOp::Mul => {
                let mut sides = Vec::new();
                for side in [lhs, rhs] {
                    let ValueDef::Result(cast, _) = self.k.value(side).def else { return false };
                    let Op::Cast { arg, .. } = self.k.inst(cast).op else { return false };
                    let dtype = self.k.ty(arg).dtype;
                    let Some(c) = self.byte_lanes(arg, nest, width, pos) else { return false };
                    sides.push((dtype, c));
                }
                match (&sides[0], &sides[1]) {
                    ((DType::U8, a), (DType::I8, b)) | ((DType::I8, b), (DType::U8, a)) => {
                        terms.push((a.clone(), b.clone()));
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// `width` lanes of the byte value `v` as a GCC vector (`kiln_u8xW` / `kiln_i8xW`): leaves
    /// loaded or splat, `u8` bitwise ops and uniform right shifts on the vectors.
    fn byte_lanes(&self, v: Value, nest: &Nest, width: u64, pos: &mut usize) -> Option<String> {
        let dtype = self.k.ty(v).dtype;
        let vt = match dtype {
            DType::U8 => format!("kiln_u8x{width}"),
            DType::I8 => format!("kiln_i8x{width}"),
            _ => return None,
        };
        if !self.a.inlined[v.index()] {
            let k = *pos;
            *pos += 1;
            let repr = self.a.repr(v);
            let e = self.access(repr, &nest.index[k]);
            return match nest.inner_strides[k] {
                _ if repr.scalar_root => Some(format!("(({vt}){{0}} + ({e}))")),
                Some(0) => Some(format!("(({vt}){{0}} + ({e}))")),
                Some(1) => Some(format!("({{ {vt} t_; memcpy(&t_, &{e}, sizeof t_); t_; }})")),
                _ => None,
            };
        }
        if dtype != DType::U8 {
            return None;
        }
        let ValueDef::Result(inst, _) = self.k.value(v).def else { return None };
        let Op::Binary { op, lhs, rhs } = self.k.inst(inst).op else { return None };
        let a = self.byte_lanes(lhs, nest, width, pos)?;
        match op {
            BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => {
                let b = self.byte_lanes(rhs, nest, width, pos)?;
                let sym = match op {
                    BinaryOp::And => "&",
                    BinaryOp::Or => "|",
                    _ => "^",
                };
                Some(format!("({a} {sym} {b})"))
            }
            BinaryOp::Shr => {
                // Only a uniform amount: a leaf walked with stride 0 or a scalar.
                if self.a.inlined[rhs.index()] {
                    return None;
                }
                let k = *pos;
                *pos += 1;
                let repr = self.a.repr(rhs);
                if !(repr.scalar_root || nest.inner_strides[k] == Some(0)) {
                    return None;
                }
                let amount = format!("(uint32_t)(uint8_t){}", self.access(repr, &nest.index[k]));
                Some(format!("({amount} >= 8u ? ({vt}){{0}} : ({a} >> {amount}))"))
            }
            _ => None,
        }
    }
}
