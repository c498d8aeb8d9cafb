//! Loading weights by name, like HF's `from_pretrained`: a [`WeightMap`] (one per model
//! family) maps a file's tensor names to the model's, with per-tensor transforms (transpose,
//! reshape, split a fused qkv, cast); [`load_named`] returns the tensors in the model's order
//! and a [`LoadReport`] of what was loaded, missing, unexpected and mis-shaped. A partial
//! load is an error unless [`LoadOptions`] names what may stay at init.
//!
//! The load is planned from the files' headers alone (names, shapes, dtypes), so a wrong
//! map fails before any data is decoded; then each source tensor is decoded once.

mod map;
mod report;
mod transform;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use safetensors::SafeTensors;

use crate::checkpoint;
use crate::tensor::{self, Dtype, Tensor};
use map::{any_match, patterns, CompiledMap, Route};
pub use map::{Rule, WeightMap};
use report::list;
pub use report::{LoadReport, MisShaped, Unexpected};
pub use transform::Transform;
use transform::{run, Piece, StepError};

/// A model tensor to fill.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    pub dims: Vec<i64>,
    pub dtype: Dtype,
}

impl Target {
    pub fn f32(name: &str, dims: &[i64]) -> Target {
        Target {
            name: name.to_string(),
            dims: dims.to_vec(),
            dtype: Dtype::F32,
        }
    }
}

/// The targets of a model's parameters, in their order (e.g. `StepProgram::params`).
pub fn targets(params: &[nn::ParamSpec]) -> Result<Vec<Target>> {
    params
        .iter()
        .map(|p| {
            let dtype = Dtype::of_graph(p.ty.dtype).ok_or_else(|| {
                anyhow!(
                    "parameter `{}` is {}, which weight files do not hold",
                    p.name,
                    p.ty.dtype
                )
            })?;
            Ok(Target {
                name: p.name.clone(),
                dims: p.ty.dims().to_vec(),
                dtype,
            })
        })
        .collect()
}

/// What a load may leave at init; everything else must be filled. Patterns as in
/// [`WeightMap`] rules, over model tensor names (`lm_head.*`, `h{i}.attn.*`).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Model tensors no source fills (a partial load: an encoder without its head).
    pub allow_missing: Vec<String>,
    /// Model tensors whose source has another shape (a new head of another size).
    pub allow_mis_shaped: Vec<String>,
}

impl LoadOptions {
    pub fn allow_missing(mut self, pattern: &str) -> LoadOptions {
        self.allow_missing.push(pattern.to_string());
        self
    }

    pub fn allow_mis_shaped(mut self, pattern: &str) -> LoadOptions {
        self.allow_mis_shaped.push(pattern.to_string());
        self
    }
}

/// The model's tensors (in target order; `None`: left at init) and what the load did.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub tensors: Vec<Option<Tensor>>,
    pub report: LoadReport,
}

/// Fills `targets` from safetensors files or checkpoint directories by name through `map`.
/// Errors, each naming the tensors and what to do: a model tensor with no source or with a
/// source of another shape (unless `opts` allows it), a dtype that needs a lossy cast the
/// map does not ask for, two sources for one model tensor, a bad or unreadable file.
pub fn load_named<P: AsRef<Path>>(
    sources: &[P],
    targets: &[Target],
    map: &WeightMap,
    opts: &LoadOptions,
) -> Result<Loaded> {
    let map = map.compile()?;
    let allow_missing = patterns(&opts.allow_missing)?;
    let allow_mis_shaped = patterns(&opts.allow_mis_shaped)?;
    let files = read_sources(sources)?;
    let parsed: Vec<SafeTensors> = files
        .iter()
        .map(|(p, b)| tensor::parse(b, p))
        .collect::<Result<_>>()?;
    let index = index_sources(&files, &parsed)?;
    let mut by_target: HashMap<&str, usize> = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        if by_target.insert(t.name.as_str(), i).is_some() {
            bail!("the model names two tensors `{}`", t.name);
        }
    }
    let mut report = LoadReport {
        sources: files.iter().map(|(p, _)| p.clone()).collect(),
        ..LoadReport::default()
    };
    let (claims, filled) = claim(&index, &files, &map, targets, &by_target, &mut report)?;
    let fits = plan(&claims, &index, &files, &map, targets, &mut report)?;
    for (ti, t) in targets.iter().enumerate() {
        if !filled[ti] {
            report.missing.push(t.name.clone());
            if any_match(&allow_missing, &t.name) {
                report.left_at_init.push(t.name.clone());
            }
        } else if report.mis_shaped.iter().any(|m| m.target == t.name)
            && any_match(&allow_mis_shaped, &t.name)
        {
            report.left_at_init.push(t.name.clone());
        }
    }
    report
        .mis_shaped
        .sort_by_key(|m| by_target[m.target.as_str()]);
    report.widened.sort_by_key(|w| by_target[w.0.as_str()]);
    report.loaded = fits
        .iter()
        .flat_map(|(_, fills)| fills.iter().map(|&(_, ti)| ti))
        .collect::<std::collections::BTreeSet<usize>>()
        .into_iter()
        .map(|ti| targets[ti].name.clone())
        .collect();
    refuse_unless_allowed(&report)?;

    let mut tensors: Vec<Option<Tensor>> = vec![None; targets.len()];
    for (ci, fills) in fits {
        let c = &claims[ci];
        let s = &index[c.source];
        let file = &files[s.file].0;
        let view = parsed[s.file]
            .tensor(&s.name)
            .map_err(|e| anyhow!("{}: tensor `{}`: {e}", file.display(), s.name))?;
        let t = tensor::decode_view(&s.name, &view, file)?;
        let start = Piece {
            dims: t.dims,
            dtype: t.data.dtype(),
            data: Some(t.data),
        };
        let mut pieces: Vec<Option<Piece>> =
            match run(map.transforms(c.rule), start, &c.piece_dims()) {
                Ok(p) => p.into_iter().map(Some).collect(),
                Err(StepError::Shape(e) | StepError::Dtype(e)) => {
                    bail!("`{}` ({}): {e}", s.name, file.display())
                }
            };
        for (p, ti) in fills {
            let target = &targets[ti];
            let data = pieces[p]
                .take()
                .and_then(|x| x.data)
                .expect("each piece fills one target, with data");
            // Planned: equal, or an exact widening.
            let data = if data.dtype() == target.dtype {
                data
            } else {
                data.cast(target.dtype)?
            };
            tensors[ti] = Some(Tensor::new(&target.name, target.dims.clone(), data)?);
        }
    }
    Ok(Loaded { tensors, report })
}

/// The bytes of each source: a safetensors file, or a checkpoint directory (its verified
/// parameter file).
fn read_sources<P: AsRef<Path>>(sources: &[P]) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    if sources.is_empty() {
        bail!("loading weights: no source files given");
    }
    sources
        .iter()
        .map(|s| {
            let p = s.as_ref();
            if checkpoint::is_checkpoint(p) {
                checkpoint::params_file(p)
            } else if p.is_dir() {
                bail!(
                    "{} is a directory but not a checkpoint (no state.json): pass its \
                     .safetensors files",
                    p.display()
                )
            } else {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                Ok((p.to_path_buf(), bytes))
            }
        })
        .collect()
}

/// A tensor in one of the source files, by its header.
struct SourceTensor {
    name: String,
    file: usize,
    dtype: safetensors::Dtype,
    dims: Vec<i64>,
}

/// Every source tensor by name; a name in two files is an error.
fn index_sources(
    files: &[(PathBuf, Vec<u8>)],
    parsed: &[SafeTensors],
) -> Result<Vec<SourceTensor>> {
    let mut index: Vec<SourceTensor> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (file, st) in parsed.iter().enumerate() {
        for (name, view) in st.tensors() {
            if let Some(&other) = seen.get(&name) {
                bail!(
                    "tensor `{name}` is in both {} and {}: pass each tensor once",
                    files[other].0.display(),
                    files[file].0.display()
                );
            }
            seen.insert(name.clone(), file);
            index.push(SourceTensor {
                name,
                file,
                dtype: view.dtype(),
                dims: view.shape().iter().map(|&d| d as i64).collect(),
            });
        }
    }
    index.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(index)
}

/// (piece, target index) pairs of one source tensor.
type Fills = Vec<(usize, usize)>;

/// A source tensor the map routes to some model tensor.
struct Claim {
    source: usize,
    rule: Option<usize>,
    /// The pieces the model has.
    fills: Fills,
    /// Target dims of each piece (`None` where the model lacks the name).
    dims: Vec<Option<Vec<i64>>>,
}

impl Claim {
    fn piece_dims(&self) -> Vec<Option<&[i64]>> {
        self.dims.iter().map(|d| d.as_deref()).collect()
    }
}

/// Routes every source tensor by name: the claims, and which targets some source fills.
/// Records dropped and unexpected tensors; two sources for one target is an error.
fn claim(
    index: &[SourceTensor],
    files: &[(PathBuf, Vec<u8>)],
    map: &CompiledMap,
    targets: &[Target],
    by_target: &HashMap<&str, usize>,
    report: &mut LoadReport,
) -> Result<(Vec<Claim>, Vec<bool>)> {
    let mut filled_by: Vec<Option<usize>> = vec![None; targets.len()];
    let mut claims: Vec<Claim> = Vec::new();
    for (si, s) in index.iter().enumerate() {
        let (rule, names) = match map.route(&s.name)? {
            Route::Dropped => {
                report.dropped.push(s.name.clone());
                continue;
            }
            Route::To(rule, names) => (rule, names),
        };
        let mut fills = Vec::new();
        let mut absent = Vec::new();
        for (piece, name) in names.iter().enumerate() {
            let Some(&ti) = by_target.get(name.as_str()) else {
                absent.push(name.clone());
                continue;
            };
            if let Some(prev) = filled_by[ti] {
                // `prev == claims.len()`: this very source, through two of its pieces.
                let other = claims.get(prev).map_or(s, |c| &index[c.source]);
                bail!(
                    "model tensor `{name}` has two sources: `{}` ({}) and `{}` ({}); make the \
                     name map send one elsewhere, or drop it",
                    other.name,
                    files[other.file].0.display(),
                    s.name,
                    files[s.file].0.display()
                );
            }
            filled_by[ti] = Some(claims.len());
            fills.push((piece, ti));
        }
        if !absent.is_empty() {
            report.unexpected.push(Unexpected {
                source: s.name.clone(),
                mapped_to: absent,
            });
        }
        if !fills.is_empty() {
            let dims = names
                .iter()
                .map(|n| {
                    by_target
                        .get(n.as_str())
                        .map(|&ti| targets[ti].dims.clone())
                })
                .collect();
            claims.push(Claim {
                source: si,
                rule,
                fills,
                dims,
            });
        }
    }
    Ok((claims, filled_by.iter().map(Option::is_some).collect()))
}

/// Runs each claim's transforms on shapes and dtypes: records mis-shaped and widened
/// tensors, fails on dtypes that need a cast, and returns the fills that fit (by claim).
fn plan(
    claims: &[Claim],
    index: &[SourceTensor],
    files: &[(PathBuf, Vec<u8>)],
    map: &CompiledMap,
    targets: &[Target],
    report: &mut LoadReport,
) -> Result<Vec<(usize, Fills)>> {
    let mut dtype_errors = Vec::new();
    let mut fits = Vec::new();
    for (ci, c) in claims.iter().enumerate() {
        let s = &index[c.source];
        let file = &files[s.file].0;
        let dtype = match tensor::dtype_of(&s.name, s.dtype, file) {
            Ok(d) => d,
            Err(e) => {
                dtype_errors.push(e.to_string());
                continue;
            }
        };
        let start = Piece {
            dims: s.dims.clone(),
            dtype,
            data: None,
        };
        let mis_shaped = |ti: usize, why: String| MisShaped {
            target: targets[ti].name.clone(),
            want: targets[ti].dims.clone(),
            source: s.name.clone(),
            got: s.dims.clone(),
            why,
        };
        let pieces = match run(map.transforms(c.rule), start, &c.piece_dims()) {
            Ok(p) => p,
            Err(StepError::Dtype(why)) => {
                dtype_errors.push(format!("`{}` ({}): {why}", s.name, file.display()));
                continue;
            }
            Err(StepError::Shape(why)) => {
                for &(_, ti) in &c.fills {
                    report.mis_shaped.push(mis_shaped(ti, why.clone()));
                }
                continue;
            }
        };
        let mut ok = Vec::new();
        for &(p, ti) in &c.fills {
            let (t, x) = (&targets[ti], &pieces[p]);
            if x.dims != t.dims {
                let why = match x.dims == s.dims {
                    true => String::new(),
                    false => format!("its rule gives {:?}", x.dims),
                };
                report.mis_shaped.push(mis_shaped(ti, why));
                continue;
            }
            ok.push((p, ti));
            if x.dtype == t.dtype {
                continue;
            }
            if x.dtype.widens_to(t.dtype) {
                report.widened.push((t.name.clone(), x.dtype, t.dtype));
            } else {
                dtype_errors.push(format!(
                    "`{}` ({}) is {} but model tensor `{}` is {}: add Transform::Cast(Dtype::{:?}) \
                     to its rule if a rounding cast is meant (integer weights need their scales \
                     instead)",
                    s.name,
                    file.display(),
                    x.dtype,
                    t.name,
                    t.dtype,
                    t.dtype
                ));
            }
        }
        if !ok.is_empty() {
            fits.push((ci, ok));
        }
    }
    if !dtype_errors.is_empty() {
        bail!(
            "loading weights: wrong dtype:\n  {}",
            dtype_errors.join("\n  ")
        );
    }
    Ok(fits)
}

/// An error with the report unless every missing and mis-shaped tensor was allowed.
fn refuse_unless_allowed(report: &LoadReport) -> Result<()> {
    let refused = |names: Vec<&String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !report.left_at_init.contains(n))
            .map(|n| format!("`{n}`"))
            .collect()
    };
    let missing = refused(report.missing.iter().collect());
    let shapes = refused(report.mis_shaped.iter().map(|m| &m.target).collect());
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!(
            "{} model tensor(s) have no source: {} (fix the name map, or allow a partial load \
             with LoadOptions::allow_missing)",
            missing.len(),
            list(missing.into_iter())
        ));
    }
    if !shapes.is_empty() {
        why.push(format!(
            "{} model tensor(s) have a source of another shape: {} (check the model config \
             against the file, or keep them at init with LoadOptions::allow_mis_shaped)",
            shapes.len(),
            list(shapes.into_iter())
        ));
    }
    if why.is_empty() {
        return Ok(());
    }
    bail!("loading weights: {}\n{report}", why.join("; "))
}
