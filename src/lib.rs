//! rxla: the application on top of the trainer: config aggregation, the model and data
//! registry, the CLI, bench, summary, generation, and the Keras-style API.

mod alloc;
pub mod batches;
pub mod bench;
pub mod cache_cmd;
pub mod cli;
pub mod compile_cmd;
pub mod compress;
pub mod config;
pub mod crawl_cmd;
pub mod data_cmd;
pub mod dist_check;
pub mod export;
pub mod finetune;
pub mod generate;
pub mod job;
pub mod keras;
pub mod launch;
pub mod predict;
pub mod pretrained;
pub mod program;
pub mod registry;
pub mod summary;
