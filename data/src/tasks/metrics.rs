//! The metrics each task's community reports: accuracy and macro-F1 for classification,
//! SQuAD v1.1's exact match and F1 (its official `evaluate-v1.1.py`, ported).

/// SQuAD's answer normalisation: lower-case, drop ASCII punctuation, drop the articles
/// `a`/`an`/`the` (whole words, as Python's `\b(a|an|the)\b`), collapse whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // Words are runs of `\w` (Unicode alphanumerics and `_`), as in Python's `re`.
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut no_articles = String::with_capacity(no_punc.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in no_punc.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut no_articles);
            no_articles.push(c);
        }
    }
    flush(&mut word, &mut no_articles);
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// 1 when the normalised strings are equal.
pub fn exact_match(prediction: &str, gold: &str) -> f64 {
    (normalize_answer(prediction) == normalize_answer(gold)) as u8 as f64
}

/// Token-level F1 of the normalised strings (bag of tokens, counted with multiplicity).
pub fn f1(prediction: &str, gold: &str) -> f64 {
    let p = normalize_answer(prediction);
    let g = normalize_answer(gold);
    let p: Vec<&str> = p.split_whitespace().collect();
    let g: Vec<&str> = g.split_whitespace().collect();
    let mut counts = std::collections::HashMap::new();
    for t in &g {
        *counts.entry(*t).or_insert(0usize) += 1;
    }
    let mut same = 0usize;
    for t in &p {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// The best score over the gold answers (0 with none).
pub fn max_over_golds(metric: fn(&str, &str) -> f64, prediction: &str, golds: &[String]) -> f64 {
    golds
        .iter()
        .map(|g| metric(prediction, g))
        .fold(0.0, f64::max)
}

/// SQuAD's corpus EM and F1, in percent: `pairs` are (prediction, gold answers).
pub fn squad_em_f1(pairs: &[(String, Vec<String>)]) -> (f64, f64) {
    if pairs.is_empty() {
        return (0.0, 0.0);
    }
    let n = pairs.len() as f64;
    let em: f64 = pairs
        .iter()
        .map(|(p, g)| max_over_golds(exact_match, p, g))
        .sum();
    let f: f64 = pairs.iter().map(|(p, g)| max_over_golds(f1, p, g)).sum();
    (100.0 * em / n, 100.0 * f / n)
}

/// Fraction of predictions equal to their label.
pub fn accuracy(predictions: &[i32], labels: &[i32]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let hits = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    hits as f64 / labels.len() as f64
}

/// Macro-F1 from per-class counts: true positives, predicted and true counts. Averaged over
/// the classes that occur as a prediction or a label (as scikit-learn's `f1_score`).
pub fn macro_f1_from_counts(tp: &[f64], predicted: &[f64], actual: &[f64]) -> f64 {
    let mut sum = 0.0;
    let mut n = 0usize;
    for c in 0..tp.len() {
        let den = predicted[c] + actual[c];
        if den > 0.0 {
            sum += 2.0 * tp[c] / den;
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// Macro-F1 of predictions against labels over `classes` classes.
pub fn macro_f1(predictions: &[i32], labels: &[i32], classes: usize) -> f64 {
    let (mut tp, mut pr, mut ac) = (vec![0.0; classes], vec![0.0; classes], vec![0.0; classes]);
    for (&p, &l) in predictions.iter().zip(labels) {
        if let Some(x) = pr.get_mut(p as usize) {
            *x += 1.0;
        }
        if let Some(x) = ac.get_mut(l as usize) {
            *x += 1.0;
        }
        if p == l {
            if let Some(x) = tp.get_mut(p as usize) {
                *x += 1.0;
            }
        }
    }
    macro_f1_from_counts(&tp, &pr, &ac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_edge_cases() {
        assert_eq!(normalize_answer("The  Eiffel\tTower!"), "eiffel tower");
        // Articles only as whole words: "theatre", "another", "Anna" stay.
        assert_eq!(
            normalize_answer("the theatre, another a Anna"),
            "theatre another anna"
        );
        // Punctuation goes first, so "the." and "(an)" are articles once it is gone.
        assert_eq!(normalize_answer("(an) apple, the."), "apple");
        // Hyphens are punctuation and are deleted, not spaced: "well-known" is one word.
        assert_eq!(normalize_answer("well-known"), "wellknown");
        // Non-ASCII punctuation is not stripped (string.punctuation is ASCII), but it ends
        // a word, as `\b` does: the en dash separates the article.
        assert_eq!(normalize_answer("the–end"), "–end");
        assert_eq!(normalize_answer("Café A"), "café");
        assert_eq!(normalize_answer("  "), "");
    }

    #[test]
    fn exact_match_and_f1_on_hand_checked_examples() {
        assert_eq!(exact_match("The Denver Broncos", "Denver Broncos"), 1.0);
        assert_eq!(exact_match("Denver Broncos.", "denver broncos"), 1.0);
        assert_eq!(exact_match("Broncos", "Denver Broncos"), 0.0);
        // pred {denver, broncos, won}, gold {denver, broncos}: p = 2/3, r = 1, f1 = 0.8.
        assert!((f1("Denver Broncos won", "the Denver Broncos") - 0.8).abs() < 1e-12);
        // Multiplicity: pred [x, x, y], gold [x, y, y]: common x1 + y1 = 2, p = r = 2/3.
        assert!((f1("x x y", "x y y") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f1("", "Denver"), 0.0);
        assert_eq!(f1("the", "a"), 0.0); // both normalise to nothing: v1.1 scores 0
        let golds = vec!["Santa Clara".to_string(), "Levi's Stadium".to_string()];
        assert_eq!(max_over_golds(exact_match, "levis stadium", &golds), 1.0);
        let (em, f) = squad_em_f1(&[
            ("Levi's Stadium".into(), golds.clone()),
            ("Santa Clara, California".into(), golds),
        ]);
        assert!((em - 50.0).abs() < 1e-9);
        // second: pred [santa, clara, california] vs [santa, clara]: p 2/3, r 1, f1 0.8.
        assert!((f - 90.0).abs() < 1e-9, "{f}");
    }

    #[test]
    fn accuracy_and_macro_f1() {
        let pred = [0, 0, 1, 1, 2, 0];
        let gold = [0, 1, 1, 1, 2, 2];
        assert!((accuracy(&pred, &gold) - 4.0 / 6.0).abs() < 1e-12);
        // class 0: tp 1, pred 3, true 1 -> 2/4; class 1: tp 2, pred 2, true 3 -> 4/5;
        // class 2: tp 1, pred 1, true 2 -> 2/3.
        let want = (0.5 + 0.8 + 2.0 / 3.0) / 3.0;
        assert!((macro_f1(&pred, &gold, 3) - want).abs() < 1e-12);
        // A class never seen nor predicted does not count.
        assert!((macro_f1(&[0, 1], &[0, 1], 3) - 1.0).abs() < 1e-12);
    }
}
