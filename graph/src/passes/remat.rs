//! Rematerialization: forward values of a region that the backward pass
//! reads are recomputed there from the region's inputs instead of being
//! kept alive from the forward pass (JAX's `checkpoint`).
//!
//! Works on a graph that already holds the backward pass (the output of
//! [`crate::autodiff::grad`], possibly with the optimizer appended): forward
//! nodes carry [`NodeTag::Forward`], backward nodes [`NodeTag::Backward`].
//! For each region, a forward value is *kept* when the policy saves it, when
//! something outside the region uses it in the forward pass (the region's
//! outputs), or when it is a graph output. Every other value the backward
//! pass reads is cloned, with the clones of its operands, right before the
//! first backward node that reads one of them.
//!
//! The clones read the region's inputs through an `optimization_barrier`
//! that also takes the *trigger*: the last cotangent computed before that
//! point. Later backward nodes read the trigger from the barrier too, so XLA
//! keeps it there (it drops unused barrier operands) and cannot run the
//! clones before the backward pass reaches the region, nor merge them with
//! the forward nodes (CSE). XLA CPU removes barriers only after scheduling.
//!
//! Regions are flat here: a node belongs to its innermost region, and a
//! value an inner region hands to its outer one is that inner region's
//! output (kept). Name the innermost regions in [`RematPolicy::PerRegion`].

use super::region::{constant_like, is_free, node_bytes, residuals, users};
use super::{NodeTag, Rebuild, RegionId};
use crate::error::{GraphError, Result};
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// What one region keeps for the backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegionPolicy {
    /// Keep every forward value the backward pass reads.
    None,
    /// Keep outputs of dot_general and convolution, recompute the rest.
    SaveDots,
    /// Keep only the region's inputs and outputs, recompute the rest.
    Full,
}

/// The policy of a whole step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RematPolicy {
    /// Change nothing.
    None,
    /// [`RegionPolicy::Full`] for every region.
    Full,
    /// [`RegionPolicy::SaveDots`] for every region.
    SaveDots,
    /// Per region, the least recomputation whose static estimate of kept
    /// bytes ([`RematEstimate::plan_for_budget`]) fits in this many bytes.
    Budget(u64),
    /// An explicit choice per region name; regions not listed keep everything.
    PerRegion(BTreeMap<String, RegionPolicy>),
}

/// What remat did to one region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRemat {
    pub name: String,
    pub policy: RegionPolicy,
    /// Forward nodes cloned into the backward pass (0: not rematerialized).
    pub cloned: usize,
    /// Static estimate of the bytes the region keeps for the backward pass.
    pub kept_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RematReport {
    /// Every region of the graph, in id order.
    pub regions: Vec<RegionRemat>,
    pub cloned_nodes: usize,
    /// Forward values the backward pass reads ([`residuals`]), before and after.
    pub residuals_before: usize,
    pub residuals_after: usize,
    /// Their bytes, before and after.
    pub residual_bytes_before: u64,
    pub residual_bytes_after: u64,
    /// New id of each node of the input graph (its original, not a clone).
    pub map: Vec<NodeId>,
}

impl RematReport {
    /// Names of the regions that got clones.
    pub fn rematerialized(&self) -> Vec<&str> {
        self.regions
            .iter()
            .filter(|r| r.cloned > 0)
            .map(|r| r.name.as_str())
            .collect()
    }
}

impl fmt::Display for RematReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "remat: {} nodes cloned; residuals {} -> {} ({} -> {} bytes)",
            self.cloned_nodes,
            self.residuals_before,
            self.residuals_after,
            self.residual_bytes_before,
            self.residual_bytes_after
        )?;
        for r in &self.regions {
            writeln!(
                f,
                "  {:<24} {:?}: {} cloned, keeps {} bytes",
                r.name, r.policy, r.cloned, r.kept_bytes
            )?;
        }
        Ok(())
    }
}

/// Static estimate of the bytes each region keeps for the backward pass
/// under each policy (forward values the backward reads, plus the inputs
/// recomputation reads; arguments and constants are not counted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionEstimate {
    pub name: String,
    pub none: u64,
    pub save_dots: u64,
    pub full: u64,
}

impl RegionEstimate {
    pub fn bytes(&self, p: RegionPolicy) -> u64 {
        match p {
            RegionPolicy::None => self.none,
            RegionPolicy::SaveDots => self.save_dots,
            RegionPolicy::Full => self.full,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RematEstimate {
    pub regions: Vec<RegionEstimate>,
    /// Bytes of forward values outside every region that the backward reads.
    pub outside: u64,
}

impl RematEstimate {
    /// Estimated kept bytes of the step under a per-region choice (a
    /// region's inputs may count in two regions: an upper bound).
    pub fn total(&self, plan: &BTreeMap<String, RegionPolicy>) -> u64 {
        self.outside
            + self
                .regions
                .iter()
                .map(|r| r.bytes(*plan.get(&r.name).unwrap_or(&RegionPolicy::None)))
                .sum::<u64>()
    }

    /// Per-region choices from keeping everything to recomputing everything,
    /// one region changing per step: regions move to SaveDots, then to
    /// Full, biggest estimated saving first. The estimate shrinks along it.
    pub fn ladder(&self) -> Vec<BTreeMap<String, RegionPolicy>> {
        let mut plan: BTreeMap<String, RegionPolicy> = self
            .regions
            .iter()
            .map(|r| (r.name.clone(), RegionPolicy::None))
            .collect();
        let mut out = vec![plan.clone()];
        for level in [RegionPolicy::SaveDots, RegionPolicy::Full] {
            let saving = |r: &RegionEstimate, plan: &BTreeMap<String, RegionPolicy>| {
                r.bytes(plan[&r.name]).saturating_sub(r.bytes(level))
            };
            let mut order: Vec<&RegionEstimate> = self.regions.iter().collect();
            order.sort_by_key(|r| std::cmp::Reverse(saving(r, &plan)));
            for r in order {
                if saving(r, &plan) > 0 {
                    plan.insert(r.name.clone(), level);
                    out.push(plan.clone());
                }
            }
        }
        out
    }

    /// The first choice of [`Self::ladder`] whose estimate fits in `budget`
    /// bytes, else the last one (recompute all it can).
    pub fn plan_for_budget(&self, budget: u64) -> BTreeMap<String, RegionPolicy> {
        let ladder = self.ladder();
        let fits = ladder.iter().position(|p| self.total(p) <= budget);
        ladder[fits.unwrap_or(ladder.len() - 1)].clone()
    }
}

/// Remat with the least recomputation whose *measured* memory fits in
/// `budget`: `measure` returns the bytes a graph needs (the trainer lowers
/// and compiles it and reads `exe.memory_stats()?.temp_bytes`). Binary
/// search along [`RematEstimate::ladder`], assuming memory shrinks along
/// it, with about log2(2 x regions) calls of `measure`. Returns the graph,
/// its report and measured bytes; when nothing fits, the last step of the
/// ladder (the caller compares the bytes with its budget).
pub fn remat_within<E: From<GraphError>>(
    g: &Graph,
    budget: u64,
    mut measure: impl FnMut(&Graph) -> std::result::Result<u64, E>,
) -> std::result::Result<(Graph, RematReport, u64), E> {
    let ladder = estimate(g)?.ladder();
    let mut run = |i: usize| -> std::result::Result<(Graph, RematReport, u64), E> {
        let (r, report) = remat(g, &RematPolicy::PerRegion(ladder[i].clone()))?;
        let bytes = measure(&r)?;
        Ok((r, report, bytes))
    };
    // Steps before `lo` do not fit, steps after `hi` do; `best` is the
    // fitting step with the smallest index measured, `last` the last step.
    let last_step = ladder.len() - 1;
    let (mut lo, mut hi) = (0, last_step);
    let (mut best, mut last) = (None, None);
    while lo <= hi {
        let mid = (lo + hi) / 2;
        let r = run(mid)?;
        if r.2 <= budget {
            best = Some(r);
            if mid == 0 {
                break;
            }
            hi = mid - 1;
        } else {
            if mid == last_step {
                last = Some(r);
            }
            lo = mid + 1;
        }
    }
    match (best, last) {
        (Some(r), _) | (None, Some(r)) => Ok(r),
        (None, None) => run(last_step),
    }
}

/// How one region is rematerialized.
struct RegionPlan {
    region: RegionId,
    policy: RegionPolicy,
    /// Forward nodes to clone, in order.
    clones: Vec<NodeId>,
    /// Operands of the clones that are not cloned: through the barrier.
    leaves: Vec<NodeId>,
    /// The first backward node that reads a clone.
    first_use: usize,
    /// The last cotangent computed before `first_use` that is read after it.
    trigger: Option<NodeId>,
    kept_bytes: u64,
}

/// Facts about the graph every region's analysis shares.
struct Analysis<'a> {
    g: &'a Graph,
    users: Vec<Vec<NodeId>>,
    live: Vec<bool>,
    /// Constants, iotas and what is computed from them alone (XLA folds
    /// these; they are read directly, never cloned or kept).
    constant: Vec<bool>,
    /// Backward nodes downstream of the first one (the seed cotangent
    /// `grad` builds): values only the backward pass can compute.
    flow: Vec<bool>,
    outputs: BTreeSet<NodeId>,
}

impl<'a> Analysis<'a> {
    fn new(g: &'a Graph) -> Self {
        let users = users(g);
        let mut live = vec![g.outputs.is_empty(); g.len()];
        for o in &g.outputs {
            live[o.index()] = true;
        }
        for i in (0..g.len()).rev() {
            if live[i] {
                for x in &g.nodes[i].inputs {
                    live[x.index()] = true;
                }
            }
        }
        let mut flow = vec![false; g.len()];
        let mut seen_seed = false;
        for (i, n) in g.nodes.iter().enumerate() {
            if !g.regions.is_backward(NodeId(i as u32)) {
                continue;
            }
            flow[i] = !seen_seed || n.inputs.iter().any(|x| flow[x.index()]);
            seen_seed = true;
        }
        Analysis {
            g,
            users,
            live,
            constant: constant_like(g),
            flow,
            outputs: g.outputs.iter().copied().collect(),
        }
    }

    fn is_backward(&self, id: NodeId) -> bool {
        self.g.regions.is_backward(id)
    }

    fn plan(&self, region: RegionId, policy: RegionPolicy) -> RegionPlan {
        let g = self.g;
        let n = g.len();
        let member = |i: usize| {
            g.regions.forward_region(NodeId(i as u32)) == Some(region)
                && !is_free(&g.nodes[i].op)
                && !self.constant[i]
        };
        // Kept values, in order (a get_tuple_element is kept with its tuple).
        let mut kept = vec![false; n];
        for i in 0..n {
            if !member(i) {
                continue;
            }
            let node = &g.nodes[i];
            let id = NodeId(i as u32);
            kept[i] = policy == RegionPolicy::None
                || self.outputs.contains(&id)
                || self.users[i]
                    .iter()
                    .any(|&u| !self.is_backward(u) && !member(u.index()))
                || (policy == RegionPolicy::SaveDots
                    && matches!(node.op, Op::DotGeneral { .. } | Op::Conv(_)))
                || match node.op {
                    Op::GetTupleElement(_) => {
                        let t = node.inputs[0].index();
                        !member(t) || kept[t]
                    }
                    _ => false,
                };
        }
        let recompute = |i: usize| member(i) && !kept[i];
        // Values the backward reads that are not kept, and their operands.
        let mut first_use = usize::MAX;
        let mut in_clones = vec![false; n];
        let mut stack = Vec::new();
        for (i, users) in self.users.iter().enumerate() {
            if !recompute(i) {
                continue;
            }
            let bw = users.iter().filter(|&&u| self.is_backward(u));
            if let Some(u) = bw.map(|u| u.index()).min() {
                first_use = first_use.min(u);
                in_clones[i] = true;
                stack.push(i);
            }
        }
        let mut leaves = BTreeSet::new();
        while let Some(i) = stack.pop() {
            for x in &g.nodes[i].inputs {
                let x = x.index();
                if recompute(x) {
                    if !in_clones[x] {
                        in_clones[x] = true;
                        stack.push(x);
                    }
                } else if !self.constant[x] {
                    leaves.insert(NodeId(x as u32));
                }
            }
        }
        let clones: Vec<NodeId> = (0..n)
            .filter(|&i| in_clones[i])
            .map(|i| NodeId(i as u32))
            .collect();
        // The trigger goes through the barrier and the backward reads it
        // from there, so XLA cannot drop it from the barrier.
        let trigger = if clones.is_empty() {
            None
        } else {
            (0..first_use).rev().map(|j| NodeId(j as u32)).find(|&j| {
                let i = j.index();
                self.flow[i]
                    && !self.constant[i]
                    && self.live[i]
                    && g.nodes[i].ty.as_tensor().is_some()
                    && self.users[i].iter().any(|u| u.index() >= first_use)
            })
        };
        // Kept bytes: kept values the backward reads, plus the leaves.
        let mut counted: BTreeSet<NodeId> = leaves
            .iter()
            .copied()
            .filter(|&x| !is_free(&g.nodes[x.index()].op))
            .collect();
        for (i, users) in self.users.iter().enumerate() {
            if member(i) && kept[i] && users.iter().any(|&u| self.is_backward(u)) {
                counted.insert(NodeId(i as u32));
            }
        }
        RegionPlan {
            region,
            policy,
            clones,
            leaves: leaves.into_iter().collect(),
            first_use,
            trigger,
            kept_bytes: counted.iter().map(|&x| node_bytes(g, x)).sum(),
        }
    }
}

/// The static estimate of kept bytes per region and policy.
pub fn estimate(g: &Graph) -> Result<RematEstimate> {
    let a = Analysis::new(g);
    let regions = g
        .regions
        .ids()
        .map(|r| RegionEstimate {
            name: g.regions.name(r).to_string(),
            none: a.plan(r, RegionPolicy::None).kept_bytes,
            save_dots: a.plan(r, RegionPolicy::SaveDots).kept_bytes,
            full: a.plan(r, RegionPolicy::Full).kept_bytes,
        })
        .collect();
    let outside = residuals(g)
        .into_iter()
        .filter(|&x| g.regions.forward_region(x).is_none())
        .map(|x| node_bytes(g, x))
        .sum();
    Ok(RematEstimate { regions, outside })
}

fn region_policies(g: &Graph, policy: &RematPolicy) -> Result<BTreeMap<String, RegionPolicy>> {
    let all = |p: RegionPolicy| {
        g.regions
            .names
            .iter()
            .map(|n| (n.clone(), p))
            .collect::<BTreeMap<_, _>>()
    };
    Ok(match policy {
        RematPolicy::None => all(RegionPolicy::None),
        RematPolicy::Full => all(RegionPolicy::Full),
        RematPolicy::SaveDots => all(RegionPolicy::SaveDots),
        RematPolicy::Budget(b) => estimate(g)?.plan_for_budget(*b),
        RematPolicy::PerRegion(m) => {
            for name in m.keys() {
                if g.regions.id(name).is_none() {
                    return Err(GraphError::Invalid(format!(
                        "remat policy names region `{name}`, which graph `{}` does not have \
                         (regions: {:?})",
                        g.name, g.regions.names
                    )));
                }
            }
            m.clone()
        }
    })
}

/// Rematerializes the regions of a forward + backward graph under `policy`.
/// The result computes the same outputs (bit for bit on the interpreter).
pub fn remat(g: &Graph, policy: &RematPolicy) -> Result<(Graph, RematReport)> {
    let choice = region_policies(g, policy)?;
    let a = Analysis::new(g);
    let plans: Vec<RegionPlan> = g
        .regions
        .ids()
        .map(|r| {
            let p = *choice.get(g.regions.name(r)).unwrap_or(&RegionPolicy::None);
            a.plan(r, p)
        })
        .collect();
    let mut at: BTreeMap<usize, Vec<&RegionPlan>> = BTreeMap::new();
    for p in plans.iter().filter(|p| !p.clones.is_empty()) {
        at.entry(p.first_use).or_default().push(p);
    }

    let mut rb = Rebuild::new(g);
    // Clones of forward values (read by backward nodes), and triggers read
    // from their barrier (by every node built after it).
    let mut clone_of: HashMap<NodeId, NodeId> = HashMap::new();
    let mut renamed: HashMap<NodeId, NodeId> = HashMap::new();
    for i in 0..g.len() {
        for p in at.get(&i).into_iter().flatten() {
            emit_clones(&mut rb, &a, p, &mut clone_of, &mut renamed)?;
        }
        let id = NodeId(i as u32);
        let node = &g.nodes[i];
        let backward = a.is_backward(id);
        let ins = node
            .inputs
            .iter()
            .map(|x| match (clone_of.get(x), renamed.get(x)) {
                (Some(&c), _) if backward => c,
                (_, Some(&r)) => r,
                _ => rb.map[x.index()],
            })
            .collect();
        rb.copy_as(node.op.clone(), ins)?;
    }
    let (out, map) = rb.finish()?;
    let out = super::checked("remat", g, out)?;

    let bytes = |g: &Graph, r: &[NodeId]| r.iter().map(|&x| node_bytes(g, x)).sum();
    let (rb0, rb1) = (residuals(g), residuals(&out));
    let report = RematReport {
        regions: plans
            .iter()
            .map(|p| RegionRemat {
                name: g.regions.name(p.region).to_string(),
                policy: p.policy,
                cloned: p.clones.len(),
                kept_bytes: p.kept_bytes,
            })
            .collect(),
        cloned_nodes: plans.iter().map(|p| p.clones.len()).sum(),
        residuals_before: rb0.len(),
        residuals_after: rb1.len(),
        residual_bytes_before: bytes(g, &rb0),
        residual_bytes_after: bytes(&out, &rb1),
        map,
    };
    Ok((out, report))
}

/// The barrier and the clones of one region, tagged as its backward.
fn emit_clones(
    rb: &mut Rebuild,
    a: &Analysis,
    p: &RegionPlan,
    clone_of: &mut HashMap<NodeId, NodeId>,
    renamed: &mut HashMap<NodeId, NodeId>,
) -> Result<()> {
    let g = a.g;
    let tag = Some(NodeTag::Backward(Some(p.region)));
    let loc = g.nodes[p.first_use].loc.clone();
    let mut through: Vec<NodeId> = p.leaves.iter().map(|x| rb.map[x.index()]).collect();
    if let Some(t) = p.trigger {
        through.push(renamed.get(&t).copied().unwrap_or(rb.map[t.index()]));
    }
    let mut leaf_of: HashMap<NodeId, NodeId> = HashMap::new();
    if !through.is_empty() {
        let b = rb.add(Op::OptimizationBarrier, through, loc.clone(), tag)?;
        for (k, &x) in p.leaves.iter().enumerate() {
            let e = rb.add(Op::GetTupleElement(k), vec![b], loc.clone(), tag)?;
            leaf_of.insert(x, e);
        }
        if let Some(t) = p.trigger {
            let k = p.leaves.len();
            let e = rb.add(Op::GetTupleElement(k), vec![b], loc.clone(), tag)?;
            renamed.insert(t, e);
        }
    }
    for &c in &p.clones {
        let node = &g.nodes[c.index()];
        let ins = node
            .inputs
            .iter()
            .map(|x| {
                leaf_of
                    .get(x)
                    .or_else(|| clone_of.get(x))
                    .copied()
                    .unwrap_or(rb.map[x.index()])
            })
            .collect();
        let id = rb.add(node.op.clone(), ins, node.loc.clone(), tag)?;
        clone_of.insert(c, id);
    }
    Ok(())
}
