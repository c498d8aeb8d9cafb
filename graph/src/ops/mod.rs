//! One file per concept: builder methods, shape rule and VJP rule side by side.

pub mod annotate;
pub(crate) mod common;
pub mod control;
pub mod conv;
pub mod custom;
pub mod dot;
pub mod elementwise;
pub mod gather;
pub mod leaf;
pub mod pool;
pub mod random;
pub mod reduce;
pub mod shape_ops;
pub mod slicing;
pub mod sort;
