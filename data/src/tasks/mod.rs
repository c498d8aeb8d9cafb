//! Supervised fine-tuning tasks fetched by name: sentence sentiment (`rotten-tomatoes`),
//! entailment (`snli`), extractive question answering (`squad`); their metrics; and the
//! batches a classifier or a span-QA head trains on.

pub mod batches;
pub mod metrics;
pub mod qa_seq2seq;
pub mod sentiment;
pub mod snli;
pub mod squad;

/// Which part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    /// The held-out part the acceptance numbers are measured on.
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One classification example: a text or a text pair and its class.
#[derive(Debug, Clone, PartialEq)]
pub struct Labeled {
    pub text: String,
    pub second: Option<String>,
    pub label: i32,
}
