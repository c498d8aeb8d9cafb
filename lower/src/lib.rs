//! Lowers an rxla [`graph::Graph`] to a StableHLO MLIR module (text) that
//! XLA's PJRT plugins compile.
//!
//! Ops are written in MLIR's generic form (`"stablehlo.add"(%a, %b) : ...`),
//! which parses across StableHLO versions; each carries the model's source
//! location as `loc("file":line:col)`. One lowering function per op lives
//! in `ops/`; scans become `stablehlo.while`.

mod emit;
mod ops;
mod sharding;

pub use sharding::{hlo_sharding, resolve_logical, Mesh};

use emit::Emitter;
use graph::{Graph, Sharding};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum LowerError {
    #[error("graph does not verify: {0}")]
    Verify(#[from] graph::VerifyError),
    #[error("{op} at {loc}: cannot lower: {msg}")]
    Op {
        op: &'static str,
        loc: graph::Location,
        msg: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = LowerError> = std::result::Result<T, E>;

/// How to emit the module around the graph.
#[derive(Clone, Debug, Default)]
pub struct LowerOptions {
    /// Module symbol name; the graph's name when `None`.
    pub module_name: Option<String>,
    /// Per argument (in `Graph::args()` order), an `mhlo.sharding`.
    pub arg_shardings: Vec<Option<Sharding>>,
    /// Per output, an `mhlo.sharding`.
    pub result_shardings: Vec<Option<Sharding>>,
    /// The device mesh `Sharding::Mesh` axis names refer to.
    pub mesh: Option<Mesh>,
    /// (logical axis, mesh axis) rules resolving `Sharding::Logical` constraints; without
    /// a mesh those constraints are dropped.
    pub axis_rules: Vec<(String, String)>,
    /// Donation: (argument index, output index) pairs whose buffers alias
    /// (`tf.aliasing_output`); types must match.
    pub aliases: Vec<(usize, usize)>,
    /// `mhlo.num_partitions` (SPMD devices); 1 when 0.
    pub num_partitions: u32,
    /// `mhlo.num_replicas`; 1 when 0.
    pub num_replicas: u32,
    /// Leave out `loc(...)` (smaller text, e.g. for cache keys).
    pub no_locations: bool,
}

/// The StableHLO module for `g`: `func.func public @main(args..) -> (outputs..)`.
pub fn lower(g: &Graph, opts: &LowerOptions) -> Result<String> {
    graph::verify(g)?;
    let mut e = Emitter::new(opts);
    let name = opts.module_name.clone().unwrap_or_else(|| g.name.clone());
    let args = g.args();
    for &(a, o) in &opts.aliases {
        let (Some(&an), Some(&on)) = (args.get(a), g.outputs.get(o)) else {
            return Err(LowerError::Invalid(format!(
                "alias ({a} -> {o}) out of range"
            )));
        };
        let (at, ot) = (g.ty(an).map_err(inv)?, g.ty(on).map_err(inv)?);
        if at != ot {
            return Err(LowerError::Invalid(format!(
                "argument {a} ({at}) cannot alias output {o} ({ot})"
            )));
        }
    }
    let np = opts.num_partitions.max(1);
    let nr = opts.num_replicas.max(1);
    e.line(&format!(
        "module @{} attributes {{mhlo.num_partitions = {np} : i32, mhlo.num_replicas = {nr} : i32}} {{",
        emit::symbol(&name)
    ));
    e.indent += 1;
    let mut sig = Vec::new();
    let mut arg_names = Vec::new();
    for (i, &a) in args.iter().enumerate() {
        let t = g.ty(a).map_err(inv)?;
        let n = format!("%arg{i}");
        let mut attrs = Vec::new();
        if let Some(Some(s)) = opts.arg_shardings.get(i) {
            attrs.push(format!(
                "mhlo.sharding = {}",
                emit::quote(&hlo_sharding(s, t.rank(), opts.mesh.as_ref())?)
            ));
        }
        for &(ai, o) in &opts.aliases {
            if ai == i {
                attrs.push(format!("tf.aliasing_output = {o} : i32"));
            }
        }
        sig.push(format!("{n}: {}{}", emit::ty(t), emit::attr_dict(&attrs)));
        arg_names.push(n);
    }
    let mut results = Vec::new();
    for (i, &o) in g.outputs.iter().enumerate() {
        let t = g.ty(o).map_err(inv)?;
        let mut attrs = Vec::new();
        if let Some(Some(s)) = opts.result_shardings.get(i) {
            attrs.push(format!(
                "mhlo.sharding = {}",
                emit::quote(&hlo_sharding(s, t.rank(), opts.mesh.as_ref())?)
            ));
        }
        results.push(format!("{}{}", emit::ty(t), emit::attr_dict(&attrs)));
    }
    e.line(&format!(
        "func.func public @main({}) -> ({}) {{",
        sig.join(", "),
        results.join(", ")
    ));
    e.indent += 1;
    let outs = ops::lower_body(&mut e, g, &arg_names)?;
    let out_types: Vec<String> = g
        .outputs
        .iter()
        .map(|&o| g.ty(o).map(emit::ty).map_err(inv))
        .collect::<Result<_>>()?;
    if outs.is_empty() {
        e.line("func.return");
    } else {
        e.line(&format!(
            "func.return {} : {}",
            outs.join(", "),
            out_types.join(", ")
        ));
    }
    e.indent -= 1;
    e.line("}");
    e.indent -= 1;
    e.line("}");
    Ok(e.finish())
}

fn inv(e: graph::GraphError) -> LowerError {
    LowerError::Invalid(e.to_string())
}

#[cfg(test)]
mod tests;
