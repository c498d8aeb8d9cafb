//! 2-D convolution (NHWC input, HWIO kernel) with bias, and 2-D pooling.

use graph::{Graph, NodeId, Padding, TensorType};

use crate::param::{Init, Weights};

/// A convolution's hyperparameters (Keras' `Conv2D`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub filters: usize,
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    pub padding: Padding,
}

/// A declared convolution.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dW {
    pub kernel: NodeId,
    pub bias: NodeId,
    pub strides: [i64; 2],
}

impl Conv2d {
    pub fn new(filters: usize, kernel: (usize, usize)) -> Self {
        Conv2d {
            filters,
            kernel,
            strides: (1, 1),
            padding: Padding::Valid,
        }
    }

    /// Declares `kernel (kh, kw, c_in, filters)` (glorot-uniform) and `bias` under `name`.
    #[track_caller]
    pub fn declare<W: Weights + ?Sized>(
        &self,
        g: &mut Graph,
        w: &mut W,
        name: &str,
        c_in: usize,
    ) -> graph::Result<Conv2dW> {
        let (kh, kw) = self.kernel;
        if !name.is_empty() {
            w.push_scope(name);
        }
        let k = w.weight(
            g,
            "kernel",
            TensorType::f32([kh as i64, kw as i64, c_in as i64, self.filters as i64]),
            Init::GlorotUniform {
                fan_in: kh * kw * c_in,
                fan_out: kh * kw * self.filters,
            },
            &[],
        );
        let b = match &k {
            Ok(_) => Some(w.weight(
                g,
                "bias",
                TensorType::f32([self.filters as i64]),
                Init::Zeros,
                &[],
            )),
            Err(_) => None,
        };
        if !name.is_empty() {
            w.pop_scope();
        }
        let kernel = k?;
        let bias = b.transpose()?.unwrap_or(kernel);
        Ok(Conv2dW {
            kernel,
            bias,
            strides: [self.strides.0 as i64, self.strides.1 as i64],
        })
    }

    /// Declares and applies to `x (B, H, W, C)` in one call.
    #[track_caller]
    pub fn apply<W: Weights + ?Sized>(
        &self,
        g: &mut Graph,
        w: &mut W,
        name: &str,
        x: NodeId,
    ) -> graph::Result<NodeId> {
        let d = g.dims(x)?.to_vec();
        if d.len() != 4 {
            return Err(graph::GraphError::Invalid(format!(
                "a 2-D convolution needs (batch, height, width, channels) input, got {d:?}: \
                 add a reshape"
            )));
        }
        let c = self.declare(g, w, name, d[3] as usize)?;
        let y = g.conv2d(x, c.kernel, c.strides, self.padding.clone(), [1, 1])?;
        g.add(y, c.bias)
    }
}

/// Max or average pooling over H and W of `x (B, H, W, C)`.
#[derive(Debug, Clone)]
pub struct Pool2d {
    pub max: bool,
    pub size: (usize, usize),
    /// Default: the pool size.
    pub strides: Option<(usize, usize)>,
    pub padding: Padding,
}

impl Pool2d {
    #[track_caller]
    pub fn apply(&self, g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
        let size = [self.size.0 as i64, self.size.1 as i64];
        let s = self.strides.unwrap_or(self.size);
        let s = [s.0 as i64, s.1 as i64];
        if self.max {
            g.max_pool2d(x, size, s, self.padding.clone())
        } else {
            g.avg_pool2d(x, size, s, self.padding.clone())
        }
    }
}

/// Flattens all but the leading (batch) dim.
#[track_caller]
pub fn flatten(g: &mut Graph, x: NodeId) -> graph::Result<NodeId> {
    let d = g.dims(x)?.to_vec();
    let rest: i64 = d[1..].iter().product();
    g.reshape(x, [d[0], rest])
}
