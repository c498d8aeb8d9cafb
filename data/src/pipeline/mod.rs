//! The data pipeline: crawl → WARC → extract → filter → dedup → tokenize. Each stage reads and
//! writes files (WARC, JSONL.zst documents `{"id", "url", "text", "metadata"}`, token shards), so
//! stages compose and re-run; the document stages run on shard `i` of `n` through [`shard`]'s
//! executor (locally, as N processes, or one task per shard under a cluster scheduler).

pub mod crawl;
pub mod dedup;
pub mod docs;
pub mod extract;
pub mod filter;
pub mod packages;
pub mod shard;
pub mod sources;
pub mod stages;
pub mod tokenize;
pub mod warc;
pub mod wiki;

pub use docs::{read_docs, Doc, DocWriter};
pub use shard::{Report, Shard};
