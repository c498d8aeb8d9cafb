//! `rxla predict`: a fine-tuned run's prediction for a text (`--text`), a sentence pair
//! (`--pair A B`) or a question over a context (`--question Q --context C`), one JSON line.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::finetune::Predictor;
use data::tasks::squad::Question;
use data::tasks::Labeled;

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// The fine-tuning run's output directory.
    #[arg(long)]
    pub run: PathBuf,
    /// A text to classify (sentiment).
    #[arg(long)]
    pub text: Option<String>,
    /// A sentence pair to classify (entailment): premise, then hypothesis.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub pair: Option<Vec<String>>,
    /// A question (with --context).
    #[arg(long)]
    pub question: Option<String>,
    /// The passage the answer is taken from (with --question).
    #[arg(long)]
    pub context: Option<String>,
}

/// What to predict, checked before anything is loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Text(String),
    Pair(String, String),
    Span { question: String, context: String },
}

impl PredictArgs {
    pub fn query(&self) -> Result<Query> {
        let nonempty = |what: &str, s: &str| -> Result<String> {
            if s.trim().is_empty() {
                bail!("{what} is empty: give the text to predict on");
            }
            Ok(s.to_string())
        };
        match (&self.text, &self.pair, &self.question, &self.context) {
            (Some(t), None, None, None) => Ok(Query::Text(nonempty("--text", t)?)),
            (None, Some(p), None, None) => Ok(Query::Pair(
                nonempty("--pair's first sentence", &p[0])?,
                nonempty("--pair's second sentence", &p[1])?,
            )),
            (None, None, Some(q), Some(c)) => Ok(Query::Span {
                question: nonempty("--question", q)?,
                context: nonempty("--context", c)?,
            }),
            (None, None, Some(_), None) => bail!("--question needs --context (the passage)"),
            (None, None, None, Some(_)) => bail!("--context needs --question"),
            (None, None, None, None) => {
                bail!("nothing to predict: give --text T, --pair A B, or --question Q --context C")
            }
            _ => bail!("give one of --text, --pair, or --question with --context"),
        }
    }
}

/// Runs the prediction with a client from `client` (made only once the arguments check out).
pub fn predict_cmd(
    args: &PredictArgs,
    client: impl FnOnce() -> Result<runtime::Client>,
) -> Result<()> {
    let query = args.query()?;
    if !args.run.is_dir() {
        bail!(
            "no run directory {}: fine-tune one first, e.g. `rxla train --config \
             configs/finetune-sentiment.toml --out {}`",
            args.run.display(),
            args.run.display()
        );
    }
    let client = client()?;
    let p = Predictor::from_run(&client, &args.run, 1)?;
    let out = match query {
        Query::Span { question, context } => {
            let q = Question {
                id: "cli".into(),
                context,
                question,
                answers: Vec::new(),
            };
            let answer = p.answer(std::slice::from_ref(&q))?.remove(0);
            serde_json::json!({"question": q.question, "answer": answer})
        }
        Query::Text(_) | Query::Pair(..) => {
            let (text, second) = match query {
                Query::Text(t) => (t, None),
                Query::Pair(a, b) => (a, Some(b)),
                Query::Span { .. } => unreachable!("handled above"),
            };
            if p.cfg.data.dataset == "snli" && second.is_none() {
                bail!("this run classifies sentence pairs (snli): use --pair PREMISE HYPOTHESIS");
            }
            if p.cfg.data.dataset != "snli" && second.is_some() {
                bail!("this run classifies single texts: use --text");
            }
            let ex = Labeled {
                text: text.clone(),
                second: second.clone(),
                label: 0,
            };
            let probs = p.classify(&[ex])?.remove(0);
            let names = p.class_names();
            let best = probs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            let by_name: serde_json::Map<String, serde_json::Value> = names
                .iter()
                .zip(&probs)
                .map(|(n, &v)| (n.clone(), (v as f64).into()))
                .collect();
            serde_json::json!({
                "text": text, "second": second,
                "label": names.get(best).cloned().unwrap_or_else(|| best.to_string()),
                "probabilities": by_name,
            })
        }
    };
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: PredictArgs,
    }

    fn query(args: &[&str]) -> Result<Query> {
        let mut v = vec!["t", "--run", "runs/x"];
        v.extend(args);
        T::try_parse_from(v).unwrap().a.query()
    }

    #[test]
    fn arguments_are_checked_before_anything_loads() {
        assert_eq!(
            query(&["--text", "great"]).unwrap(),
            Query::Text("great".into())
        );
        assert_eq!(
            query(&["--pair", "a b", "c"]).unwrap(),
            Query::Pair("a b".into(), "c".into())
        );
        let err = |a: &[&str]| query(a).unwrap_err().to_string();
        assert!(err(&["--text", " "]).contains("--text is empty"));
        assert!(err(&["--question", "who?"]).contains("needs --context"));
        assert!(err(&[]).contains("nothing to predict"));
        assert!(err(&["--text", "a", "--question", "q", "--context", "c"]).contains("one of"));
    }

    #[test]
    fn unknown_run_is_a_clear_error() {
        let a = T::try_parse_from(["t", "--run", "/nonexistent/run", "--text", "fine"])
            .unwrap()
            .a;
        let e = predict_cmd(&a, || bail!("no client needed"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no run directory /nonexistent/run"), "{e}");
    }
}
