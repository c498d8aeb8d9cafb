//! Which parameters train, and at what rate: `train.freeze` and `train.lr_multipliers`.
//!
//! A pattern is a regular expression (Rust `regex` syntax) over parameter names, anchored at
//! the start and ending at a `.` or the end of the name: `h[0-3]` matches `h0.attn.q.w` but
//! not `h12.ln1.g`; `wte|wpe|wtt|ln_e` names BERT's embeddings; `h\d+\.attn` every block's
//! attention. Frozen parameters are not differentiated, get no optimizer state, and pass
//! through the train step unchanged (bit for bit). A pattern that matches nothing is an
//! error (a typo would otherwise train everything).

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// Parameter groups of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParamGroups {
    /// Patterns of parameters that do not train.
    #[serde(default)]
    pub freeze: Vec<String>,
    /// `(pattern, multiplier)` of the scheduled learning rate; the first match wins, others
    /// train at 1x. E.g. layer-wise decay: `[["h5", 1.0], ["h4", 0.8], ["h3", 0.64], ..]`.
    #[serde(default)]
    pub lr_multipliers: Vec<(String, f64)>,
    /// When not empty, only parameters matching one of these train (LoRA: the adapters).
    #[serde(default)]
    pub train_only: Vec<String>,
}

/// Per parameter: whether it trains and its learning-rate multiplier.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub trainable: Vec<bool>,
    pub lr_multiplier: Vec<f64>,
}

/// The regex of a pattern, anchored as the module says.
pub fn pattern(p: &str) -> Result<Regex> {
    Regex::new(&format!(r"^(?:{p})(?:\.|$)")).with_context(|| {
        format!("`{p}` is not a valid parameter pattern (a regular expression over names)")
    })
}

impl ParamGroups {
    pub fn is_empty(&self) -> bool {
        self.freeze.is_empty() && self.lr_multipliers.is_empty() && self.train_only.is_empty()
    }

    /// Resolves the patterns against `names` (a model's parameters, in order).
    pub fn resolve(&self, names: &[&str]) -> Result<Resolved> {
        let sample = || {
            let mut s: Vec<&str> = names.iter().take(8).copied().collect();
            if names.len() > 8 {
                s.push("..");
            }
            s.join(", ")
        };
        // A distillation teacher never trains.
        let mut trainable: Vec<bool> = names.iter().map(|n| !is_teacher(n)).collect();
        if !self.train_only.is_empty() {
            let res = self
                .train_only
                .iter()
                .map(|p| pattern(p))
                .collect::<Result<Vec<_>>>()?;
            for (p, re) in self.train_only.iter().zip(&res) {
                if !names.iter().any(|n| re.is_match(n)) {
                    bail!(
                        "config key `train.lora` (its adapters and `modules_to_save`): `{p}` \
                         matches no parameter (names: {})",
                        sample()
                    );
                }
            }
            for (t, n) in trainable.iter_mut().zip(names) {
                *t &= res.iter().any(|re| re.is_match(n));
            }
        }
        for p in &self.freeze {
            let re = pattern(p).context("config key `train.freeze`")?;
            let mut hit = false;
            for (t, n) in trainable.iter_mut().zip(names) {
                if re.is_match(n) {
                    *t = false;
                    hit = true;
                }
            }
            if !hit {
                bail!(
                    "config key `train.freeze`: `{p}` matches no parameter (names: {})",
                    sample()
                );
            }
        }
        let mut lr_multiplier = vec![f64::NAN; names.len()];
        for (p, m) in &self.lr_multipliers {
            if !(m.is_finite() && *m >= 0.0) {
                bail!("config key `train.lr_multipliers`: `{p}` has multiplier {m}; use a number >= 0");
            }
            let re = pattern(p).context("config key `train.lr_multipliers`")?;
            let mut hit = false;
            for (x, n) in lr_multiplier.iter_mut().zip(names) {
                if re.is_match(n) {
                    hit = true;
                    if x.is_nan() {
                        *x = *m;
                    }
                }
            }
            if !hit {
                bail!(
                    "config key `train.lr_multipliers`: `{p}` matches no parameter (names: {})",
                    sample()
                );
            }
        }
        for x in &mut lr_multiplier {
            if x.is_nan() {
                *x = 1.0;
            }
        }
        if !trainable.iter().any(|&t| t) {
            bail!("config key `train.freeze` freezes every parameter: nothing would train");
        }
        Ok(Resolved {
            trainable,
            lr_multiplier,
        })
    }
}

/// The scope of the teacher's parameters in the student's step.
pub const TEACHER: &str = "teacher";

/// Whether parameter `name` is the teacher's (never checkpointed with the student).
pub fn is_teacher(name: &str) -> bool {
    name.strip_prefix(TEACHER)
        .is_some_and(|r| r.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 7] = [
        "wte",
        "ln_e.g",
        "h0.attn.q.w",
        "h1.mlp.fc.w",
        "h12.ln1.g",
        "pooler.w",
        "head.w",
    ];

    #[test]
    fn patterns_match_whole_name_components() {
        let g = ParamGroups {
            freeze: vec!["wte|ln_e".into(), "h[0-1]".into()],
            lr_multipliers: vec![("h1\\d".into(), 0.5), ("h\\d+".into(), 0.8)],
            ..Default::default()
        };
        let r = g.resolve(&NAMES).unwrap();
        assert_eq!(
            r.trainable,
            vec![false, false, false, false, true, true, true]
        );
        // h12 takes the first match (0.5); h0/h1 0.8 (frozen anyway); the rest 1.
        assert_eq!(r.lr_multiplier, vec![1.0, 1.0, 0.8, 0.8, 0.5, 1.0, 1.0]);
    }

    #[test]
    fn mistakes_are_clear_errors() {
        let err = |g: ParamGroups| format!("{:#}", g.resolve(&NAMES).unwrap_err());
        let e = err(ParamGroups {
            freeze: vec!["encoder.layer".into()],
            ..Default::default()
        });
        assert!(
            e.contains("encoder.layer") && e.contains("h0.attn.q.w"),
            "{e}"
        );
        let e = err(ParamGroups {
            freeze: vec!["h[0".into()],
            ..Default::default()
        });
        assert!(e.contains("not a valid parameter pattern"), "{e}");
        let e = err(ParamGroups {
            freeze: vec![".*".into()],
            ..Default::default()
        });
        assert!(e.contains("nothing would train"), "{e}");
        let e = err(ParamGroups {
            lr_multipliers: vec![("head".into(), -1.0)],
            ..Default::default()
        });
        assert!(e.contains("-1"), "{e}");
    }
}
