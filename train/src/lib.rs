//! The trainer: a model's step programs (forward + backward + optimizer in one graph, the
//! passes applied), optimizers and schedules as graph code, sharding plans and the pipeline
//! transform, the train state on device, checkpoints, metrics, and the one `Learner` loop.
//! Models, Keras programs and the CLI all train through here.

pub mod adapt;
pub mod callbacks;
pub mod checkpoint;
pub mod compress;
pub mod distill;
pub mod exec;
pub mod flops;
pub mod groups;
pub mod learner;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod pipeline;
pub mod prune;
pub mod state;
pub mod step;
pub mod tensor;
pub mod tensorboard;
pub mod weights;
