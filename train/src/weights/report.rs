//! What a load did, by name: loaded, missing, mis-shaped, unexpected, dropped.

use std::fmt;
use std::path::PathBuf;

use crate::tensor::Dtype;

/// A source tensor that fills no model tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Unexpected {
    pub source: String,
    /// The model names it mapped to, none of which the model has.
    pub mapped_to: Vec<String>,
}

/// A model tensor whose source does not fit.
#[derive(Debug, Clone, PartialEq)]
pub struct MisShaped {
    pub target: String,
    pub want: Vec<i64>,
    pub source: String,
    /// The source's dims as stored.
    pub got: Vec<i64>,
    /// What the transforms made of it, or which one failed (empty: the stored dims).
    pub why: String,
}

/// What a load did, by name. Every model tensor is loaded, missing or mis-shaped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    pub sources: Vec<PathBuf>,
    /// Model tensors filled from a source, in model order.
    pub loaded: Vec<String>,
    /// Model tensors no source maps to.
    pub missing: Vec<String>,
    pub mis_shaped: Vec<MisShaped>,
    /// Source tensors that fill nothing (not loaded; not an error).
    pub unexpected: Vec<Unexpected>,
    /// Source tensors a drop pattern skipped.
    pub dropped: Vec<String>,
    /// Model tensors widened exactly on the way (bf16 -> f32): (name, from, to).
    pub widened: Vec<(String, Dtype, Dtype)>,
    /// Missing and mis-shaped tensors the options allowed: they keep their initial values.
    pub left_at_init: Vec<String>,
}

/// The first few names, then how many more.
pub(super) fn list(names: impl ExactSizeIterator<Item = String>) -> String {
    const SHOWN: usize = 10;
    let n = names.len();
    let mut s: Vec<String> = names.take(SHOWN).collect();
    if n > SHOWN {
        s.push(format!("and {} more", n - SHOWN));
    }
    s.join(", ")
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.loaded.len() + self.missing.len() + self.mis_shaped.len();
        let files: Vec<String> = self
            .sources
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        write!(
            f,
            "loaded {} of {total} model tensors from {}",
            self.loaded.len(),
            files.join(", ")
        )?;
        if !self.widened.is_empty() {
            let mut kinds: Vec<String> = self
                .widened
                .iter()
                .map(|(_, a, b)| format!("{a} -> {b}"))
                .collect();
            kinds.dedup();
            write!(
                f,
                " ({} widened exactly: {})",
                self.widened.len(),
                kinds.join(", ")
            )?;
        }
        let at_init = |name: &str| {
            if self.left_at_init.iter().any(|n| n == name) {
                " (left at init)"
            } else {
                ""
            }
        };
        if !self.missing.is_empty() {
            let names = self.missing.iter().map(|n| format!("`{n}`{}", at_init(n)));
            write!(f, "\n  missing ({}): {}", self.missing.len(), list(names))?;
        }
        if !self.mis_shaped.is_empty() {
            let items = self.mis_shaped.iter().map(|m| {
                let and = if m.why.is_empty() { "" } else { " and " };
                format!(
                    "`{}` needs {:?} but `{}` is {:?}{and}{}{}",
                    m.target,
                    m.want,
                    m.source,
                    m.got,
                    m.why,
                    at_init(&m.target)
                )
            });
            write!(
                f,
                "\n  mis-shaped ({}): {}",
                self.mis_shaped.len(),
                list(items)
            )?;
        }
        if !self.unexpected.is_empty() {
            let items = self.unexpected.iter().map(|u| {
                if u.mapped_to.len() == 1 && u.mapped_to[0] == u.source {
                    format!("`{}`", u.source)
                } else {
                    let to: Vec<String> = u.mapped_to.iter().map(|t| format!("`{t}`")).collect();
                    format!("`{}` (as {})", u.source, to.join(", "))
                }
            });
            write!(
                f,
                "\n  unexpected, not loaded ({}): {}",
                self.unexpected.len(),
                list(items)
            )?;
        }
        if !self.dropped.is_empty() {
            let names = self.dropped.iter().map(|n| format!("`{n}`"));
            write!(
                f,
                "\n  dropped by the map ({}): {}",
                self.dropped.len(),
                list(names)
            )?;
        }
        Ok(())
    }
}
