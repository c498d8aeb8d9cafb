//! rxla: trainer, data, checkpoints and CLI.
