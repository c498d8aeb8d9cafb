//! Keras layers: each builds its graph nodes (without its activation) from a [`Ctx`].

use graph::{DType, Graph, NodeId, Padding, TensorType};
use nn::{Init, Mode, Params, Weights};

/// Keras activations, applied by the model after a layer's own computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Linear,
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
    Gelu,
}

pub use Activation::{Gelu, Linear, Relu, Sigmoid, Softmax, Tanh};

impl Activation {
    #[track_caller]
    pub fn apply(self, g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
        match self {
            Linear => Ok(x),
            Relu => g.relu(x),
            Sigmoid => g.sigmoid(x),
            Tanh => g.tanh(x),
            Softmax => {
                let last = g.rank(x)?.saturating_sub(1);
                g.softmax(x, last)
            }
            Gelu => g.gelu(x),
        }
    }
}

/// What a layer builds with: the graph, the parameters, the mode and the step's seed.
pub struct Ctx<'a> {
    pub g: &'a mut Graph,
    pub p: &'a mut Params,
    pub mode: Mode,
    /// The u32 dropout seed input, created by the first layer that needs it.
    pub rng: Option<NodeId>,
    /// Weights become data inputs (not parameters): a frozen model inside another's step.
    pub frozen: bool,
    /// Frozen weights in declaration order: (full name, input node).
    pub frozen_weights: Vec<(String, NodeId)>,
    /// Names of non-trainable parameters (moving statistics).
    pub non_trainable: Vec<String>,
    /// New values of non-trainable parameters after a train step.
    pub updates: Vec<(NodeId, NodeId)>,
    /// Layer index, salting each layer's random stream.
    pub salt: u32,
    scope: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(g: &'a mut Graph, p: &'a mut Params, mode: Mode) -> Self {
        Ctx {
            g,
            p,
            mode,
            rng: None,
            frozen: false,
            frozen_weights: Vec::new(),
            non_trainable: Vec::new(),
            updates: Vec::new(),
            salt: 0,
            scope: Vec::new(),
        }
    }

    /// Runs `f` with weights named under `name` (the layer's name).
    pub fn scope<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.scope.push(name.to_string());
        let r = f(self);
        self.scope.pop();
        r
    }

    /// The graph and a view of the weights, borrowed apart so `nn` layers can take both.
    pub fn split(&mut self) -> (&mut Graph, CtxWeights<'_>) {
        (
            &mut *self.g,
            CtxWeights {
                p: &mut *self.p,
                frozen: self.frozen,
                frozen_weights: &mut self.frozen_weights,
                scope: &mut self.scope,
            },
        )
    }

    /// A trainable weight (a data input when frozen).
    #[track_caller]
    pub fn weight(&mut self, name: &str, ty: TensorType, init: Init) -> graph::Result<NodeId> {
        let (g, mut w) = self.split();
        w.weight(g, name, ty, init, &[])
    }

    /// A non-trainable weight, changed only through [`Ctx::updates`].
    #[track_caller]
    pub fn state(&mut self, name: &str, ty: TensorType, init: Init) -> graph::Result<NodeId> {
        let full = full_name(&self.scope, name);
        if !self.frozen {
            self.non_trainable.push(full);
        }
        self.weight(name, ty, init)
    }

    /// The step's u32 seed input.
    pub fn seed(&mut self) -> graph::Result<NodeId> {
        if let Some(s) = self.rng {
            return Ok(s);
        }
        let s = self
            .g
            .input("dropout_seed", TensorType::scalar(DType::U32))?;
        self.rng = Some(s);
        Ok(s)
    }

    pub fn training(&self) -> bool {
        self.mode == Mode::Train
    }
}

fn full_name(scope: &[String], name: &str) -> String {
    let mut s = scope.join(".");
    s.push('.');
    s.push_str(name);
    s
}

/// A [`Ctx`]'s weights as `nn` layers see them: named `layer.weight`, turned into data
/// inputs when the model is frozen.
pub struct CtxWeights<'c> {
    p: &'c mut Params,
    frozen: bool,
    frozen_weights: &'c mut Vec<(String, NodeId)>,
    scope: &'c mut Vec<String>,
}

impl Weights for CtxWeights<'_> {
    #[track_caller]
    fn weight(
        &mut self,
        g: &mut Graph,
        name: &str,
        ty: TensorType,
        init: Init,
        axes: &[nn::axis::Axis],
    ) -> graph::Result<NodeId> {
        let full = full_name(self.scope, name);
        if self.frozen {
            let n = g.input(&format!("frozen.{full}"), ty)?;
            self.frozen_weights.push((full, n));
            return Ok(n);
        }
        self.p.declare_axes(g, &full, ty, init, axes)
    }
    fn push_scope(&mut self, name: &str) {
        self.scope.push(name.to_string());
    }
    fn pop_scope(&mut self) {
        self.scope.pop();
    }
}

/// A layer of a [`super::Sequential`] model.
pub trait Layer {
    /// Keras class name (`Conv2D`), shown by `summary()`.
    fn kind(&self) -> &'static str;
    /// Keras default name stem (`conv2d`, then `conv2d_1`, ...).
    fn base_name(&self) -> &'static str;
    /// Shape of one example, for the first layer.
    fn input_shape(&self) -> Option<Vec<i64>> {
        None
    }
    /// Element type of the model input when this layer comes first.
    fn input_dtype(&self) -> DType {
        DType::F32
    }
    fn activation(&self) -> Activation {
        Linear
    }
    /// Builds the layer on `x` (`[batch, ..]`), activation excluded.
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId>;
}

/// Sets the first layer's example shape (`.input_shape([28, 28, 1])`).
macro_rules! builder_methods {
    () => {
        pub fn activation(mut self, a: Activation) -> Self {
            self.activation = a;
            self
        }
        pub fn input_shape<const N: usize>(mut self, s: [i64; N]) -> Self {
            self.input_shape = Some(s.to_vec());
            self
        }
    };
}

/// `Dense(units)`: `x @ kernel + bias` over the last dim.
#[derive(Debug, Clone)]
pub struct Dense {
    pub units: usize,
    pub activation: Activation,
    pub use_bias: bool,
    pub input_shape: Option<Vec<i64>>,
}

impl Dense {
    pub fn new(units: usize) -> Self {
        Dense {
            units,
            activation: Linear,
            use_bias: true,
            input_shape: None,
        }
    }
    builder_methods!();
}

impl Layer for Dense {
    fn kind(&self) -> &'static str {
        "Dense"
    }
    fn base_name(&self) -> &'static str {
        "dense"
    }
    fn input_shape(&self) -> Option<Vec<i64>> {
        self.input_shape.clone()
    }
    fn activation(&self) -> Activation {
        self.activation
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        let d_in = *cx.g.dims(x)?.last().unwrap_or(&1);
        let (g, mut w) = cx.split();
        let dense = nn::Linear::new([self.units as i64])
            .bias(self.use_bias)
            .declare(g, &mut w, "", d_in)?;
        dense.apply(g, x)
    }
}

/// `Conv2D(filters, (kh, kw))`, NHWC, stride 1 unless set.
#[derive(Debug, Clone)]
pub struct Conv2D {
    pub filters: usize,
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    pub padding: Padding,
    pub activation: Activation,
    pub input_shape: Option<Vec<i64>>,
}

impl Conv2D {
    pub fn new(filters: usize, kernel: (usize, usize)) -> Self {
        Conv2D {
            filters,
            kernel,
            strides: (1, 1),
            padding: Padding::Valid,
            activation: Linear,
            input_shape: None,
        }
    }
    /// `"same"` or `"valid"` as Keras spells them.
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    pub fn strides(mut self, s: (usize, usize)) -> Self {
        self.strides = s;
        self
    }
    builder_methods!();
}

impl Layer for Conv2D {
    fn kind(&self) -> &'static str {
        "Conv2D"
    }
    fn base_name(&self) -> &'static str {
        "conv2d"
    }
    fn input_shape(&self) -> Option<Vec<i64>> {
        self.input_shape.clone()
    }
    fn activation(&self) -> Activation {
        self.activation
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        let conv = nn::Conv2d {
            filters: self.filters,
            kernel: self.kernel,
            strides: self.strides,
            padding: self.padding.clone(),
        };
        let (g, mut w) = cx.split();
        conv.apply(g, &mut w, "", x)
    }
}

/// Max or average pooling over H and W.
#[derive(Debug, Clone)]
pub struct Pooling2D {
    pub max: bool,
    pub pool_size: (usize, usize),
    /// Default: the pool size.
    pub strides: Option<(usize, usize)>,
    pub padding: Padding,
}

/// `MaxPooling2D::new((2, 2))`.
pub struct MaxPooling2D;
/// `AveragePooling2D::new((2, 2))`.
pub struct AveragePooling2D;

impl MaxPooling2D {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(pool_size: (usize, usize)) -> Pooling2D {
        Pooling2D {
            max: true,
            pool_size,
            strides: None,
            padding: Padding::Valid,
        }
    }
}

impl AveragePooling2D {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(pool_size: (usize, usize)) -> Pooling2D {
        Pooling2D {
            max: false,
            ..MaxPooling2D::new(pool_size)
        }
    }
}

impl Pooling2D {
    pub fn strides(mut self, s: (usize, usize)) -> Self {
        self.strides = Some(s);
        self
    }
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
}

impl Layer for Pooling2D {
    fn kind(&self) -> &'static str {
        if self.max {
            "MaxPooling2D"
        } else {
            "AveragePooling2D"
        }
    }
    fn base_name(&self) -> &'static str {
        if self.max {
            "max_pooling2d"
        } else {
            "average_pooling2d"
        }
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        nn::Pool2d {
            max: self.max,
            size: self.pool_size,
            strides: self.strides,
            padding: self.padding.clone(),
        }
        .apply(cx.g, x)
    }
}

/// Flattens all but the batch dim.
#[derive(Debug, Clone, Default)]
pub struct Flatten;

impl Flatten {
    pub fn new() -> Self {
        Flatten
    }
}

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "Flatten"
    }
    fn base_name(&self) -> &'static str {
        "flatten"
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        nn::conv::flatten(cx.g, x)
    }
}

/// Reshapes each example to `target_shape`.
#[derive(Debug, Clone)]
pub struct Reshape {
    pub target_shape: Vec<i64>,
    pub input_shape: Option<Vec<i64>>,
}

impl Reshape {
    pub fn new<const N: usize>(target_shape: [i64; N]) -> Self {
        Reshape {
            target_shape: target_shape.to_vec(),
            input_shape: None,
        }
    }
    pub fn input_shape<const N: usize>(mut self, s: [i64; N]) -> Self {
        self.input_shape = Some(s.to_vec());
        self
    }
}

impl Layer for Reshape {
    fn kind(&self) -> &'static str {
        "Reshape"
    }
    fn base_name(&self) -> &'static str {
        "reshape"
    }
    fn input_shape(&self) -> Option<Vec<i64>> {
        self.input_shape.clone()
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        let b = cx.g.dims(x)?[0];
        let mut d = vec![b];
        d.extend(&self.target_shape);
        cx.g.reshape(x, d)
    }
}

/// Inverted dropout in training, identity otherwise.
#[derive(Debug, Clone)]
pub struct Dropout {
    pub rate: f64,
}

impl Dropout {
    pub fn new(rate: f64) -> Self {
        Dropout { rate }
    }
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        "Dropout"
    }
    fn base_name(&self) -> &'static str {
        "dropout"
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        if !cx.training() || self.rate == 0.0 {
            return Ok(x);
        }
        let seed = cx.seed()?;
        let salt = cx.salt;
        cx.g.dropout(x, self.rate, seed, salt)
    }
}

/// `Embedding(input_dim, output_dim)`: integer ids `[batch, ..]` to vectors.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub input_dim: usize,
    pub output_dim: usize,
    pub input_shape: Option<Vec<i64>>,
}

impl Embedding {
    pub fn new(input_dim: usize, output_dim: usize) -> Self {
        Embedding {
            input_dim,
            output_dim,
            input_shape: None,
        }
    }
    /// Sequence length of each example (Keras `input_length`).
    pub fn input_length(mut self, n: i64) -> Self {
        self.input_shape = Some(vec![n]);
        self
    }
}

impl Layer for Embedding {
    fn kind(&self) -> &'static str {
        "Embedding"
    }
    fn base_name(&self) -> &'static str {
        "embedding"
    }
    fn input_shape(&self) -> Option<Vec<i64>> {
        self.input_shape.clone()
    }
    fn input_dtype(&self) -> DType {
        DType::I32
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        let table = nn::Embedding::new(
            self.input_dim as i64,
            self.output_dim as i64,
            Init::Uniform { limit: 0.05 },
        );
        let (g, mut w) = cx.split();
        let t = table.declare(g, &mut w, "embeddings")?;
        nn::embedding::lookup(g, t, x)
    }
}

/// Per-feature normalization over the batch (and all but the last dim), with moving
/// statistics used at evaluation.
#[derive(Debug, Clone)]
pub struct BatchNormalization {
    pub momentum: f64,
    pub epsilon: f64,
    pub input_shape: Option<Vec<i64>>,
}

impl BatchNormalization {
    pub fn new() -> Self {
        BatchNormalization {
            momentum: 0.99,
            epsilon: 1e-3,
            input_shape: None,
        }
    }
    pub fn input_shape<const N: usize>(mut self, s: [i64; N]) -> Self {
        self.input_shape = Some(s.to_vec());
        self
    }
}

impl Default for BatchNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for BatchNormalization {
    fn kind(&self) -> &'static str {
        "BatchNormalization"
    }
    fn base_name(&self) -> &'static str {
        "batch_normalization"
    }
    fn input_shape(&self) -> Option<Vec<i64>> {
        self.input_shape.clone()
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        let d = cx.g.dims(x)?.to_vec();
        let c = *d.last().unwrap_or(&1);
        let ty = TensorType::f32([c]);
        let gamma = cx.weight("gamma", ty.clone(), Init::Ones)?;
        let beta = cx.weight("beta", ty.clone(), Init::Zeros)?;
        let mm = cx.state("moving_mean", ty.clone(), Init::Zeros)?;
        let mv = cx.state("moving_variance", ty, Init::Ones)?;
        let g = &mut *cx.g;
        let axes: Vec<usize> = (0..d.len() - 1).collect();
        let (mean, var) = if cx.mode == Mode::Train {
            let mean = g.mean(x, &axes)?;
            let xc = g.sub(x, mean)?;
            let sq = g.mul(xc, xc)?;
            let var = g.mean(sq, &axes)?;
            // moving = m * moving + (1 - m) * batch statistic (Keras).
            let m = self.momentum;
            let upd = |g: &mut Graph, mov: NodeId, stat: NodeId| -> graph::Result<NodeId> {
                let stat = g.stop_gradient(stat)?;
                let a = g.mul_scalar(mov, m)?;
                let b = g.mul_scalar(stat, 1.0 - m)?;
                g.add(a, b)
            };
            let new_mm = upd(g, mm, mean)?;
            let new_mv = upd(g, mv, var)?;
            if !cx.frozen {
                cx.updates.push((mm, new_mm));
                cx.updates.push((mv, new_mv));
            }
            (mean, var)
        } else {
            (mm, mv)
        };
        let g = &mut *cx.g;
        let xc = g.sub(x, mean)?;
        let v = g.add_scalar(var, self.epsilon)?;
        let inv = g.rsqrt(v)?;
        let y = g.mul(xc, inv)?;
        let y = g.mul(y, gamma)?;
        g.add(y, beta)
    }
}

/// Normalization over the last dim of each example.
#[derive(Debug, Clone)]
pub struct LayerNormalization {
    pub epsilon: f64,
}

impl LayerNormalization {
    pub fn new() -> Self {
        LayerNormalization { epsilon: 1e-3 }
    }
}

impl Default for LayerNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for LayerNormalization {
    fn kind(&self) -> &'static str {
        "LayerNormalization"
    }
    fn base_name(&self) -> &'static str {
        "layer_normalization"
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        let c = *cx.g.dims(x)?.last().unwrap_or(&1);
        let (g, mut w) = cx.split();
        let ln = nn::LayerNorm::new(self.epsilon).declare(g, &mut w, "", c)?;
        ln.apply(g, x)
    }
}
