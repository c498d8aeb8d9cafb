//! Repeated blocks: a model marks its stack of identical blocks once, and whoever builds
//! the step decides how the stack is laid out. By default the blocks run one after the
//! other, each a region (the unit remat recomputes) with parameters under `{prefix}{i}`; the
//! trainer's pipeline installs a [`Repeat`] that stage-stacks and schedules them instead.

use std::cell::RefCell;

use graph::{Graph, NodeId};

use crate::param::Params;
pub use crate::param::{ApplyFn, DeclareFn, Repeat, RepeatHook};

/// `count` blocks on `x`: `declare` makes one block's parameters, `apply` runs a declared
/// block. Blocks are named `{prefix}0`, `{prefix}1`, ...
pub fn repeated<P>(
    g: &mut Graph,
    p: &mut Params,
    prefix: &str,
    count: usize,
    x: NodeId,
    mut declare: impl FnMut(&mut Graph, &mut Params) -> graph::Result<P>,
    mut apply: impl FnMut(&mut Graph, &P, NodeId) -> graph::Result<NodeId>,
) -> graph::Result<NodeId> {
    let layers: RefCell<Vec<Option<P>>> = RefCell::new((0..count).map(|_| None).collect());
    let mut decl = |g: &mut Graph, p: &mut Params, i: usize| -> graph::Result<()> {
        let v = declare(g, p)?;
        layers.borrow_mut()[i] = Some(v);
        Ok(())
    };
    let mut app = |g: &mut Graph, i: usize, x: NodeId| -> graph::Result<NodeId> {
        let l = layers.borrow();
        let l = l[i].as_ref().ok_or_else(|| {
            graph::GraphError::Invalid(format!("block {prefix}{i} applied before it was declared"))
        })?;
        apply(g, l, x)
    };
    match p.repeat.0.clone() {
        Some(r) => r.repeat(g, p, prefix, count, x, &mut decl, &mut app),
        None => Sequential.repeat(g, p, prefix, count, x, &mut decl, &mut app),
    }
}

/// One block after the other; each block's computation is a region.
pub struct Sequential;

impl Repeat for Sequential {
    fn repeat(
        &self,
        g: &mut Graph,
        p: &mut Params,
        prefix: &str,
        count: usize,
        mut x: NodeId,
        declare: &mut DeclareFn,
        apply: &mut ApplyFn,
    ) -> graph::Result<NodeId> {
        for i in 0..count {
            let name = format!("{prefix}{i}");
            p.scope(&name, |p| declare(g, p, i))?;
            x = g.region(&name, |g| apply(g, i, x))?;
        }
        Ok(x)
    }
}
