//! Finite-difference gradient checks, reusable with any evaluator.
//!
//! Each [`GradCase`] is a small graph with one float output `y`. The check
//! forms `loss = sum(y * r)` with a fixed pseudo-random `r`, differentiates
//! it with [`crate::autodiff::grad`], and compares every gradient element
//! with a central difference of the loss. The evaluator is a parameter, so
//! the same cases run on [`crate::interp`] here and through XLA later
//! (the finite-difference evaluations reuse one loss graph, so an XLA
//! evaluator can compile it once).

mod cases;
mod forward;

pub use cases::cases;
pub use forward::forward_cases;

use crate::autodiff::grad;
use crate::interp::HostTensor;
use crate::ir::{Graph, NodeId};
use crate::passes::verify::verify;
use crate::types::{DType, TensorType};

/// A graph (outputs `[y]`) and arguments to evaluate it at.
#[derive(Clone, Debug)]
pub struct GradCase {
    pub name: &'static str,
    pub graph: Graph,
    pub args: Vec<HostTensor>,
}

#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    /// Finite-difference step.
    pub eps: f64,
    pub rtol: f64,
    pub atol: f64,
}

impl Tolerance {
    /// For f64 host math (the interpreter).
    pub const F64: Tolerance = Tolerance {
        eps: 1e-5,
        rtol: 1e-5,
        atol: 1e-7,
    };
    /// For f32 device math.
    pub const F32: Tolerance = Tolerance {
        eps: 1e-2,
        rtol: 3e-2,
        atol: 3e-3,
    };
}

/// Evaluates a graph on arguments (`g.args()` order) to its outputs.
pub type Evaluator<'a> = dyn FnMut(&Graph, &[HostTensor]) -> Result<Vec<HostTensor>, String> + 'a;

/// Deterministic numbers in [lo, hi) (an LCG; tests need no rand crate).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }

    pub fn next(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }
}

/// The loss graph and the gradient graph of a case, with the indices of
/// the arguments that are differentiated.
pub struct Prepared {
    pub loss: Graph,
    pub grads: Graph,
    pub wrt: Vec<usize>,
}

/// Builds `loss = sum(y * r)` and its gradient graph; both verify.
pub fn prepare(case: &GradCase) -> Result<Prepared, String> {
    let mut g = case.graph.clone();
    let y = *g.outputs.first().ok_or("case has no output")?;
    let yt = g.ty(y).map_err(|e| e.to_string())?.clone();
    let mut rng = Lcg::new(7);
    let n = yt.shape.num_elements() as usize;
    let r: Vec<f32> = (0..n).map(|_| rng.next(0.5, 1.5) as f32).collect();
    let loss = (|| -> crate::Result<NodeId> {
        let r = g.constant_f32(yt.shape.clone(), r)?;
        let r = g.convert(r, yt.dtype)?;
        let l = g.mul(y, r)?;
        let l = g.sum_all(l)?;
        g.convert(l, DType::F64)
    })()
    .map_err(|e| e.to_string())?;
    g.set_outputs(&[loss]).map_err(|e| e.to_string())?;
    verify(&g).map_err(|e| format!("loss graph: {e}"))?;
    let args = g.args();
    let wrt: Vec<usize> = (0..args.len())
        .filter(|&i| g.dtype(args[i]).map(|d| d.is_float()).unwrap_or(false))
        .collect();
    let wrt_ids: Vec<NodeId> = wrt.iter().map(|&i| args[i]).collect();
    let (mut gg, grads) = grad(&g, loss, &wrt_ids).map_err(|e| e.to_string())?;
    gg.set_outputs(&grads).map_err(|e| e.to_string())?;
    verify(&gg).map_err(|e| format!("gradient graph: {e}"))?;
    Ok(Prepared {
        loss: g,
        grads: gg,
        wrt,
    })
}

/// Runs one case; `Err` lists the first mismatching elements.
pub fn check(case: &GradCase, eval: &mut Evaluator, tol: Tolerance) -> Result<(), String> {
    let p = prepare(case)?;
    let analytic = eval(&p.grads, &case.args)?;
    let mut errors = Vec::new();
    for (k, &ai) in p.wrt.iter().enumerate() {
        let arg = &case.args[ai];
        for j in 0..arg.data.len() {
            let mut args = case.args.clone();
            args[ai].data[j] = arg.data[j] + tol.eps;
            let lp = eval(&p.loss, &args)?[0].data[0];
            args[ai].data[j] = arg.data[j] - tol.eps;
            let lm = eval(&p.loss, &args)?[0].data[0];
            let numeric = (lp - lm) / (2.0 * tol.eps);
            let a = analytic[k].data[j];
            let ok = (a - numeric).abs() <= tol.atol + tol.rtol * a.abs().max(numeric.abs());
            if !ok && errors.len() < 5 {
                errors.push(format!(
                    "arg {ai} [{j}]: autodiff {a} vs finite difference {numeric}"
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {}", case.name, errors.join("; ")))
    }
}

/// Evaluates with the reference interpreter.
pub fn interp_evaluator() -> impl FnMut(&Graph, &[HostTensor]) -> Result<Vec<HostTensor>, String> {
    |g, a| crate::interp::eval(g, a).map_err(|e| e.to_string())
}

/// Builds a case: inputs get data as they are declared.
pub struct CaseBuilder {
    pub g: Graph,
    pub args: Vec<HostTensor>,
    rng: Lcg,
}

impl CaseBuilder {
    pub fn new(name: &str, seed: u64) -> Self {
        CaseBuilder {
            g: Graph::new(name),
            args: Vec::new(),
            rng: Lcg::new(seed),
        }
    }

    /// A float input with values in [lo, hi).
    pub fn input_in(
        &mut self,
        dtype: DType,
        dims: &[i64],
        lo: f64,
        hi: f64,
    ) -> crate::Result<NodeId> {
        let ty = TensorType::new(dtype, dims.to_vec());
        let n = ty.shape.num_elements() as usize;
        let data = (0..n).map(|_| self.rng.next(lo, hi)).collect();
        self.input_with(ty, data)
    }

    /// An f32 input in [-1, 1).
    pub fn x(&mut self, dims: &[i64]) -> crate::Result<NodeId> {
        self.input_in(DType::F32, dims, -1.0, 1.0)
    }

    /// An f32 input in [0.5, 2).
    pub fn pos(&mut self, dims: &[i64]) -> crate::Result<NodeId> {
        self.input_in(DType::F32, dims, 0.5, 2.0)
    }

    /// An i32 input with the given values.
    pub fn ints(&mut self, dims: &[i64], data: &[i32]) -> crate::Result<NodeId> {
        let ty = TensorType::new(DType::I32, dims.to_vec());
        self.input_with(ty, data.iter().map(|&v| v as f64).collect())
    }

    pub fn input_with(&mut self, ty: TensorType, data: Vec<f64>) -> crate::Result<NodeId> {
        let name = format!("a{}", self.args.len());
        let t = HostTensor::new(ty.clone(), data)
            .ok_or_else(|| crate::GraphError::Invalid(format!("bad data for {ty}")))?;
        self.args.push(t);
        self.g.input(&name, ty)
    }

    pub fn finish(mut self, name: &'static str, y: NodeId) -> crate::Result<GradCase> {
        self.g.set_outputs(&[y])?;
        Ok(GradCase {
            name,
            graph: self.g,
            args: self.args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_matches_finite_differences() {
        let mut eval = interp_evaluator();
        let mut failures = Vec::new();
        let all = cases().unwrap();
        assert!(all.len() > 50, "{}", all.len());
        for c in &all {
            if let Err(e) = check(c, &mut eval, Tolerance::F64) {
                failures.push(e);
            }
        }
        assert!(
            failures.is_empty(),
            "{} failing:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// The kind of an op, one per `Op` variant: a new variant does not
    /// compile here until it is named (and then needs a case below).
    fn kind(op: &crate::Op) -> &'static str {
        use crate::Op::*;
        match op {
            Parameter(_) => "parameter",
            Input(_) => "input",
            Constant(_) => "constant",
            Iota { .. } => "iota",
            Unary(_) => "unary",
            Binary(_) => "binary",
            Compare(_) => "compare",
            Select => "select",
            Convert(_) => "convert",
            StopGradient => "stop_gradient",
            BroadcastInDim { .. } => "broadcast_in_dim",
            Reshape(_) => "reshape",
            Transpose(_) => "transpose",
            Reverse(_) => "reverse",
            Slice { .. } => "slice",
            DynamicSlice { .. } => "dynamic_slice",
            DynamicUpdateSlice => "dynamic_update_slice",
            Concatenate { .. } => "concatenate",
            Pad { .. } => "pad",
            Gather => "gather",
            ScatterAdd => "scatter_add",
            DotGeneral { .. } => "dot_general",
            Reduce { .. } => "reduce",
            ArgMax { .. } => "argmax",
            ReduceWindow { .. } => "reduce_window",
            SelectAndScatterAdd { .. } => "select_and_scatter_add",
            Conv(_) => "convolution",
            Sort { .. } => "sort",
            Scan(_) => "scan",
            CustomVjp(_) => "custom_vjp",
            OptimizationBarrier => "optimization_barrier",
            GetTupleElement(_) => "get_tuple_element",
            Sharding(_) => "sharding",
        }
    }

    /// Every kind of [`kind`]; keep the two in step.
    const KINDS: &[&str] = &[
        "parameter",
        "input",
        "constant",
        "iota",
        "unary",
        "binary",
        "compare",
        "select",
        "convert",
        "stop_gradient",
        "broadcast_in_dim",
        "reshape",
        "transpose",
        "reverse",
        "slice",
        "dynamic_slice",
        "dynamic_update_slice",
        "concatenate",
        "pad",
        "gather",
        "scatter_add",
        "dot_general",
        "reduce",
        "argmax",
        "reduce_window",
        "select_and_scatter_add",
        "convolution",
        "sort",
        "scan",
        "custom_vjp",
        "optimization_barrier",
        "get_tuple_element",
        "sharding",
    ];

    fn kinds_of(g: &Graph, seen: &mut std::collections::BTreeSet<&'static str>) {
        for n in &g.nodes {
            seen.insert(kind(&n.op));
            match &n.op {
                crate::Op::Scan(p) => kinds_of(&p.body, seen),
                crate::Op::CustomVjp(p) => {
                    kinds_of(&p.forward, seen);
                    kinds_of(&p.backward, seen);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn every_op_has_a_gradcheck_case() {
        // Ops in some case's forward or gradient graph have their shape
        // rule, VJP, interpreter kernel and lowering checked (parameters
        // are the check's inputs).
        let mut seen = std::collections::BTreeSet::new();
        seen.insert("parameter");
        for c in cases().unwrap() {
            kinds_of(&c.graph, &mut seen);
            kinds_of(&prepare(&c).unwrap().grads, &mut seen);
        }
        let missing: Vec<&&str> = KINDS.iter().filter(|k| !seen.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "ops without a gradcheck case: {missing:?}"
        );
        let unlisted: Vec<&&str> = seen.iter().filter(|k| !KINDS.contains(k)).collect();
        assert!(
            unlisted.is_empty(),
            "kinds missing from KINDS: {unlisted:?}"
        );
    }

    #[test]
    fn check_catches_a_wrong_rule() {
        // Gradients of exp checked against finite differences of sin (the
        // evaluator swaps the loss graph) must fail.
        let all = cases().unwrap();
        let c = all.iter().find(|c| c.name == "exp").unwrap();
        let s = all.iter().find(|c| c.name == "sin").unwrap();
        let p = prepare(s).unwrap();
        let mut inner = interp_evaluator();
        let mut eval = |g: &Graph, a: &[HostTensor]| {
            let is_loss = g
                .ty(g.outputs[0])
                .map(|t| t.dtype == DType::F64)
                .unwrap_or(false);
            inner(if is_loss { &p.loss } else { g }, a)
        };
        assert!(check(c, &mut eval, Tolerance::F64).is_err());
    }
}
