//! `x (.., d_in) · w (d_in, out..) + b (out..)`: dense layers, projections, heads.

use graph::{DType, DotDims, Graph, NodeId, TensorType};

use crate::param::{axis::Axis, Init, Weights};

/// A linear layer's hyperparameters.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Output dims (one for a plain dense layer; `[3, H, hd]` for a fused qkv).
    pub out: Vec<i64>,
    pub bias: bool,
    /// Kernel init; `None`: Keras' glorot-uniform from the fan-in and fan-out.
    pub init: Option<Init>,
    /// Logical axes of the kernel (the bias takes the ones after `d_in`); empty: none.
    pub axes: Vec<Axis>,
    /// Weight names: Keras/flax spell them `kernel`/`bias`, GPT checkpoints `w`/`b`.
    pub names: (&'static str, &'static str),
}

/// A declared linear layer.
#[derive(Debug, Clone, Copy)]
pub struct LinearW {
    pub w: NodeId,
    pub b: Option<NodeId>,
}

impl Linear {
    pub fn new(out: impl Into<Vec<i64>>) -> Self {
        Linear {
            out: out.into(),
            bias: true,
            init: None,
            axes: Vec::new(),
            names: ("kernel", "bias"),
        }
    }
    pub fn init(mut self, init: Init) -> Self {
        self.init = Some(init);
        self
    }
    pub fn axes(mut self, axes: &[Axis]) -> Self {
        self.axes = axes.to_vec();
        self
    }
    pub fn bias(mut self, yes: bool) -> Self {
        self.bias = yes;
        self
    }
    pub fn names(mut self, w: &'static str, b: &'static str) -> Self {
        self.names = (w, b);
        self
    }

    /// Declares the kernel `(d_in, out..)` and bias under scope `name` (`""`: no scope).
    #[track_caller]
    pub fn declare<W: Weights + ?Sized>(
        &self,
        g: &mut Graph,
        w: &mut W,
        name: &str,
        d_in: i64,
    ) -> graph::Result<LinearW> {
        let mut dims = vec![d_in];
        dims.extend(&self.out);
        let fan_out = self.out.iter().product::<i64>() as usize;
        let init = self.init.unwrap_or(Init::GlorotUniform {
            fan_in: d_in as usize,
            fan_out,
        });
        let b_axes = self.axes.get(1..).unwrap_or(&[]);
        // No closures here: `#[track_caller]` then names the model line in errors.
        if !name.is_empty() {
            w.push_scope(name);
        }
        let k = w.weight(g, self.names.0, TensorType::f32(dims), init, &self.axes);
        let b = match (&k, self.bias) {
            (Ok(_), true) => Some(w.weight(
                g,
                self.names.1,
                TensorType::f32(self.out.clone()),
                Init::Zeros,
                b_axes,
            )),
            _ => None,
        };
        if !name.is_empty() {
            w.pop_scope();
        }
        Ok(LinearW {
            w: k?,
            b: b.transpose()?,
        })
    }
}

impl LinearW {
    /// `x (.., d_in) -> (.., out..)`.
    #[track_caller]
    pub fn apply(&self, g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
        let r = g.rank(x)?;
        if r == 0 {
            return Err(graph::GraphError::Invalid(
                "a linear layer needs an input with a feature dim, got a scalar".into(),
            ));
        }
        let y = g.dot_general(x, self.w, DotDims::contract(&[r - 1], &[0]), None)?;
        match self.b {
            Some(b) => g.add(y, b),
            None => Ok(y),
        }
    }

    /// Element type of the kernel.
    pub fn dtype(&self, g: &Graph) -> graph::Result<DType> {
        g.dtype(self.w)
    }
}
