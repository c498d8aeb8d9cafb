//! Errors of the file layer: each names the file or package and what went wrong.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fetch {package}: {reason}")]
    Fetch { package: String, reason: String },
    #[error("{dir} is in use by another process (pid {}): wait for it to finish or stop it", pid.map_or("unknown".to_string(), |p| p.to_string()))]
    Locked { dir: String, pid: Option<u32> },
    #[error("encoding JSON for {path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
