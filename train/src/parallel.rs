//! Parallelism plans: a device mesh with named axes (`stage`, `data`, `model`) built from the
//! `[parallel]` config, logical axis rules mapping the names models give their dims
//! (`batch`, `embed`, `heads`, `mlp`, `vocab`) to mesh axes, and the resulting placement of
//! every argument and output of a step program. XLA's SPMD partitioner does the rest
//! (gradient all-reduce for data parallelism, parameter all-gathers for fsdp, the
//! row-parallel all-reduce of tensor parallelism, the collective-permutes between pipeline
//! stages).

use anyhow::{bail, Result};
use graph::{Sharding, TensorType};
use lower::Mesh;
use nn::ParamSpec;
use runtime::ShardLayout;
use serde::{Deserialize, Serialize};

/// Mesh axis names.
pub const DATA: &str = "data";
pub const MODEL: &str = "model";
pub const STAGE: &str = "stage";

/// The `[parallel]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelConfig {
    /// Data-parallel ways: the batch is split over the `data` mesh axis.
    #[serde(default = "one")]
    pub data: usize,
    /// Shard parameters and optimizer state over the `data` axis too (ZeRO-3 / FSDP).
    #[serde(default)]
    pub fsdp: bool,
    /// Tensor-parallel ways (Megatron): heads, MLP hidden and vocabulary split over `model`.
    #[serde(default = "one")]
    pub tensor: usize,
    /// Pipeline stages (GPipe): the model's blocks split into this many groups of
    /// consecutive layers over the `stage` mesh axis.
    #[serde(default = "one")]
    pub pipeline: usize,
    /// Microbatches per pipelined step; the bubble is (stages - 1) / (microbatches + stages - 1).
    #[serde(default = "four")]
    pub microbatches: usize,
    /// (logical axis, mesh axis) rules replacing the defaults; per dim the first rule that
    /// applies wins (its mesh axis exists, is unused by earlier dims and divides the dim).
    #[serde(default)]
    pub rules: Option<Vec<(String, String)>>,
    /// Train even when `tensor` divides none of some dims it should split (they stay whole
    /// on every device); by default that is an error naming them.
    #[serde(default)]
    pub allow_unsplit: bool,
}

fn one() -> usize {
    1
}

fn four() -> usize {
    4
}

impl Default for ParallelConfig {
    fn default() -> Self {
        ParallelConfig {
            data: 1,
            fsdp: false,
            tensor: 1,
            pipeline: 1,
            microbatches: 4,
            rules: None,
            allow_unsplit: false,
        }
    }
}

/// A mesh plus the rules placing logical axes on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub mesh: Mesh,
    pub rules: Vec<(String, String)>,
    /// Microbatches of the pipeline schedule (used when the mesh has a `stage` axis).
    pub microbatches: usize,
    /// `parallel.allow_unsplit`: see [`Plan::check_tensor_splits`].
    pub allow_unsplit: bool,
}

fn rule(l: &str, m: &str) -> (String, String) {
    (l.to_string(), m.to_string())
}

impl Plan {
    /// The plan a config asks for; `None` for one device.
    pub fn from_config(c: &ParallelConfig) -> Result<Option<Plan>> {
        for (key, v) in [
            ("data", c.data),
            ("tensor", c.tensor),
            ("pipeline", c.pipeline),
            ("microbatches", c.microbatches),
        ] {
            if v == 0 {
                bail!("config key `parallel.{key}` must be at least 1");
            }
        }
        if c.fsdp && c.data < 2 {
            bail!(
                "config key `parallel.fsdp` shards over the data axis: set `parallel.data` to \
                 the number of devices to shard over (at least 2)"
            );
        }
        let mut axes = Vec::new();
        // Stages outermost: each stage is a contiguous block of devices.
        for (name, n) in [(STAGE, c.pipeline), (DATA, c.data), (MODEL, c.tensor)] {
            if n > 1 {
                axes.push((name.to_string(), n as i64));
            }
        }
        if axes.is_empty() {
            return Ok(None);
        }
        let mut rules = match &c.rules {
            Some(r) => {
                for (l, m) in r {
                    if m != DATA && m != MODEL && m != STAGE {
                        bail!(
                            "config key `parallel.rules`: rule {l:?} -> {m:?} names no mesh axis \
                             (use {DATA:?}, {MODEL:?} or {STAGE:?})"
                        );
                    }
                }
                r.clone()
            }
            None => {
                let mut r = vec![
                    rule("batch", DATA),
                    rule("heads", MODEL),
                    rule("mlp", MODEL),
                    rule("vocab", MODEL),
                ];
                if c.fsdp {
                    // Every parameter has one of these dims; activations keep `data` for
                    // their batch, which comes first.
                    for l in ["embed", "mlp", "heads", "vocab"] {
                        r.push(rule(l, DATA));
                    }
                }
                r
            }
        };
        // Pipeline stacks always split their stage dim over the stages.
        if !rules.iter().any(|(l, _)| l == STAGE) {
            rules.push(rule(STAGE, STAGE));
        }
        Ok(Some(Plan {
            mesh: Mesh { axes },
            rules,
            microbatches: c.microbatches,
            allow_unsplit: c.allow_unsplit,
        }))
    }

    pub fn num_devices(&self) -> usize {
        self.mesh.num_devices() as usize
    }

    /// The pipeline schedule, when the mesh has stages.
    pub fn pipeline(&self) -> Option<crate::pipeline::Pipeline> {
        let stages = self.mesh.size(STAGE) as usize;
        (stages > 1).then_some(crate::pipeline::Pipeline {
            stages,
            microbatches: self.microbatches,
        })
    }

    /// The devices of pipeline stage `s`.
    pub fn stage_devices(&self, s: usize) -> Vec<usize> {
        let k = self.mesh.axes.iter().position(|(a, _)| a == STAGE);
        (0..self.mesh.num_devices())
            .filter(|&d| k.is_none_or(|k| self.mesh.coords(d)[k] == s as i64))
            .map(|d| d as usize)
            .collect()
    }

    /// Mesh axis per dim of values with logical axes `names` and shape `dims`.
    pub fn resolve(&self, names: &[Option<String>], dims: &[i64]) -> Vec<Option<String>> {
        if names.is_empty() {
            return vec![None; dims.len()];
        }
        lower::resolve_logical(names, dims, &self.rules, &self.mesh)
    }

    /// A parameter's (and its optimizer slots') mesh axes.
    pub fn param_axes(&self, p: &ParamSpec) -> Vec<Option<String>> {
        self.resolve(&p.axes, p.ty.dims())
    }

    /// A data input's mesh axes: its leading dim is the batch.
    pub fn batch_axes(&self, ty: &TensorType) -> Vec<Option<String>> {
        let mut names = vec![None; ty.rank()];
        if let Some(n) = names.first_mut() {
            *n = Some("batch".to_string());
        }
        self.resolve(&names, ty.dims())
    }

    /// How values with mesh axes `axes` and shape `dims` lie on the devices.
    pub fn layout(&self, axes: &[Option<String>], dims: &[i64]) -> ShardLayout {
        let n = self.mesh.num_devices();
        let pos = |a: &Option<String>| {
            a.as_ref()
                .and_then(|a| self.mesh.axes.iter().position(|(m, _)| m == a))
        };
        ShardLayout {
            dims: dims.to_vec(),
            tiles: axes
                .iter()
                .map(|a| pos(a).map_or(1, |k| self.mesh.axes[k].1))
                .collect(),
            device_tiles: (0..n)
                .map(|d| {
                    let c = self.mesh.coords(d);
                    axes.iter().map(|a| pos(a).map_or(0, |k| c[k])).collect()
                })
                .collect(),
        }
    }

    /// Parameter dims a rule maps to the `model` axis that stay whole because its size does
    /// not divide them (`h0.attn.qkv` dim 2: heads = 4), when no other dim of the parameter
    /// took the axis.
    pub fn unsplit_model_dims(&self, params: &[ParamSpec]) -> Vec<String> {
        let n = self.mesh.size(MODEL);
        let mut out = Vec::new();
        if n < 2 {
            return out;
        }
        for p in params {
            let resolved = self.param_axes(p);
            if resolved.iter().any(|a| a.as_deref() == Some(MODEL)) {
                continue;
            }
            for (i, (name, &d)) in p.axes.iter().zip(p.ty.dims()).enumerate() {
                let Some(name) = name else { continue };
                let to_model = self.rules.iter().any(|(l, m)| l == name && m == MODEL);
                if to_model && resolved[i].is_none() && d % n != 0 {
                    out.push(format!("`{}` dim {i} ({name} = {d})", p.name));
                }
            }
        }
        out
    }

    /// Tensor parallelism that cannot split what it should is an error unless
    /// `parallel.allow_unsplit`: those weights would be whole on every device, silently.
    pub fn check_tensor_splits(&self, params: &[ParamSpec]) -> Result<()> {
        let bad = self.unsplit_model_dims(params);
        if bad.is_empty() || self.allow_unsplit {
            return Ok(());
        }
        let n = self.mesh.size(MODEL);
        let shown: Vec<&str> = bad.iter().take(6).map(String::as_str).collect();
        let more = if bad.len() > shown.len() {
            format!(" and {} more", bad.len() - shown.len())
        } else {
            String::new()
        };
        bail!(
            "parallel.tensor = {n} cannot split {}{more}: {n} does not divide them, so they \
             would stay whole on every device; choose a tensor size that divides them or set \
             parallel.allow_unsplit = true",
            shown.join(", ")
        )
    }

    /// A one-line description: `data=2 x model=2`, `stage=2 x data=2`.
    pub fn describe(&self) -> String {
        self.mesh
            .axes
            .iter()
            .map(|(a, n)| format!("{a}={n}"))
            .collect::<Vec<_>>()
            .join(" x ")
    }
}

/// Where each argument and output of a step program lives.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramSharding {
    pub plan: Plan,
    /// Mesh axis per dim, per argument (`Graph::args()` order).
    pub args: Vec<Vec<Option<String>>>,
    /// Mesh axis per dim, per output.
    pub outputs: Vec<Vec<Option<String>>>,
}

impl ProgramSharding {
    /// The `Sharding` annotation of a value with mesh axes `axes`.
    pub fn annotation(axes: &[Option<String>]) -> Sharding {
        if axes.iter().all(Option::is_none) {
            Sharding::Replicated
        } else {
            Sharding::Mesh(axes.to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_from_config() {
        assert_eq!(Plan::from_config(&ParallelConfig::default()).unwrap(), None);
        let p = Plan::from_config(&ParallelConfig {
            data: 2,
            tensor: 2,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(p.describe(), "data=2 x model=2");
        assert_eq!(p.num_devices(), 4);
        let s = |v: &str| Some(v.to_string());
        let names = vec![s("embed"), s("mlp")];
        assert_eq!(p.resolve(&names, &[8, 32]), vec![None, s("model")]);
        // Device 1 is data 0, model 1: the second column block.
        let l = p.layout(&[None, s("model")], &[8, 32]);
        assert_eq!(l.tiles, vec![1, 2]);
        assert_eq!(
            l.device_tiles,
            vec![vec![0, 0], vec![0, 1], vec![0, 0], vec![0, 1]]
        );
        let f = Plan::from_config(&ParallelConfig {
            data: 4,
            fsdp: true,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(f.resolve(&names, &[8, 32]), vec![s("data"), None]);
        let bt = TensorType::new(graph::DType::I32, [8, 16]);
        assert_eq!(f.batch_axes(&bt), vec![s("data"), None]);
        let e = Plan::from_config(&ParallelConfig {
            fsdp: true,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("parallel.fsdp"), "{e}");
        let e = Plan::from_config(&ParallelConfig {
            data: 2,
            rules: Some(vec![rule("batch", "rows")]),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("parallel.rules") && e.contains("rows"), "{e}");
        let pp = Plan::from_config(&ParallelConfig {
            data: 2,
            pipeline: 2,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        assert_eq!(pp.describe(), "stage=2 x data=2");
        assert_eq!(
            pp.pipeline(),
            Some(crate::pipeline::Pipeline {
                stages: 2,
                microbatches: 4
            })
        );
        assert_eq!(pp.stage_devices(1), vec![2, 3]);
        // A stack's stage dim goes to `stage`, the microbatch to `data`.
        let st = vec![s("stage"), s("batch"), None, s("embed")];
        assert_eq!(
            pp.resolve(&st, &[2, 2, 16, 32]),
            vec![s("stage"), s("data"), None, None]
        );
        assert_eq!(p.pipeline(), None);
        let e = Plan::from_config(&ParallelConfig {
            pipeline: 2,
            microbatches: 0,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("parallel.microbatches"), "{e}");
    }
}
