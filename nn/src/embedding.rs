//! Row lookup: integer ids `(..)` to vectors `(.., d)`.

use graph::{DType, Graph, NodeId, TensorType};

use crate::param::{axis::Axis, Init, Weights};

#[derive(Debug, Clone)]
pub struct Embedding {
    pub vocab: i64,
    pub dim: i64,
    pub init: Init,
    /// Logical axes of the table; empty: none.
    pub axes: Vec<Axis>,
}

impl Embedding {
    pub fn new(vocab: i64, dim: i64, init: Init) -> Self {
        Embedding {
            vocab,
            dim,
            init,
            axes: Vec::new(),
        }
    }
    pub fn axes(mut self, axes: &[Axis]) -> Self {
        self.axes = axes.to_vec();
        self
    }

    /// Declares the table `(vocab, dim)` as weight `name`.
    #[track_caller]
    pub fn declare<W: Weights + ?Sized>(
        &self,
        g: &mut Graph,
        w: &mut W,
        name: &str,
    ) -> graph::Result<NodeId> {
        w.weight(
            g,
            name,
            TensorType::f32([self.vocab, self.dim]),
            self.init,
            &self.axes,
        )
    }
}

/// `table[ids]`; float ids are converted to i32 first.
#[track_caller]
pub fn lookup(g: &mut Graph, table: NodeId, ids: NodeId) -> graph::Result<NodeId> {
    let ids = if g.dtype(ids)?.is_int() {
        ids
    } else {
        g.convert(ids, DType::I32)?
    };
    g.gather(table, ids)
}
