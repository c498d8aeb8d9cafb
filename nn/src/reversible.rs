//! Reversible residual stacks (Gomez et al., RevNet; Kitaev et al., Reformer §3): two
//! streams, `y1 = x1 + F(x2)`, `y2 = x2 + G(y1)`. The whole stack is one custom VJP whose
//! backward pass walks the blocks from the last to the first, rebuilding each block's
//! inputs from its outputs (`x2 = y2 - G(y1)`, `x1 = y1 - F(x2)`) and differentiating
//! one block at a time, so no block's activations are kept from the forward pass:
//! activation memory does not grow with depth.

use graph::{Graph, NodeId};

use crate::attention::MultiHeadAttentionW;
use crate::linear::LinearW;
use crate::mlp::MlpW;
use crate::norm::LayerNormW;

/// A declared layer whose weight nodes can be listed and replaced (to apply it inside the
/// custom VJP's sub-graphs, whose arguments stand for the weights).
pub trait Rebind: Sized {
    /// Appends the weight nodes, in a fixed order.
    fn nodes(&self, out: &mut Vec<NodeId>);
    /// The same layer with its weights taken from `ids` (in [`Rebind::nodes`]' order).
    fn rebind(&self, ids: &mut dyn Iterator<Item = NodeId>) -> Self;
}

fn next(ids: &mut dyn Iterator<Item = NodeId>) -> NodeId {
    ids.next().expect("rebind: as many ids as nodes")
}

impl Rebind for LinearW {
    fn nodes(&self, out: &mut Vec<NodeId>) {
        out.push(self.w);
        out.extend(self.b);
    }
    fn rebind(&self, ids: &mut dyn Iterator<Item = NodeId>) -> Self {
        LinearW {
            w: next(ids),
            b: self.b.map(|_| next(ids)),
        }
    }
}

impl Rebind for LayerNormW {
    fn nodes(&self, out: &mut Vec<NodeId>) {
        out.extend([self.gamma, self.beta]);
    }
    fn rebind(&self, ids: &mut dyn Iterator<Item = NodeId>) -> Self {
        LayerNormW {
            gamma: next(ids),
            beta: next(ids),
            eps: self.eps,
        }
    }
}

impl Rebind for MlpW {
    fn nodes(&self, out: &mut Vec<NodeId>) {
        self.fc.nodes(out);
        self.proj.nodes(out);
    }
    fn rebind(&self, ids: &mut dyn Iterator<Item = NodeId>) -> Self {
        MlpW {
            gelu: self.gelu,
            fc: self.fc.rebind(ids),
            proj: self.proj.rebind(ids),
        }
    }
}

impl Rebind for MultiHeadAttentionW {
    fn nodes(&self, out: &mut Vec<NodeId>) {
        for l in &self.qkv {
            l.nodes(out);
        }
        self.proj.nodes(out);
    }
    fn rebind(&self, ids: &mut dyn Iterator<Item = NodeId>) -> Self {
        MultiHeadAttentionW {
            cfg: self.cfg.clone(),
            qkv: self.qkv.iter().map(|l| l.rebind(ids)).collect(),
            proj: self.proj.rebind(ids),
        }
    }
}

/// One residual branch: `(graph, block index, block, extras, input) -> output`. `extras`
/// are the non-float values the branches share (a dropout seed, a key mask), as nodes of
/// the graph being built.
pub type Branch<'a, B> =
    dyn Fn(&mut Graph, usize, &B, &[NodeId], NodeId) -> graph::Result<NodeId> + 'a;

/// The two branches of every block.
pub struct RevBlocks<'a, B> {
    pub blocks: &'a [B],
    /// F (attention), applied to `x2`.
    pub f: &'a Branch<'a, B>,
    /// G (feed-forward), applied to `y1`.
    pub g: &'a Branch<'a, B>,
}

impl<B: Rebind> RevBlocks<'_, B> {
    fn weights(&self) -> Vec<Vec<NodeId>> {
        self.blocks
            .iter()
            .map(|b| {
                let mut v = Vec::new();
                b.nodes(&mut v);
                v
            })
            .collect()
    }

    /// The stack applied as ordinary ops (autodiff keeps every block's activations): the
    /// reference the reversible backward must reproduce.
    pub fn plain(
        &self,
        g: &mut Graph,
        x1: NodeId,
        x2: NodeId,
        extras: &[NodeId],
    ) -> graph::Result<(NodeId, NodeId)> {
        let (mut y1, mut y2) = (x1, x2);
        for (i, b) in self.blocks.iter().enumerate() {
            let fx = (self.f)(g, i, b, extras, y2)?;
            y1 = g.add(y1, fx)?;
            let gy = (self.g)(g, i, b, extras, y1)?;
            y2 = g.add(y2, gy)?;
        }
        Ok((y1, y2))
    }

    /// The stack as one custom VJP whose backward rebuilds the activations; `extras` must
    /// be non-float (they get no gradient).
    #[track_caller]
    pub fn reversible(
        &self,
        g: &mut Graph,
        x1: NodeId,
        x2: NodeId,
        extras: &[NodeId],
    ) -> graph::Result<(NodeId, NodeId)> {
        for &e in extras {
            if g.dtype(e)?.is_float() {
                return Err(graph::GraphError::Invalid(format!(
                    "reversible stack: extra {e} is {}; only non-float extras (seeds, masks)",
                    g.ty(e)?
                )));
            }
        }
        let ws = self.weights();
        let ne = extras.len();
        let mut ops = vec![x1, x2];
        ops.extend_from_slice(extras);
        ops.extend(ws.iter().flatten());
        let counts: Vec<usize> = ws.iter().map(Vec::len).collect();
        // Per block, its weights among the sub-graph's arguments.
        let split = move |xs: &[NodeId]| -> Vec<Vec<NodeId>> {
            let mut at = 2 + ne;
            counts
                .iter()
                .map(|&n| {
                    let v = xs[at..at + n].to_vec();
                    at += n;
                    v
                })
                .collect()
        };
        let split2 = split.clone();
        let outs = g.custom_vjp(
            "reversible",
            &ops,
            |sg, xs| {
                let wb = split(xs);
                let ex = &xs[2..2 + ne];
                let (mut y1, mut y2) = (xs[0], xs[1]);
                for (i, b) in self.blocks.iter().enumerate() {
                    let b = b.rebind(&mut wb[i].iter().copied());
                    let fx = (self.f)(sg, i, &b, ex, y2)?;
                    y1 = sg.add(y1, fx)?;
                    let gy = (self.g)(sg, i, &b, ex, y1)?;
                    y2 = sg.add(y2, gy)?;
                }
                Ok(vec![y1, y2])
            },
            |bg, xs, ys, cts| {
                // xs[0], xs[1] (the stack's inputs) are never read: they are rebuilt.
                let wb = split2(xs);
                let ex = xs[2..2 + ne].to_vec();
                let (mut y1, mut y2) = (ys[0], ys[1]);
                let (mut d1, mut d2) = (cts[0], cts[1]);
                let mut dws: Vec<Vec<NodeId>> = vec![Vec::new(); self.blocks.len()];
                for (i, b) in self.blocks.iter().enumerate().rev() {
                    let b = b.rebind(&mut wb[i].iter().copied());
                    // y2 = x2 + G(y1)
                    let gy = (self.g)(bg, i, &b, &ex, y1)?;
                    // Rebuilt inputs are constants to the per-block VJPs: gradients must not
                    // flow back through the reconstruction.
                    let x2 = bg.sub(y2, gy)?;
                    let x2 = bg.stop_gradient(x2)?;
                    let mut wrt = vec![y1];
                    wrt.extend(&wb[i]);
                    let dg = graph::autodiff::vjp(bg, &[(gy, d2)], &wrt)?;
                    let d1n = bg.add(d1, dg[0])?;
                    // y1 = x1 + F(x2)
                    let fx = (self.f)(bg, i, &b, &ex, x2)?;
                    let x1 = bg.sub(y1, fx)?;
                    let x1 = bg.stop_gradient(x1)?;
                    wrt[0] = x2;
                    let df = graph::autodiff::vjp(bg, &[(fx, d1n)], &wrt)?;
                    let d2n = bg.add(d2, df[0])?;
                    dws[i] = dg[1..]
                        .iter()
                        .zip(&df[1..])
                        .map(|(&a, &c)| bg.add(a, c))
                        .collect::<graph::Result<_>>()?;
                    // The rebuilt inputs leave with this block's cotangents: XLA cannot
                    // hoist the whole reconstruction chain ahead of the gradients (which
                    // would keep every block's inputs alive again).
                    let v = bg.optimization_barrier(&[x1, x2, d1n, d2n])?;
                    (y1, y2, d1, d2) = (v[0], v[1], v[2], v[3]);
                }
                let mut res = vec![Some(d1), Some(d2)];
                res.extend((0..ne).map(|_| None));
                res.extend(dws.into_iter().flatten().map(Some));
                Ok(res)
            },
        )?;
        Ok((outs[0], outs[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linear::Linear;
    use crate::param::Params;
    use graph::autodiff::grad;
    use graph::interp::{eval, HostTensor};
    use graph::{DType, TensorType};

    impl Rebind for (LinearW, LinearW) {
        fn nodes(&self, out: &mut Vec<NodeId>) {
            self.0.nodes(out);
            self.1.nodes(out);
        }
        fn rebind(&self, ids: &mut dyn Iterator<Item = NodeId>) -> Self {
            (self.0.rebind(ids), self.1.rebind(ids))
        }
    }

    /// Two blocks of `F(x) = tanh(x W1)`, `G(y) = tanh(y W2) * mask`, on `x (3, 4)`.
    #[test]
    fn reversible_gradients_equal_the_plain_stack_and_inputs_are_rebuilt() {
        let mut g = Graph::new("rev");
        let mut p = Params::new();
        let blocks: Vec<(LinearW, LinearW)> = (0..2)
            .map(|i| {
                p.scope(&format!("h{i}"), |p| {
                    let a = Linear::new([4]).declare(&mut g, p, "f", 4)?;
                    let b = Linear::new([4]).declare(&mut g, p, "g", 4)?;
                    Ok((a, b))
                })
            })
            .collect::<graph::Result<_>>()
            .unwrap();
        let x1 = g.input("x1", TensorType::f32([3, 4])).unwrap();
        let x2 = g.input("x2", TensorType::f32([3, 4])).unwrap();
        let mask = g
            .input("mask", TensorType::new(DType::Bool, [3, 4]))
            .unwrap();
        let f = |g: &mut Graph, _: usize, b: &(LinearW, LinearW), _: &[NodeId], x: NodeId| {
            let y = b.0.apply(g, x)?;
            g.tanh(y)
        };
        let gg = |g: &mut Graph, _: usize, b: &(LinearW, LinearW), ex: &[NodeId], x: NodeId| {
            let y = b.1.apply(g, x)?;
            let y = g.tanh(y)?;
            let z = g.zeros_like(y)?;
            g.select(ex[0], y, z)
        };
        let stack = RevBlocks {
            blocks: &blocks,
            f: &f,
            g: &gg,
        };
        let rev = stack.reversible(&mut g, x1, x2, &[mask]).unwrap();
        // The backward graph never reads the stack's inputs (arguments 0 and 1).
        let node = g.nodes.iter().find_map(|n| match &n.op {
            graph::Op::CustomVjp(c) => Some(c.clone()),
            _ => None,
        });
        let bw = &node.unwrap().backward;
        let args = bw.args();
        let used = |a: NodeId| bw.nodes.iter().any(|n| n.inputs.contains(&a));
        assert!(!used(args[0]) && !used(args[1]));
        assert!(used(args[args.len() - 1]));
        let plain = stack.plain(&mut g, x1, x2, &[mask]).unwrap();
        let w: Vec<NodeId> = g.parameters();
        let mut wrt = w.clone();
        wrt.extend([x1, x2]);
        let loss = |g: &mut Graph, (a, b): (NodeId, NodeId)| -> graph::Result<NodeId> {
            let a2 = g.mul(a, a)?;
            let s = g.sin(b)?;
            let t = g.add(a2, s)?;
            g.sum_all(t)
        };
        let lr = loss(&mut g, rev).unwrap();
        let lp = loss(&mut g, plain).unwrap();
        let (gr, dr) = grad(&g, lr, &wrt).unwrap();
        let (gp, dp) = grad(&g, lp, &wrt).unwrap();
        let mut rng = graph::gradcheck::Lcg::new(4);
        let args: Vec<HostTensor> = gr
            .args()
            .iter()
            .map(|&a| {
                let t = gr.ty(a).unwrap().clone();
                let n = t.shape.num_elements() as usize;
                let data = (0..n)
                    .map(|i| match t.dtype {
                        DType::Bool => (i % 3 != 0) as i32 as f64,
                        _ => rng.next(-1.0, 1.0),
                    })
                    .collect();
                HostTensor::new(t, data).unwrap()
            })
            .collect();
        let run = |mut h: Graph, outs: &[NodeId]| {
            h.set_outputs(outs).unwrap();
            graph::verify(&h).unwrap();
            eval(&h, &args).unwrap()
        };
        let a = run(gr, &dr);
        let b = run(gp, &dp);
        assert_eq!(a.len(), 2 * 2 * 2 + 2); // 8 weights (w, b per linear) + x1, x2
        for (ga, gb) in a.iter().zip(&b) {
            for (u, v) in ga.data.iter().zip(&gb.data) {
                assert!((u - v).abs() <= 1e-9 * (1.0 + v.abs()), "{u} vs {v}");
            }
            assert!(gb.data.iter().any(|v| v.abs() > 1e-3));
        }
    }
}
