//! Quality filters after Gopher (MassiveText), C4 and RefinedWeb, language identification,
//! and PII masking. A document is kept or rejected by the first rule it fails; every rule's
//! rejects are counted under its name.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use anyhow::{Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::docs::{read_docs, Doc, DocWriter};
use super::shard::{Report, Task};

/// Thresholds (config `[filter]`); defaults are the published ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    pub min_words: usize,
    pub max_words: usize,
    pub min_mean_word_len: f64,
    pub max_mean_word_len: f64,
    /// `#` and `…` per word.
    pub max_symbol_ratio: f64,
    /// Digits per non-space character.
    pub max_digit_ratio: f64,
    pub max_bullet_lines: f64,
    pub max_ellipsis_lines: f64,
    /// Share of words that hold a letter.
    pub min_alpha_words: f64,
    /// Share of lines that end in terminal punctuation (RefinedWeb/FineWeb: 0.12).
    pub min_punct_lines: f64,
    /// Stop words (from the language's jusText list) a document must hold.
    pub min_stop_words: usize,
    pub max_dup_line_frac: f64,
    pub max_dup_line_char_frac: f64,
    /// Gopher's top n-gram character fractions for n = 2, 3, 4.
    pub max_top_ngram: [f64; 3],
    /// Gopher's duplicated n-gram character fractions for n = 5..=10.
    pub max_dup_ngram: [f64; 6],
    /// Bad words (from the `bad-words` package) per word.
    pub max_bad_word_ratio: f64,
    pub reject_lorem_ipsum: bool,
    pub reject_curly_braces: bool,
    /// ISO 639-3 codes to keep (empty: any).
    pub languages: Vec<String>,
    pub min_lang_score: f64,
    pub mask_pii: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            min_words: 50,
            max_words: 100_000,
            min_mean_word_len: 3.0,
            max_mean_word_len: 10.0,
            max_symbol_ratio: 0.1,
            max_digit_ratio: 0.25,
            max_bullet_lines: 0.9,
            max_ellipsis_lines: 0.3,
            min_alpha_words: 0.8,
            min_punct_lines: 0.12,
            min_stop_words: 2,
            max_dup_line_frac: 0.3,
            max_dup_line_char_frac: 0.2,
            max_top_ngram: [0.20, 0.18, 0.16],
            max_dup_ngram: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10],
            max_bad_word_ratio: 0.02,
            reject_lorem_ipsum: true,
            reject_curly_braces: true,
            languages: vec!["eng".into()],
            min_lang_score: 0.5,
            mask_pii: true,
        }
    }
}

/// Word lists the rules need.
#[derive(Debug, Default, Clone)]
pub struct Lists {
    /// Stop words by ISO 639-3 code.
    pub stop_words: HashMap<String, HashSet<String>>,
    pub bad_words: HashSet<String>,
}

impl Lists {
    /// jusText's stop lists and the bad-word list, from their pinned packages.
    pub fn fetch() -> Result<Lists> {
        let dir = super::packages::fetch("stoplists")?;
        let mut stop_words = HashMap::new();
        for lang in whatlang::Lang::all() {
            let p = dir.join(format!("{}.txt", lang.eng_name()));
            if let Ok(text) = std::fs::read_to_string(&p) {
                stop_words.insert(lang.code().to_string(), words_of(&text));
            }
        }
        let bad = super::packages::fetch("bad-words")?;
        let text =
            std::fs::read_to_string(&bad).with_context(|| format!("reading {}", bad.display()))?;
        Ok(Lists {
            stop_words,
            bad_words: words_of(&text),
        })
    }
}

fn words_of(text: &str) -> HashSet<String> {
    text.lines()
        .map(|l| l.trim().to_lowercase())
        .filter(|l| !l.is_empty())
        .collect()
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b").unwrap()
});
static IPV4: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b",
    )
    .unwrap()
});
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)|\b\d{3})[ .-]\d{3}[ .-]\d{4}\b").unwrap()
});

/// Replaces emails, phone numbers and IPv4 addresses; returns the text and the counts.
pub fn mask_pii(text: &str) -> (String, [u64; 3]) {
    let mut n = [0u64; 3];
    let mut s = text.to_string();
    for (k, (re, with)) in [(&*EMAIL, "<email>"), (&*IPV4, "<ip>"), (&*PHONE, "<phone>")]
        .into_iter()
        .enumerate()
    {
        let c = re.find_iter(&s).count() as u64;
        if c > 0 {
            n[k] = c;
            s = re.replace_all(&s, with).into_owned();
        }
    }
    (s, n)
}

/// The first rule `text` fails, or `None` when it passes all of them.
pub fn first_failed_rule(
    text: &str,
    lang: Option<(&str, f64)>,
    c: &FilterConfig,
    l: &Lists,
) -> Option<&'static str> {
    if !c.languages.is_empty() {
        match lang {
            Some((code, score)) if c.languages.iter().any(|x| x == code) => {
                if score < c.min_lang_score {
                    return Some("lang_score");
                }
            }
            _ => return Some("language"),
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = words.len();
    if n < c.min_words {
        return Some("min_words");
    }
    if n > c.max_words {
        return Some("max_words");
    }
    let mean = words.iter().map(|w| w.chars().count()).sum::<usize>() as f64 / n as f64;
    if mean < c.min_mean_word_len || mean > c.max_mean_word_len {
        return Some("mean_word_len");
    }
    let symbols =
        text.matches('#').count() + text.matches('…').count() + text.matches("...").count();
    if symbols as f64 / n as f64 > c.max_symbol_ratio {
        return Some("symbol_ratio");
    }
    let (mut digits, mut chars) = (0usize, 0usize);
    for ch in text.chars().filter(|c| !c.is_whitespace()) {
        chars += 1;
        digits += ch.is_ascii_digit() as usize;
    }
    if digits as f64 / chars.max(1) as f64 > c.max_digit_ratio {
        return Some("digit_ratio");
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let nl = lines.len().max(1) as f64;
    let bullets = lines
        .iter()
        .filter(|l| l.starts_with(['•', '*', '-', '‣', '●', '▪']))
        .count();
    if bullets as f64 / nl > c.max_bullet_lines {
        return Some("bullet_lines");
    }
    let ellipsis = lines
        .iter()
        .filter(|l| l.ends_with("...") || l.ends_with('…'))
        .count();
    if ellipsis as f64 / nl > c.max_ellipsis_lines {
        return Some("ellipsis_lines");
    }
    let alpha = words
        .iter()
        .filter(|w| w.chars().any(char::is_alphabetic))
        .count();
    if (alpha as f64 / n as f64) < c.min_alpha_words {
        return Some("alpha_words");
    }
    let punct = lines
        .iter()
        .filter(|l| l.ends_with(['.', '!', '?', '"', '\'', '”', '’', '。']))
        .count();
    if (punct as f64 / nl) < c.min_punct_lines {
        return Some("punct_lines");
    }
    let lower: Vec<String> = words
        .iter()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    if let Some(stops) = lang.and_then(|(code, _)| l.stop_words.get(code)) {
        if lower.iter().filter(|w| stops.contains(w.as_str())).count() < c.min_stop_words {
            return Some("stop_words");
        }
    }
    if !l.bad_words.is_empty() {
        let bad = lower
            .iter()
            .filter(|w| l.bad_words.contains(w.as_str()))
            .count();
        if bad as f64 / n as f64 > c.max_bad_word_ratio {
            return Some("bad_words");
        }
    }
    if c.reject_lorem_ipsum && text.to_lowercase().contains("lorem ipsum") {
        return Some("lorem_ipsum");
    }
    if c.reject_curly_braces && text.contains(['{', '}']) {
        return Some("curly_braces");
    }
    // Gopher repetition: duplicate lines, then top and duplicated n-grams.
    let mut seen = HashSet::new();
    let (mut dup_lines, mut dup_chars, mut all_chars) = (0usize, 0usize, 0usize);
    for line in &lines {
        all_chars += line.len();
        if !seen.insert(*line) {
            dup_lines += 1;
            dup_chars += line.len();
        }
    }
    if dup_lines as f64 / nl > c.max_dup_line_frac {
        return Some("dup_lines");
    }
    if dup_chars as f64 / all_chars.max(1) as f64 > c.max_dup_line_char_frac {
        return Some("dup_line_chars");
    }
    let total: usize = lower.iter().map(|w| w.len()).sum::<usize>().max(1);
    for (k, gram) in (2..=4).enumerate() {
        if n < gram {
            break;
        }
        let mut counts: HashMap<&[String], usize> = HashMap::new();
        for g in lower.windows(gram) {
            *counts.entry(g).or_default() += 1;
        }
        if let Some((g, &cnt)) = counts.iter().max_by_key(|(g, &cnt)| (cnt, g.to_vec())) {
            let chars: usize = g.iter().map(|w| w.len()).sum();
            if cnt > 1 && (chars * cnt) as f64 / total as f64 > c.max_top_ngram[k] {
                return Some(["top_2gram", "top_3gram", "top_4gram"][k]);
            }
        }
    }
    for (k, gram) in (5..=10).enumerate() {
        if n < gram {
            break;
        }
        let mut first: HashMap<&[String], usize> = HashMap::new();
        let mut covered = vec![false; n];
        for (i, g) in lower.windows(gram).enumerate() {
            if first.insert(g, i).is_some() {
                covered[i..i + gram].iter_mut().for_each(|c| *c = true);
            }
        }
        let dup: usize = (0..n).filter(|&i| covered[i]).map(|i| lower[i].len()).sum();
        if dup as f64 / total as f64 > c.max_dup_ngram[k] {
            return Some(
                [
                    "dup_5gram",
                    "dup_6gram",
                    "dup_7gram",
                    "dup_8gram",
                    "dup_9gram",
                    "dup_10gram",
                ][k],
            );
        }
    }
    None
}

/// The filter stage on one task.
pub fn run(task: &Task, r: &mut Report, c: &FilterConfig, l: &Lists) -> Result<()> {
    let mut w = DocWriter::create(&task.output)?;
    for (k, d) in task
        .source
        .files
        .iter()
        .map(|f| read_docs(f))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !task.keeps(k) {
            continue;
        }
        let mut d: Doc = match d {
            Ok(d) => d,
            Err(_) => {
                r.reject("bad_line");
                continue;
            }
        };
        r.docs_in += 1;
        r.bytes_in += d.text.len() as u64;
        let lang = match (d.metadata.get("lang"), d.metadata.get("lang_score")) {
            (Some(a), Some(b)) => a
                .as_str()
                .map(|a| (a.to_string(), b.as_f64().unwrap_or(0.0))),
            _ => super::extract::language(&d.text),
        };
        if let Some(rule) =
            first_failed_rule(&d.text, lang.as_ref().map(|(a, b)| (a.as_str(), *b)), c, l)
        {
            r.reject(rule);
            continue;
        }
        if c.mask_pii {
            let (t, n) = mask_pii(&d.text);
            d.text = t;
            r.count("pii_email", n[0]);
            r.count("pii_ip", n[1]);
            r.count("pii_phone", n[2]);
        }
        r.docs_out += 1;
        r.bytes_out += d.text.len() as u64;
        w.write(&d)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists() -> Lists {
        let mut l = Lists::default();
        l.stop_words.insert(
            "eng".into(),
            ["the", "of", "and", "to", "a", "in", "is"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        l.bad_words = ["darn"].iter().map(|s| s.to_string()).collect();
        l
    }

    const GOOD: &str = "The river runs through the old town and past the mill, where the \
        miller used to grind wheat for the bakers of the valley. In spring the water rises \
        and floods the lower fields, which is why the farmers plant late. Visitors come to \
        see the bridge, a stone arch built in the fourteenth century by monks who lived in \
        the abbey on the hill above the town. It is still in use today.";

    #[test]
    fn rules_reject_what_they_name() {
        let (c, l) = (FilterConfig::default(), lists());
        let en = Some(("eng", 0.9));
        assert_eq!(first_failed_rule(GOOD, en, &c, &l), None);
        assert_eq!(
            first_failed_rule(GOOD, Some(("deu", 0.9)), &c, &l),
            Some("language")
        );
        assert_eq!(
            first_failed_rule(GOOD, Some(("eng", 0.1)), &c, &l),
            Some("lang_score")
        );
        assert_eq!(
            first_failed_rule("The short one.", en, &c, &l),
            Some("min_words")
        );
        let lorem = format!("{GOOD} Lorem ipsum dolor sit amet.");
        assert_eq!(first_failed_rule(&lorem, en, &c, &l), Some("lorem_ipsum"));
        let code = format!("{GOOD} It says {{ return 1; }} here.");
        assert_eq!(first_failed_rule(&code, en, &c, &l), Some("curly_braces"));
        let digits = format!("{GOOD} {}", "12345 67890 ".repeat(40));
        assert_eq!(first_failed_rule(&digits, en, &c, &l), Some("digit_ratio"));
        let hashes = format!("{GOOD} {}", "#tag ".repeat(20));
        assert_eq!(first_failed_rule(&hashes, en, &c, &l), Some("symbol_ratio"));
        let nopunct = GOOD.replace(". ", "\n").replace('.', "");
        assert_eq!(first_failed_rule(&nopunct, en, &c, &l), Some("punct_lines"));
        let nostop = "Bright colours shine over quiet mountains while eager travellers \
                      wander slowly beyond distant villages near rivers. Lovely green meadows \
                      stretch far beyond old stone walls. ";
        let nostop = format!("{nostop} {nostop} {nostop} {nostop}").replace("  ", " ");
        assert_eq!(first_failed_rule(&nostop, en, &c, &l), Some("stop_words"));
        let bad = format!("{GOOD} {}darn.", "darn ".repeat(5));
        assert_eq!(first_failed_rule(&bad, en, &c, &l), Some("bad_words"));
        let lines = format!(
            "{GOOD}\n{}",
            "Subscribe to the newsletter today.\n".repeat(10)
        );
        assert_eq!(first_failed_rule(&lines, en, &c, &l), Some("dup_lines"));
        let grams = format!("{GOOD} {}end.", "the old mill and the bridge ".repeat(8));
        assert!(
            first_failed_rule(&grams, en, &c, &l).is_some_and(|r| r.contains("gram")),
            "{:?}",
            first_failed_rule(&grams, en, &c, &l)
        );
    }

    #[test]
    fn masks_pii() {
        let (t, n) = mask_pii("Mail jane.doe@example.co.uk or call (555) 123-4567 / +1 555 123 4567; host 192.168.10.254, not 999.1.1.1.");
        assert_eq!(
            t,
            "Mail <email> or call <phone> / <phone>; host <ip>, not 999.1.1.1."
        );
        assert_eq!(n, [1, 1, 2]);
    }
}
