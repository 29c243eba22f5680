//! The small ops of a transformer layer: RMSNorm, RoPE, SiLU·mul, argmax and softmax.

pub mod argmax;
pub mod rmsnorm;
pub mod rope;
mod row_loop_x;
pub mod silu_mul;
pub mod softmax;
