//! The coordination service's messages: one postcard-encoded frame per message over TCP
//! (length-delimited), each request tagged with an id its response repeats, so one connection
//! carries concurrent calls.

use serde::{Deserialize, Serialize};

use crate::error::Failure;

/// Frames larger than this are refused (a PJRT topology or NCCL id is a few KB).
pub const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// First message of a connection: who is calling.
    Hello {
        process: u32,
        num_processes: u32,
    },
    Put {
        key: String,
        value: Vec<u8>,
    },
    /// Waits up to `timeout_ms` for the key.
    Get {
        key: String,
        timeout_ms: u64,
    },
    /// Answers at once: the value or `NotFound`.
    TryGet {
        key: String,
    },
    /// Waits until every process reached barrier `name`, or `timeout_ms`.
    Barrier {
        name: String,
        timeout_ms: u64,
    },
    /// Liveness, with the last step the process reached (`None` before its first step).
    Heartbeat {
        step: Option<u64>,
    },
    /// The process ends normally: its closed connection is then no failure.
    Goodbye,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Value(Vec<u8>),
    NotFound,
    /// A blocking call ran out of time; the text says what was waited for.
    Timeout(String),
    /// A process failed: every call after that answers this, so nobody waits on a dead peer.
    Failed(Failure),
    /// A bad request (e.g. a process id out of range).
    Refused(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frame<T> {
    pub id: u64,
    pub body: T,
}

pub fn encode<T: Serialize>(frame: &Frame<T>) -> Result<Vec<u8>, String> {
    postcard::to_stdvec(frame).map_err(|e| e.to_string())
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<Frame<T>, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

pub fn codec() -> tokio_util::codec::LengthDelimitedCodec {
    tokio_util::codec::LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}
