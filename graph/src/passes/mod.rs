//! Passes `Graph -> Graph` over a whole step (forward + backward + update):
//! [`remat`] recomputes forward values in the backward pass instead of
//! keeping them, [`mixed_precision`] runs dots and convolutions on bf16
//! operands with f32 accumulation. Both read the region tags of
//! [`region`] and return a report with the map from old to new node ids.
//!
//! The trainer applies them to the finished step graph:
//!
//! ```ignore
//! let (mut g, grads) = graph::autodiff::grad(&fwd, loss, &params)?;
//! let upd = opt.apply(&mut g, &params, &grads, &state, step, None)?;   // f32
//! g.set_outputs(&outputs)?;
//! let (g, _) = graph::mixed_precision(&g, &PrecisionPolicy::bf16())?;
//! let (g, report) = graph::remat(&g, &RematPolicy::Full)?;
//! ```
//!
//! - After `grad`, so that mixed precision reaches the backward dots too
//!   (and can reorder the weight-gradient dots XLA CPU cannot run in bf16),
//!   and remat has a backward pass to move work into.
//! - Mixed precision before remat: remat then clones the casts with the
//!   dots, its byte estimates see the final dtypes, and SaveDots keeps the
//!   dots that are really emitted.
//! - After the optimizer and `set_outputs`: neither pass touches the
//!   optimizer (it has no dots and no region tags), the outputs tell remat
//!   what is live, and no node id has to be remapped: both passes keep the
//!   arguments and outputs in order, so a step program's feeds and
//!   donation pairs (by argument and output index) stay valid. Running them
//!   earlier works too; remap held ids through the reports' `map`.
//!
//! Every pass (these two, [`crate::autodiff::grad`] / `vjp`, and [`vmap`]
//! on the nodes it adds) runs [`crate::verify`] on its result, in all
//! builds: an invalid graph is a [`crate::GraphError::PassOutput`] naming
//! the pass, not a crash in XLA. It costs about 1 ms on a GPT-2-small step
//! graph (9k nodes), less than each pass itself.

pub mod lowrank;
pub mod precision;
pub mod quantize;
pub mod region;
pub mod remat;
#[cfg(test)]
mod tests;
pub mod verify;
pub mod vmap;

pub use precision::{mixed_precision, PrecisionPolicy, PrecisionReport};
pub use quantize::{dequantize_args, output_channel_axes, Dequantize, QuantArg};
pub use region::{node_bytes, residuals, NodeTag, RegionId, Regions};
pub use remat::{
    estimate, remat, remat_within, RegionEstimate, RegionPolicy, RegionRemat, RematEstimate,
    RematPolicy, RematReport,
};
pub use vmap::{vmap, VmapSpec, Vmapped};

use crate::error::{GraphError, Result};
use crate::ir::{Graph, Location, NodeId};
use crate::op::Op;

/// `out` if it verifies. Otherwise an error naming `pass`, or its input
/// when that was invalid already (checked only then: the blame is cheap).
pub(crate) fn checked(pass: &'static str, input: &Graph, out: Graph) -> Result<Graph> {
    match crate::verify(&out) {
        Ok(()) => Ok(out),
        Err(err) => Err(match crate::verify(input) {
            Err(err) => GraphError::PassInput { pass, err },
            Ok(()) => GraphError::PassOutput { pass, err },
        }),
    }
}

/// Copies a graph node by node into a new one, keeping names, locations
/// and region tags; passes add their own nodes in between.
pub(crate) struct Rebuild<'a> {
    pub src: &'a Graph,
    pub out: Graph,
    /// New id of each source node copied so far.
    pub map: Vec<NodeId>,
}

impl<'a> Rebuild<'a> {
    pub fn new(src: &'a Graph) -> Self {
        let mut out = Graph::new(src.name.clone());
        out.regions.names.clone_from(&src.regions.names);
        Rebuild {
            src,
            out,
            map: Vec::with_capacity(src.len()),
        }
    }

    /// Appends a node of the pass's own.
    pub fn add(
        &mut self,
        op: Op,
        inputs: Vec<NodeId>,
        loc: Location,
        tag: Option<NodeTag>,
    ) -> Result<NodeId> {
        let id = self.out.add_node(op, inputs, loc)?;
        self.out.regions.set(id, tag);
        Ok(id)
    }

    /// Copies the next source node with `op` and already mapped `inputs`.
    pub fn copy_as(&mut self, op: Op, inputs: Vec<NodeId>) -> Result<NodeId> {
        let old = NodeId(self.map.len() as u32);
        let n = self.src.node(old)?;
        let id = self.add(op, inputs, n.loc.clone(), self.src.regions.tag(old))?;
        self.out.nodes[id.index()].name.clone_from(&n.name);
        self.map.push(id);
        Ok(id)
    }

    /// The new graph with the source's outputs, and the id map.
    pub fn finish(mut self) -> Result<(Graph, Vec<NodeId>)> {
        let outs: Vec<NodeId> = self
            .src
            .outputs
            .iter()
            .map(|o| self.map[o.index()])
            .collect();
        self.out.set_outputs(&outs)?;
        Ok((self.out, self.map))
    }
}
