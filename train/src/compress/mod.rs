//! Model compression: int8 post-training quantization (weights stored as i8 with f32
//! per-channel scales, dequantized inside the compiled program), and low-rank factorization by truncated SVD.

pub mod eval;
pub mod lowrank;
pub mod quantize;
