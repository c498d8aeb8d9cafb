//! The data pipeline's stages: each reads and writes files (WARC, documents, token shards).

pub mod crawl;
pub mod warc;
