//! Parameters: declared by models with a shape and an initializer, filled on the host from a
//! seed (each parameter's stream depends only on the seed and its name).

use std::rc::Rc;

use graph::{Graph, Location, NodeId, TensorType};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How a parameter starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Init {
    Zeros,
    Ones,
    Normal {
        std: f64,
    },
    Uniform {
        limit: f64,
    },
    /// Keras' default for Dense and Conv kernels: U(±sqrt(6 / (fan_in + fan_out))).
    GlorotUniform {
        fan_in: usize,
        fan_out: usize,
    },
}

impl Init {
    /// `n` values from `rng`.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Vec<f32> {
        match *self {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal { std } => (0..n).map(|_| (normal(rng) * std) as f32).collect(),
            Init::Uniform { limit } => (0..n)
                .map(|_| rng.gen_range(-limit..=limit) as f32)
                .collect(),
            Init::GlorotUniform { fan_in, fan_out } => {
                let limit = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                (0..n)
                    .map(|_| rng.gen_range(-limit..=limit) as f32)
                    .collect()
            }
        }
    }
}

/// Standard normal by Box-Muller.
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Logical axis names: what a dim means, not where it lives. Config rules map them to
/// mesh axes (`embed` -> `data` under fsdp, `heads`/`mlp` -> `model` under tensor parallelism).
pub mod axis {
    pub type Axis = Option<&'static str>;
    pub const BATCH: Axis = Some("batch");
    pub const EMBED: Axis = Some("embed");
    pub const HEADS: Axis = Some("heads");
    pub const MLP: Axis = Some("mlp");
    pub const VOCAB: Axis = Some("vocab");
    pub const LAYERS: Axis = Some("layers");
    /// The leading dim of per-stage stacks in a pipeline.
    pub const STAGE: Axis = Some("stage");
    /// A dim that is never split.
    pub const NONE: Axis = None;
}

/// One declared parameter.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub ty: TensorType,
    pub init: Init,
    pub node: NodeId,
    /// A logical axis name per dim (empty: none declared, so replicated).
    pub axes: Vec<Option<String>>,
    /// Where the model declared it.
    pub loc: Location,
}

impl ParamSpec {
    pub fn count(&self) -> usize {
        self.ty.dims().iter().product::<i64>() as usize
    }

    /// Initial values from `seed` (independent of declaration order).
    pub fn initial_values(&self, seed: u64) -> Vec<f32> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ h);
        self.init.sample(self.count(), &mut rng)
    }
}

/// The parameters a model declares, in declaration order.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub specs: Vec<ParamSpec>,
    prefix: Vec<String>,
    /// How [`crate::repeated`] blocks are built (set by the trainer, e.g. a pipeline).
    pub repeat: RepeatHook,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares parameter `name` (prefixed by enclosing scopes) as a graph parameter.
    #[track_caller]
    pub fn declare(
        &mut self,
        g: &mut Graph,
        name: &str,
        ty: TensorType,
        init: Init,
    ) -> graph::Result<NodeId> {
        self.declare_axes(g, name, ty, init, &[])
    }

    /// [`Params::declare`] with a logical axis name per dim (see [`axis`]).
    #[track_caller]
    pub fn declare_axes(
        &mut self,
        g: &mut Graph,
        name: &str,
        ty: TensorType,
        init: Init,
        axes: &[axis::Axis],
    ) -> graph::Result<NodeId> {
        let loc = Location::caller();
        let mut full = self.prefix.join(".");
        if !full.is_empty() {
            full.push('.');
        }
        full.push_str(name);
        if self.specs.iter().any(|s| s.name == full) {
            return Err(graph::GraphError::Invalid(format!(
                "parameter `{full}` declared twice"
            )));
        }
        if !axes.is_empty() && axes.len() != ty.rank() {
            return Err(graph::GraphError::Invalid(format!(
                "parameter `{full}` at {loc}: {} logical axes for {ty}",
                axes.len()
            )));
        }
        let node = g.parameter(&full, ty.clone())?;
        self.specs.push(ParamSpec {
            name: full,
            ty,
            init,
            node,
            axes: axes.iter().map(|a| a.map(String::from)).collect(),
            loc,
        });
        Ok(node)
    }

    /// Runs `f` with `name` pushed onto the parameter name prefix (`block0.attn.w`).
    pub fn scope<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.prefix.push(name.to_string());
        let r = f(self);
        self.prefix.pop();
        r
    }

    pub fn total(&self) -> usize {
        self.specs.iter().map(|s| s.count()).sum()
    }

    /// The current name prefix (`h3.attn`).
    pub fn prefix(&self) -> String {
        self.prefix.join(".")
    }
}

/// Where layers get their weights: [`Params`] declares graph parameters; Keras' frozen
/// models turn them into data inputs instead. Names are relative to the current scope.
pub trait Weights {
    /// A weight `name` of type `ty` with its initializer and logical axes (empty: none).
    #[track_caller]
    fn weight(
        &mut self,
        g: &mut Graph,
        name: &str,
        ty: TensorType,
        init: Init,
        axes: &[axis::Axis],
    ) -> graph::Result<NodeId>;
    /// Enters scope `name`: later weights are named `name.<weight>`.
    fn push_scope(&mut self, name: &str);
    fn pop_scope(&mut self);
}

/// Runs `f` with weights named under scope `name`.
pub fn scoped<W: Weights + ?Sized, R>(w: &mut W, name: &str, f: impl FnOnce(&mut W) -> R) -> R {
    w.push_scope(name);
    let r = f(w);
    w.pop_scope();
    r
}

impl Weights for Params {
    #[track_caller]
    fn weight(
        &mut self,
        g: &mut Graph,
        name: &str,
        ty: TensorType,
        init: Init,
        axes: &[axis::Axis],
    ) -> graph::Result<NodeId> {
        self.declare_axes(g, name, ty, init, axes)
    }
    fn push_scope(&mut self, name: &str) {
        self.prefix.push(name.to_string());
    }
    fn pop_scope(&mut self) {
        self.prefix.pop();
    }
}

/// How a model's repeated blocks (`nn::repeated`) are built: part of the declaration
/// context, so the trainer can lay out a stack (e.g. as pipeline stages) without the model
/// knowing.
/// Declares layer `i`'s parameters (in scope `{prefix}{i}`, opened by the caller).
pub type DeclareFn<'a> = dyn FnMut(&mut Graph, &mut Params, usize) -> graph::Result<()> + 'a;
/// Applies layer `i` (declared before) to `x`.
pub type ApplyFn<'a> = dyn FnMut(&mut Graph, usize, NodeId) -> graph::Result<NodeId> + 'a;

/// A way of building `count` repeated blocks.
pub trait Repeat {
    #[allow(clippy::too_many_arguments)]
    fn repeat(
        &self,
        g: &mut Graph,
        p: &mut Params,
        prefix: &str,
        count: usize,
        x: NodeId,
        declare: &mut DeclareFn,
        apply: &mut ApplyFn,
    ) -> graph::Result<NodeId>;
}

/// The [`Repeat`] installed in a [`Params`]; `None`: sequential.
#[derive(Clone, Default)]
pub struct RepeatHook(pub Option<Rc<dyn Repeat>>);

impl std::fmt::Debug for RepeatHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "RepeatHook(custom)"
        } else {
            "RepeatHook(sequential)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_deterministic_per_name_and_scaled() {
        let mut g = Graph::new("p");
        let mut p = Params::new();
        let a = p
            .declare(
                &mut g,
                "a",
                TensorType::f32([100, 50]),
                Init::GlorotUniform {
                    fan_in: 100,
                    fan_out: 50,
                },
            )
            .unwrap();
        let _ = a;
        p.scope("blk", |p| {
            p.declare(
                &mut g,
                "b",
                TensorType::f32([1000]),
                Init::Normal { std: 0.02 },
            )
        })
        .unwrap();
        assert_eq!(p.specs[1].name, "blk.b");
        let va = p.specs[0].initial_values(1);
        assert_eq!(va, p.specs[0].initial_values(1));
        assert_ne!(va, p.specs[0].initial_values(2));
        let lim = (6.0f32 / 150.0).sqrt();
        assert!(va.iter().all(|x| x.abs() <= lim));
        let vb = p.specs[1].initial_values(1);
        let std = (vb.iter().map(|x| (x * x) as f64).sum::<f64>() / 1000.0).sqrt();
        assert!((std - 0.02).abs() < 0.003, "{std}");
        assert!(p
            .declare(&mut g, "a", TensorType::f32([1]), Init::Zeros)
            .is_err());
        let e = p
            .declare_axes(
                &mut g,
                "c",
                TensorType::f32([4, 4]),
                Init::Zeros,
                &[axis::EMBED],
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("`c` at") && e.contains("param.rs"), "{e}");
    }
}
