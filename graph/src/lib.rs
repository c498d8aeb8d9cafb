//! rxla's graph IR.
//!
//! A [`Graph`] is an arena of [`Node`]s indexed by [`NodeId`], built through
//! `#[track_caller]` builder methods (`g.dot(x, w)?`) that check shapes and
//! record the model's source line. Each op's shape rule and VJP rule live
//! together in `ops/`; [`autodiff`] differentiates a graph, [`verify`]
//! checks one, [`interp`] evaluates one on the host, [`nn`] has composites
//! (softmax, cross-entropy, layer norm, dropout ...).

pub mod autodiff;
pub mod error;
pub mod gradcheck;

pub mod interp;
pub mod ir;
pub mod nn;
pub mod op;
pub mod ops;
pub mod passes;
pub mod rewrite;
pub mod types;

pub use error::{GraphError, Result};
pub use ir::{Graph, Location, Node, NodeId};
pub use op::{
    BinaryOp, CompareDir, ConvDims, ConvParams, CustomVjpParams, DotDims, Literal, LiteralData, Op,
    ReduceKind, ScanParams, Sharding, UnaryOp, Window,
};
pub use ops::control::{ScanArgs, ScanOutputs};
pub use ops::conv::Padding;
pub use passes::verify::{verify, VerifyError};
pub use passes::{
    mixed_precision, remat, NodeTag, PrecisionPolicy, PrecisionReport, RegionId, RegionPolicy,
    Regions, RematPolicy, RematReport,
};
pub use passes::{vmap, VmapSpec, Vmapped};
pub use types::{DType, NodeType, Shape, TensorType};
