//! Datasets fetched by name, pinned by version and sha256, cached, parsed; tokenizers,
//! token files and batching. Host-side only: nothing here touches PJRT.

pub mod datasets;
pub mod denoise;
pub mod host;
pub mod images;
pub mod mnist;
pub mod pipeline;
pub mod pretrain;
pub mod rows;
pub mod source;
pub mod tasks;
pub mod text;
pub mod tokenizer;
pub mod wordpiece;

pub use datasets::{epoch_batches, fetch, package, ImageSet, DATASETS};
pub use host::HostArray;
pub use rows::process_rows;
pub use source::DataSource;
