//! Layers written against the graph API, shared by `models`, the Keras API and the trainer.
//!
//! A layer is a small config struct plus `declare` (its weights, by name, in the current
//! scope of a [`Weights`]) returning the declared layer, whose `apply` builds the
//! computation: `let l = Linear::new([d]).declare(g, p, "fc", x_dim)?; let y = l.apply(g, x)?;`.
//! Models compose layers; they never see meshes, stages or step programs.

pub mod attention;
pub mod attention_config;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod kernels;
pub mod kv_cache;
pub mod linear;
pub mod loss;
pub mod mlp;
pub mod model;
pub mod norm;
pub mod param;
pub mod repeat;
pub mod reversible;

pub use attention::{AttentionKernel, MultiHeadAttention};
pub use attention_config::AttentionConfig;
pub use conv::{Conv2d, Pool2d};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use linear::Linear;
pub use mlp::Mlp;
pub use model::{Forward, Mode, Model};
pub use norm::LayerNorm;
pub use param::{axis, scoped, Init, ParamSpec, Params, Weights};
pub use repeat::{repeated, Repeat, RepeatHook};

#[cfg(test)]
mod kernel_tests;
