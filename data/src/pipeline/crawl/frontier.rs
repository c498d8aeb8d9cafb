//! The crawl frontier: URLs to fetch (breadth first), the seen-set, and its state file.
//!
//! The state is written atomically (`files::write_atomic`) after the WARC records of the
//! pages it counts as done are flushed, so a crawl killed at any moment resumes from the last
//! state without losing a page; pages fetched after that state are fetched again (at least
//! once, into a new WARC file).

use std::collections::{HashSet, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One URL waiting to be fetched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Item {
    pub url: String,
    pub depth: u32,
    /// Failed tries so far (429/5xx/timeouts).
    pub attempts: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Frontier {
    /// Waiting, in the order found.
    pub queue: VecDeque<Item>,
    /// Every URL ever queued (normalised): a URL enters the queue once.
    pub seen: HashSet<String>,
    /// Pages fetched and written so far (over all sessions).
    pub fetched: u64,
    /// WARC files written so far: the next session writes file number `warc_files`.
    pub warc_files: u32,
}

impl Frontier {
    /// Queues `url` unless it was seen before; returns whether it was new.
    pub fn push(&mut self, url: String, depth: u32) -> bool {
        if !self.seen.insert(url.clone()) {
            return false;
        }
        self.queue.push_back(Item {
            url,
            depth,
            attempts: 0,
        });
        true
    }

    /// Reads a state file; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> anyhow::Result<Option<Frontier>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => anyhow::bail!("reading crawl state {}: {e}", path.display()),
        };
        let f = serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "crawl state {} is not valid ({e}); delete it to start the crawl afresh",
                path.display()
            )
        })?;
        Ok(Some(f))
    }

    /// Writes the state atomically; `in_flight` items go back to the front of the queue.
    pub fn save(&self, path: &Path, in_flight: &[Item]) -> anyhow::Result<()> {
        #[derive(Serialize)]
        struct View<'a> {
            queue: Vec<&'a Item>,
            seen: Vec<&'a String>,
            fetched: u64,
            warc_files: u32,
        }
        let mut seen: Vec<&String> = self.seen.iter().collect();
        seen.sort();
        let view = View {
            queue: in_flight.iter().chain(self.queue.iter()).collect(),
            seen,
            fetched: self.fetched,
            warc_files: self.warc_files,
        };
        let bytes = serde_json::to_vec(&view)?;
        files::write_atomic(path, &bytes)
            .map_err(|e| anyhow::anyhow!("writing crawl state {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_set_and_state_round_trip() {
        let mut f = Frontier::default();
        assert!(f.push("http://a/".into(), 0));
        assert!(!f.push("http://a/".into(), 3));
        assert!(f.push("http://a/b".into(), 1));
        let first = f.queue.pop_front().unwrap();
        f.fetched = 7;
        let dir = std::env::temp_dir().join(format!("rxla-frontier-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.json");
        f.save(&p, std::slice::from_ref(&first)).unwrap();
        let g = Frontier::load(&p).unwrap().unwrap();
        assert_eq!(g.queue.len(), 2);
        assert_eq!(g.queue[0], first, "in-flight items go first");
        assert_eq!(g.seen, f.seen);
        assert_eq!(g.fetched, 7);
        std::fs::write(&p, b"{not json").unwrap();
        let err = Frontier::load(&p).unwrap_err().to_string();
        assert!(err.contains("delete it"), "{err}");
        assert!(Frontier::load(&dir.join("none.json")).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
