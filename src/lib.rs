//! rxla: the application on top of the trainer: config aggregation, the model and data
//! registry, the CLI, bench, summary, generation, and the Keras-style API.

mod alloc;
pub mod bench;
pub mod cli;
pub mod compress;
pub mod config;
pub mod generate;
pub mod keras;
pub mod pretrained;
pub mod registry;
pub mod summary;
