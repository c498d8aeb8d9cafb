//! Recurrent layers on the graph's scan op (so their gradient is the scan's VJP).
//! Input `[batch, time, features]`; Keras gate layouts, so weights map one to one.

use graph::{Graph, NodeId, TensorType};
use models::Init;

use super::layers::{Activation, Ctx, Layer, Linear};

/// Which cell a [`Recurrent`] layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// Gates i, f, c, o.
    Lstm,
    /// Gates z, r, h; reset applied after the recurrent matmul (Keras `reset_after=True`).
    Gru,
}

/// `LSTM(units)` or `GRU(units)`.
#[derive(Debug, Clone)]
pub struct Recurrent {
    cell: Cell,
    pub units: usize,
    pub return_sequences: bool,
    pub activation: Activation,
    pub input_shape: Option<Vec<i64>>,
}

/// `LSTM::new(128)`.
pub struct LSTM;
/// `GRU::new(128)`.
pub struct GRU;

impl LSTM {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(units: usize) -> Recurrent {
        Recurrent {
            cell: Cell::Lstm,
            units,
            return_sequences: false,
            activation: Linear,
            input_shape: None,
        }
    }
}

impl GRU {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(units: usize) -> Recurrent {
        Recurrent {
            cell: Cell::Gru,
            ..LSTM::new(units)
        }
    }
}

impl Recurrent {
    /// Output every step `[batch, time, units]` instead of the last `[batch, units]`.
    pub fn return_sequences(mut self, yes: bool) -> Self {
        self.return_sequences = yes;
        self
    }
    pub fn input_shape<const N: usize>(mut self, s: [i64; N]) -> Self {
        self.input_shape = Some(s.to_vec());
        self
    }
    fn gates(&self) -> i64 {
        match self.cell {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// Columns `[k u, (k + 1) u)` of `z [batch, gates * u]`.
#[track_caller]
fn gate(g: &mut Graph, z: NodeId, k: i64, u: i64) -> graph::Result<NodeId> {
    g.slice_dim(z, 1, k * u, (k + 1) * u)
}

/// One LSTM step: `xw` is `x W + b` of this step.
fn lstm_step(
    g: &mut Graph,
    rk: NodeId,
    h: NodeId,
    c: NodeId,
    xw: NodeId,
    u: i64,
) -> graph::Result<(NodeId, NodeId)> {
    let hu = g.matmul(h, rk)?;
    let z = g.add(hu, xw)?; // (B, 4U)
    let i = gate(g, z, 0, u)?;
    let i = g.sigmoid(i)?;
    let f = gate(g, z, 1, u)?;
    let f = g.sigmoid(f)?;
    let cc = gate(g, z, 2, u)?;
    let cc = g.tanh(cc)?;
    let o = gate(g, z, 3, u)?;
    let o = g.sigmoid(o)?;
    let fc = g.mul(f, c)?;
    let ic = g.mul(i, cc)?;
    let c = g.add(fc, ic)?;
    let tc = g.tanh(c)?;
    let h = g.mul(o, tc)?;
    Ok((h, c))
}

/// One GRU step: `xw` is `x W + b_in`, `rb` the recurrent bias.
fn gru_step(
    g: &mut Graph,
    rk: NodeId,
    rb: NodeId,
    h: NodeId,
    xw: NodeId,
    u: i64,
) -> graph::Result<NodeId> {
    let hu = g.matmul(h, rk)?;
    let hu = g.add(hu, rb)?; // (B, 3U)
    let xz = gate(g, xw, 0, u)?;
    let hz = gate(g, hu, 0, u)?;
    let z = g.add(xz, hz)?;
    let z = g.sigmoid(z)?;
    let xr = gate(g, xw, 1, u)?;
    let hr = gate(g, hu, 1, u)?;
    let r = g.add(xr, hr)?;
    let r = g.sigmoid(r)?;
    let xh = gate(g, xw, 2, u)?;
    let hh = gate(g, hu, 2, u)?;
    let rh = g.mul(r, hh)?;
    let cand = g.add(xh, rh)?;
    let cand = g.tanh(cand)?;
    // h' = z h + (1 - z) cand = cand + z (h - cand)
    let d = g.sub(h, cand)?;
    let zd = g.mul(z, d)?;
    g.add(cand, zd)
}

impl Layer for Recurrent {
    fn kind(&self) -> &'static str {
        match self.cell {
            Cell::Lstm => "LSTM",
            Cell::Gru => "GRU",
        }
    }
    fn base_name(&self) -> &'static str {
        match self.cell {
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }
    fn input_shape(&self) -> Option<Vec<i64>> {
        self.input_shape.clone()
    }
    fn activation(&self) -> Activation {
        self.activation
    }
    fn call(&self, cx: &mut Ctx, x: NodeId) -> graph::Result<NodeId> {
        let d = cx.g.dims(x)?.to_vec();
        if d.len() != 3 {
            return Err(graph::GraphError::Invalid(format!(
                "{} needs (batch, time, features) input, got {d:?}",
                self.kind()
            )));
        }
        let (b, t, f) = (d[0], d[1], d[2]);
        let u = self.units as i64;
        let n = self.gates() * u;
        let kernel = cx.weight(
            "kernel",
            TensorType::f32([f, n]),
            Init::GlorotUniform {
                fan_in: f as usize,
                fan_out: n as usize,
            },
        )?;
        let rk = cx.weight(
            "recurrent_kernel",
            TensorType::f32([u, n]),
            Init::GlorotUniform {
                fan_in: u as usize,
                fan_out: n as usize,
            },
        )?;
        let bias_ty = match self.cell {
            Cell::Lstm => TensorType::f32([n]),
            Cell::Gru => TensorType::f32([2, n]),
        };
        let bias = cx.weight("bias", bias_ty, Init::Zeros)?;
        let g = &mut *cx.g;
        let (b_in, b_rec) = match self.cell {
            Cell::Lstm => (bias, None),
            Cell::Gru => {
                let b0 = g.slice_dim(bias, 0, 0, 1)?;
                let b1 = g.slice_dim(bias, 0, 1, 2)?;
                (g.reshape(b0, [n])?, Some(g.reshape(b1, [n])?))
            }
        };
        // The input projection of all steps in one matmul, outside the loop.
        let xw = g.matmul(x, kernel)?;
        let xw = g.add(xw, b_in)?; // (B, T, G*U)
        let xw = g.transpose(xw, &[1, 0, 2])?; // (T, B, G*U)
        let h0 = g.full(0.0, TensorType::f32([b, u]))?;
        let seq = self.return_sequences;
        let out = match self.cell {
            Cell::Lstm => {
                let c0 = g.full(0.0, TensorType::f32([b, u]))?;
                g.scan(t, &[rk], &[h0, c0], &[xw], false, |g, a| {
                    let (h, c) = lstm_step(g, a.consts[0], a.carries[0], a.carries[1], a.xs[0], u)?;
                    Ok((vec![h, c], if seq { vec![h] } else { vec![] }))
                })?
            }
            Cell::Gru => {
                let rb = b_rec.expect("gru recurrent bias");
                g.scan(t, &[rk, rb], &[h0], &[xw], false, |g, a| {
                    let h = gru_step(g, a.consts[0], a.consts[1], a.carries[0], a.xs[0], u)?;
                    Ok((vec![h], if seq { vec![h] } else { vec![] }))
                })?
            }
        };
        if seq {
            g.transpose(out.ys[0], &[1, 0, 2]) // (B, T, U)
        } else {
            Ok(out.carries[0])
        }
    }
}
