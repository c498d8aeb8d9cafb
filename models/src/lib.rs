//! Model definitions built from `nn` layers, each readable on its own: a config struct and a
//! forward function with shapes in comments. Parallelism, remat and precision are applied
//! to them by the trainer, never written into them.

pub mod bert;
pub mod cnn;
pub mod encdec;
pub mod gpt;
pub mod heads;
pub mod mlp;

pub use nn::loss::classification_head;
pub use nn::{Forward, Init, Mode, Model, ParamSpec, Params};
