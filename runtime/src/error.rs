//! Typed runtime errors. A PJRT error keeps the plugin's code and message.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error returned by the plugin through the C API.
    #[error("PJRT {function} failed ({code}): {message}")]
    Pjrt {
        function: &'static str,
        code: ErrorCode,
        message: String,
    },
    #[error("cannot load PJRT plugin {path}: {reason}")]
    PluginLoad { path: PathBuf, reason: String },
    #[error(
        "PJRT plugin {path} has API version {major}.{minor}, but rxla speaks {want_major}.x \
         (built against {want_major}.{want_minor}); {hint}"
    )]
    PluginVersion {
        path: PathBuf,
        major: i32,
        minor: i32,
        want_major: i32,
        want_minor: i32,
        hint: String,
    },
    #[error("PJRT plugin {path} (API {major}.{minor}) lacks function {function}, which rxla calls; {hint}")]
    PluginMissingFunction {
        path: PathBuf,
        function: &'static str,
        major: i32,
        minor: i32,
        hint: String,
    },
    /// Caller-side misuse caught before reaching the plugin (wrong dtype, shape, count...).
    #[error("{0}")]
    InvalidArgument(String),
    #[error("buffer was {0} and can no longer be used")]
    BufferDeleted(&'static str),
    #[error("cannot provision the {backend} PJRT plugin: {reason}")]
    Provision { backend: String, reason: String },
    /// Fetching the plugin's package or another file-layer failure.
    #[error(transparent)]
    Files(#[from] files::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// `PJRT_Error_Code` (absl status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
    Other(i32),
}

impl ErrorCode {
    pub(crate) fn from_raw(code: i32) -> Self {
        use ErrorCode::*;
        match code {
            1 => Cancelled,
            2 => Unknown,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            c => Other(c),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Other(c) => write!(f, "code {c}"),
            c => write!(f, "{}", format!("{c:?}").to_uppercase()),
        }
    }
}
