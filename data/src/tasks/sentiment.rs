//! Rotten Tomatoes snippets with human sentiment scores (Hutto & Gilbert, ICWSM 2014, shipped
//! in the vaderSentiment sdist as `additional_resources/hutto_ICWSM_2014.tar.gz`):
//! `movieReviewSnippets_GroundTruth.txt`, tab-separated `id, score (-4..4), text`, 10,605 lines.
//!
//! Labels: a score in the neutral band `(-0.5, 0.5)` is neutral. `Binary` drops those
//! (0: negative, 1: positive); `ThreeWay` keeps them (0: negative, 1: neutral, 2: positive).
//! Split: fixed by id, `id % 10 == 0` is the test split (10%), the rest train; no seed.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Labeled, Split};

pub const FILE: &str = "movieReviewSnippets_GroundTruth.txt";
/// Scores with |score| below this are neutral.
pub const NEUTRAL_BAND: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Labels {
    Binary,
    ThreeWay,
}

impl Labels {
    pub fn classes(self) -> usize {
        match self {
            Labels::Binary => 2,
            Labels::ThreeWay => 3,
        }
    }

    pub fn names(self) -> &'static [&'static str] {
        match self {
            Labels::Binary => &["negative", "positive"],
            Labels::ThreeWay => &["negative", "neutral", "positive"],
        }
    }

    /// The class of a score, `None` when this labelling drops it.
    pub fn of(self, score: f64) -> Option<i32> {
        let neutral = score.abs() < NEUTRAL_BAND;
        match (self, neutral) {
            (Labels::Binary, true) => None,
            (Labels::Binary, false) => Some((score > 0.0) as i32),
            (Labels::ThreeWay, true) => Some(1),
            (Labels::ThreeWay, false) => Some(if score > 0.0 { 2 } else { 0 }),
        }
    }
}

/// One snippet.
#[derive(Debug, Clone, PartialEq)]
pub struct Snippet {
    pub id: u64,
    pub score: f64,
    pub text: String,
}

/// Parses the ground-truth file; a bad line is an error naming its number.
pub fn parse(text: &str) -> Result<Vec<Snippet>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (Some(id), Some(score), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("{FILE} line {}: expected `id<TAB>score<TAB>text`", n + 1);
        };
        let id = id
            .trim()
            .parse()
            .with_context(|| format!("{FILE} line {}: id `{id}`", n + 1))?;
        let score: f64 = score
            .trim()
            .parse()
            .with_context(|| format!("{FILE} line {}: score `{score}`", n + 1))?;
        out.push(Snippet {
            id,
            score,
            text: text.trim().to_string(),
        });
    }
    Ok(out)
}

/// The examples of `split` under `labels`.
pub fn examples(snippets: &[Snippet], labels: Labels, split: Split) -> Vec<Labeled> {
    snippets
        .iter()
        .filter(|s| (s.id % 10 == 0) == (split == Split::Test))
        .filter_map(|s| {
            labels.of(s.score).map(|label| Labeled {
                text: s.text.clone(),
                second: None,
                label,
            })
        })
        .collect()
}

/// Fetches (first use) the package and returns the snippets; the inner archive is unpacked
/// once into the package directory.
pub fn load() -> Result<Vec<Snippet>> {
    let dir = crate::datasets::fetch("rotten-tomatoes")?;
    let path = ground_truth(&dir)?;
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text)
}

fn ground_truth(pkg: &Path) -> Result<PathBuf> {
    let out = pkg.join(FILE);
    if out.is_file() {
        return Ok(out);
    }
    let inner = pkg.join("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz");
    let f = std::fs::File::open(&inner).with_context(|| {
        format!(
            "opening {} (remove {} to fetch it again)",
            inner.display(),
            pkg.display()
        )
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for entry in tar.entries()? {
        let mut e = entry?;
        if e.path()?.file_name().and_then(|n| n.to_str()) == Some(FILE) {
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes)?;
            files::write_atomic(&out, &bytes)?;
            return Ok(out);
        }
    }
    bail!("{} holds no {FILE}", inner.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_splits_by_id() {
        let text = "1\t2.27\tThe Rock is destined.\r\n10\t-0.6\tToo tepid\r\n20\t0.1\tMeh.\r\n30\t-3.5\tAwful";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[1].score, -0.6);
        assert_eq!(s[0].text, "The Rock is destined.");
        let train = examples(&s, Labels::Binary, Split::Train);
        assert_eq!(train.len(), 1);
        assert_eq!(train[0].label, 1);
        // Test: ids 10, 20, 30; the neutral 0.1 is dropped in binary, kept as 1 in 3-way.
        let labels = |l| {
            examples(&s, l, Split::Test)
                .iter()
                .map(|e| e.label)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(Labels::Binary), vec![0, 0]);
        assert_eq!(labels(Labels::ThreeWay), vec![0, 1, 0]);
        assert!(parse("1\tnot-a-number\tx")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
    }
}
