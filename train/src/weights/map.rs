//! Name maps: which model tensor(s) a file's tensor fills, by name patterns.

use anyhow::{anyhow, bail, Result};

use super::transform::Transform;

/// A tensor-name pattern: literal text, `{x}` for one dot-free segment (a capture targets
/// reuse: `h.{i}.mlp.c_fc.weight` -> `h{i}.mlp.fc.w`), `*` for anything (dots included).
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Capture(String),
    Any,
}

impl Pattern {
    pub(super) fn parse(text: &str) -> Result<Pattern> {
        let bad = |why: &str| anyhow!("name pattern `{text}`: {why}");
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let cut = rest.find(['{', '}', '*']).unwrap_or(rest.len());
            if cut > 0 {
                parts.push(Part::Lit(rest[..cut].to_string()));
            }
            rest = &rest[cut..];
            if let Some(r) = rest.strip_prefix('*') {
                parts.push(Part::Any);
                rest = r;
            } else if rest.starts_with('}') {
                return Err(bad("`}` without `{`"));
            } else if let Some(r) = rest.strip_prefix('{') {
                let end = r.find('}').ok_or_else(|| bad("`{` without `}`"))?;
                let name = &r[..end];
                if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(bad("a capture is `{name}` with a non-empty word name"));
                }
                if parts.contains(&Part::Capture(name.to_string())) {
                    return Err(bad(&format!("`{{{name}}}` appears twice")));
                }
                parts.push(Part::Capture(name.to_string()));
                rest = &r[end + 1..];
            }
        }
        Ok(Pattern {
            text: text.to_string(),
            parts,
        })
    }

    /// The captures if `name` matches.
    pub(super) fn matches(&self, name: &str) -> Option<Vec<(String, String)>> {
        let mut caps = Vec::new();
        match_parts(&self.parts, name, &mut caps).then_some(caps)
    }

    /// This pattern as a target name, its captures filled from `caps` (of `source`).
    fn fill(&self, caps: &[(String, String)], source: &Pattern) -> Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Capture(n) => {
                    let v = caps.iter().find(|(k, _)| k == n).ok_or_else(|| {
                        anyhow!(
                            "target `{}` uses `{{{n}}}`, which source pattern `{}` does not \
                             capture",
                            self.text,
                            source.text
                        )
                    })?;
                    out.push_str(&v.1);
                }
                Part::Any => bail!(
                    "target `{}`: `*` matches sources only; name a capture `{{x}}` instead",
                    self.text
                ),
            }
        }
        Ok(out)
    }
}

fn match_parts(parts: &[Part], s: &str, caps: &mut Vec<(String, String)>) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return s.is_empty();
    };
    match first {
        Part::Lit(l) => s
            .strip_prefix(l.as_str())
            .is_some_and(|r| match_parts(rest, r, caps)),
        Part::Capture(n) => {
            let max = s.find('.').unwrap_or(s.len());
            for end in (1..=max).filter(|&e| s.is_char_boundary(e)) {
                caps.push((n.clone(), s[..end].to_string()));
                if match_parts(rest, &s[end..], caps) {
                    return true;
                }
                caps.pop();
            }
            false
        }
        Part::Any => (0..=s.len())
            .filter(|&e| s.is_char_boundary(e))
            .any(|e| match_parts(rest, &s[e..], caps)),
    }
}

/// Parsed patterns; a name matches the set if it matches any.
pub(super) fn patterns(texts: &[String]) -> Result<Vec<Pattern>> {
    texts.iter().map(|t| Pattern::parse(t)).collect()
}

pub(super) fn any_match(patterns: &[Pattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name).is_some())
}

/// Source tensors matching a pattern fill one target, or one target per piece of a split.
#[derive(Debug, Clone)]
pub struct Rule {
    source: String,
    targets: Vec<String>,
    transforms: Vec<Transform>,
}

impl Rule {
    /// Sources matching `source` fill `target` (captures substituted).
    pub fn new(source: &str, target: &str) -> Rule {
        Rule::parts(source, &[target])
    }

    /// Sources matching `source` fill `targets`, one per piece of a [`Transform::Split`].
    pub fn parts(source: &str, targets: &[&str]) -> Rule {
        Rule {
            source: source.to_string(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            transforms: Vec::new(),
        }
    }

    /// Appends a transform.
    pub fn then(mut self, t: Transform) -> Rule {
        self.transforms.push(t);
        self
    }

    /// The rule's shape: one target per piece, one Split at most.
    fn check(&self) -> Result<()> {
        let splits: Vec<usize> = self
            .transforms
            .iter()
            .filter_map(|t| match t {
                Transform::Split { parts, .. } => Some(*parts),
                _ => None,
            })
            .collect();
        let pieces = splits.first().copied().unwrap_or(1);
        if splits.len() > 1 || pieces != self.targets.len() {
            bail!(
                "rule for `{}`: {} target(s) need {} (one piece per target)",
                self.source,
                self.targets.len(),
                match self.targets.len() {
                    1 => "no Split".to_string(),
                    n => format!("one Split into {n} parts"),
                }
            );
        }
        let before_split = self
            .transforms
            .iter()
            .take_while(|t| !matches!(t, Transform::Split { .. }));
        if self.targets.len() > 1
            && before_split
                .into_iter()
                .any(|t| *t == Transform::ReshapeToTarget)
        {
            bail!(
                "rule for `{}`: ReshapeToTarget before the Split has no single target; use \
                 Reshape(dims)",
                self.source
            );
        }
        Ok(())
    }
}

/// How a file's tensor names become a model's: rules tried in order (the first whose
/// source pattern matches applies), names no rule matches load as themselves, and `drop`
/// patterns name source tensors that are not weights (e.g. GPT-2's attention-mask buffers).
#[derive(Debug, Clone, Default)]
pub struct WeightMap {
    rules: Vec<Rule>,
    drop: Vec<String>,
}

impl WeightMap {
    /// No rules: every tensor loads under its own name (our own checkpoints).
    pub fn new() -> WeightMap {
        WeightMap::default()
    }

    pub fn rule(mut self, r: Rule) -> WeightMap {
        self.rules.push(r);
        self
    }

    /// A plain rename rule.
    pub fn rename(self, source: &str, target: &str) -> WeightMap {
        self.rule(Rule::new(source, target))
    }

    /// Source tensors matching `pattern` are skipped (reported as dropped, not unexpected).
    pub fn drop(mut self, pattern: &str) -> WeightMap {
        self.drop.push(pattern.to_string());
        self
    }

    /// The map with its patterns parsed and its rules checked.
    pub(super) fn compile(&self) -> Result<CompiledMap<'_>> {
        let rules = self
            .rules
            .iter()
            .map(|r| {
                r.check()?;
                let targets = r.targets.iter().map(|t| Pattern::parse(t));
                Ok((
                    Pattern::parse(&r.source)?,
                    targets.collect::<Result<_>>()?,
                    r,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(CompiledMap {
            rules,
            drop: patterns(&self.drop)?,
        })
    }
}

pub(super) struct CompiledMap<'a> {
    rules: Vec<(Pattern, Vec<Pattern>, &'a Rule)>,
    drop: Vec<Pattern>,
}

/// Where a source tensor goes.
pub(super) enum Route {
    Dropped,
    /// The rule that matched (`None`: none, so the name loads as itself) and the model
    /// name of each piece.
    To(Option<usize>, Vec<String>),
}

impl CompiledMap<'_> {
    pub(super) fn route(&self, name: &str) -> Result<Route> {
        if any_match(&self.drop, name) {
            return Ok(Route::Dropped);
        }
        for (ri, (src, targets, _)) in self.rules.iter().enumerate() {
            if let Some(caps) = src.matches(name) {
                let names = targets.iter().map(|t| t.fill(&caps, src));
                return Ok(Route::To(Some(ri), names.collect::<Result<_>>()?));
            }
        }
        Ok(Route::To(None, vec![name.to_string()]))
    }

    pub(super) fn transforms(&self, rule: Option<usize>) -> &[Transform] {
        rule.map_or(&[], |ri| &self.rules[ri].2.transforms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, name: &str) -> Option<Vec<(String, String)>> {
        Pattern::parse(p).unwrap().matches(name)
    }

    #[test]
    fn patterns_match_capture_and_fill() {
        let c = caps("h.{i}.attn.c_attn.weight", "h.11.attn.c_attn.weight").unwrap();
        assert_eq!(c, vec![("i".to_string(), "11".to_string())]);
        // A capture is one dot-free segment; `*` spans dots.
        assert!(caps("h.{i}.attn.c_attn.weight", "h.1.2.attn.c_attn.weight").is_none());
        assert!(caps("h.{i}.attn.c_attn.weight", "h..attn.c_attn.weight").is_none());
        assert!(caps("*h.{i}.ln_1.weight", "transformer.h.3.ln_1.weight").is_some());
        assert!(caps("*h.{i}.ln_1.weight", "h.3.ln_1.weight").is_some());
        assert!(caps("lm_head.*", "lm_head.w").is_some());
        assert!(caps("lm_head.*", "wte.w").is_none());
        let c = caps("l{a}_{b}", "l3_4_5").unwrap();
        assert_eq!((c[0].1.as_str(), c[1].1.as_str()), ("3", "4_5"));
        let src = Pattern::parse("h.{i}.mlp.c_fc.{kind}").unwrap();
        let t = Pattern::parse("h{i}.mlp.fc.{kind}").unwrap();
        let c = src.matches("h.7.mlp.c_fc.bias").unwrap();
        assert_eq!(t.fill(&c, &src).unwrap(), "h7.mlp.fc.bias");
        let e = Pattern::parse("h{j}.x")
            .unwrap()
            .fill(&c, &src)
            .unwrap_err();
        assert!(e.to_string().contains("uses `{j}`"), "{e}");
        for (bad, why) in [
            ("h.{i.x", "`{` without `}`"),
            ("h.i}.x", "`}` without `{`"),
            ("h.{}.x", "non-empty word name"),
            ("{i}.{i}", "appears twice"),
        ] {
            let e = Pattern::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn rules_route_first_match_or_by_own_name() {
        let map = WeightMap::new()
            .drop("h.{i}.attn.bias")
            .rule(Rule::new("h.{i}.attn.c_attn.weight", "h{i}.attn.qkv.w"))
            .rename("h.{i}.{x}.weight", "never");
        let m = map.compile().unwrap();
        assert!(matches!(m.route("h.0.attn.bias").unwrap(), Route::Dropped));
        let Route::To(Some(0), names) = m.route("h.2.attn.c_attn.weight").unwrap() else {
            panic!("first rule")
        };
        assert_eq!(names, ["h2.attn.qkv.w"]);
        let Route::To(None, names) = m.route("wte.w").unwrap() else {
            panic!("no rule")
        };
        assert_eq!(names, ["wte.w"]);
        let bad = WeightMap::new()
            .rule(Rule::parts("qkv", &["q", "k", "v"]).then(Transform::Split { dim: 0, parts: 2 }));
        let e = bad.compile().err().unwrap().to_string();
        assert!(e.contains("3 target(s) need one Split into 3 parts"), "{e}");
        let bad = WeightMap::new().rule(
            Rule::parts("qkv", &["q", "k"])
                .then(Transform::ReshapeToTarget)
                .then(Transform::Split { dim: 0, parts: 2 }),
        );
        let e = bad.compile().err().unwrap().to_string();
        assert!(e.contains("ReshapeToTarget before the Split"), "{e}");
    }
}
