//! rxla: trainer, data, checkpoints and CLI on top of the graph, lowering and PJRT runtime.

mod alloc;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod exec;
pub mod flops;
pub mod generate;
pub mod io;
pub mod keras;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod registry;
pub mod step;
pub mod summary;
pub mod train;
