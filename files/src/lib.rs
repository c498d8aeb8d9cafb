//! The file layer every other crate stands on: atomic writes (a reader never sees a
//! half-written file), directory locks, the user cache directory, and registry packages
//! pinned by version and sha256. No PJRT, no graphs.

pub mod atomic;
pub mod error;
pub mod fetch;
pub mod lock;

pub use atomic::{write_atomic, write_json_atomic};
pub use error::{Error, Result};
pub use lock::DirLock;
