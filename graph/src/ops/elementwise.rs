//! Unary, binary, compare, select and convert: shape rules, builders, VJPs.

use super::common::{arity, broadcast_shapes, dims, Cts, Vjp};
use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::op::Op;
use crate::types::{DType, TensorType};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Log1p,
    Tanh,
    Logistic,
    Sqrt,
    Rsqrt,
    Abs,
    Sin,
    Cos,
    /// The Gauss error function (BERT's exact GELU); lowered through CHLO.
    Erf,
    Sign,
    /// Bitwise / logical not (ints and bool).
    Not,
}

impl UnaryOp {
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "negate",
            UnaryOp::Exp => "exponential",
            UnaryOp::Log => "log",
            UnaryOp::Log1p => "log_plus_one",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Logistic => "logistic",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Sin => "sine",
            UnaryOp::Cos => "cosine",
            UnaryOp::Erf => "erf",
            UnaryOp::Sign => "sign",
            UnaryOp::Not => "not",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    /// Remainder with the sign of the dividend (C `fmod` / `%`).
    Rem,
    And,
    Or,
    Xor,
    ShiftLeft,
    ShiftRightLogical,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "subtract",
            BinaryOp::Mul => "multiply",
            BinaryOp::Div => "divide",
            BinaryOp::Pow => "power",
            BinaryOp::Max => "maximum",
            BinaryOp::Min => "minimum",
            BinaryOp::Rem => "remainder",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Xor => "xor",
            BinaryOp::ShiftLeft => "shift_left",
            BinaryOp::ShiftRightLogical => "shift_right_logical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareDir {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareDir {
    pub fn mlir_name(self) -> &'static str {
        match self {
            CompareDir::Eq => "EQ",
            CompareDir::Ne => "NE",
            CompareDir::Lt => "LT",
            CompareDir::Le => "LE",
            CompareDir::Gt => "GT",
            CompareDir::Ge => "GE",
        }
    }
}

// ---- shape rules ----

pub(crate) fn infer_unary(u: UnaryOp, ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 1)?;
    let t = ins[0];
    let ok = match u {
        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign => t.dtype != DType::Bool,
        UnaryOp::Not => t.dtype.is_int() || t.dtype == DType::Bool,
        _ => t.dtype.is_float(),
    };
    if !ok {
        return Err(format!("unsupported element type: operand {t}"));
    }
    Ok(t.clone())
}

pub(crate) fn infer_binary(b: BinaryOp, ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 2)?;
    let (l, r) = (ins[0], ins[1]);
    if l != r {
        return Err(format!("operand types differ: lhs {l} vs rhs {r}"));
    }
    let d = l.dtype;
    let ok = match b {
        BinaryOp::Pow => d.is_float(),
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => d.is_int() || d == DType::Bool,
        BinaryOp::ShiftLeft | BinaryOp::ShiftRightLogical => d.is_int(),
        _ => d != DType::Bool,
    };
    if !ok {
        return Err(format!("unsupported element type: operands {l}"));
    }
    Ok(l.clone())
}

pub(crate) fn infer_compare(ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 2)?;
    let (l, r) = (ins[0], ins[1]);
    if l != r {
        return Err(format!("operand types differ: lhs {l} vs rhs {r}"));
    }
    Ok(l.with_dtype(DType::Bool))
}

pub(crate) fn infer_select(ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 3)?;
    let (p, t, f) = (ins[0], ins[1], ins[2]);
    if p.dtype != DType::Bool || p.shape != t.shape {
        return Err(format!(
            "predicate must be bool{}: got {p} (on_true {t})",
            t.shape
        ));
    }
    if t != f {
        return Err(format!("branch types differ: on_true {t} vs on_false {f}"));
    }
    Ok(t.clone())
}

pub(crate) fn infer_convert(to: DType, ins: &[&TensorType]) -> Result<TensorType, String> {
    arity(ins, 1)?;
    Ok(ins[0].with_dtype(to))
}

// ---- builders ----

macro_rules! unary_builders {
    ($($fn_name:ident => $op:ident),* $(,)?) => {
        impl Graph {
            $(
                #[track_caller]
                pub fn $fn_name(&mut self, x: NodeId) -> Result<NodeId> {
                    self.unary(UnaryOp::$op, x)
                }
            )*
        }
    };
}

unary_builders!(
    neg => Neg, exp => Exp, log => Log, log1p => Log1p, tanh => Tanh,
    logistic => Logistic, sqrt => Sqrt, rsqrt => Rsqrt, abs => Abs,
    sin => Sin, cos => Cos, erf => Erf, sign => Sign, not => Not,
);

/// Numpy-broadcasting binary builders: `g.add(x, b)` with `x: [B, D]`, `b: [D]`.
macro_rules! binary_builders {
    ($($fn_name:ident => $op:ident),* $(,)?) => {
        impl Graph {
            $(
                #[track_caller]
                pub fn $fn_name(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
                    let (a, b) = self.broadcast_pair(BinaryOp::$op.name(), a, b)?;
                    self.binary(BinaryOp::$op, a, b)
                }
            )*
        }
    };
}

binary_builders!(
    add => Add, sub => Sub, mul => Mul, div => Div, pow => Pow, max => Max,
    min => Min, rem => Rem, and => And, or => Or, xor => Xor,
    shift_left => ShiftLeft, shift_right_logical => ShiftRightLogical,
);

macro_rules! compare_builders {
    ($($fn_name:ident => $dir:ident),* $(,)?) => {
        impl Graph {
            $(
                #[track_caller]
                pub fn $fn_name(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
                    self.compare(CompareDir::$dir, a, b)
                }
            )*
        }
    };
}

compare_builders!(eq => Eq, ne => Ne, lt => Lt, le => Le, gt => Gt, ge => Ge);

impl Graph {
    #[track_caller]
    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId> {
        self.push(Op::Unary(op), &[x])
    }

    /// Binary op on same-typed operands (no broadcasting).
    #[track_caller]
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.push(Op::Binary(op), &[a, b])
    }

    /// Comparison, broadcasting numpy-style; the result is bool.
    #[track_caller]
    pub fn compare(&mut self, dir: CompareDir, a: NodeId, b: NodeId) -> Result<NodeId> {
        let (a, b) = self.broadcast_pair("compare", a, b)?;
        self.push(Op::Compare(dir), &[a, b])
    }

    /// `pred ? on_true : on_false`, broadcasting all three numpy-style.
    #[track_caller]
    pub fn select(&mut self, pred: NodeId, on_true: NodeId, on_false: NodeId) -> Result<NodeId> {
        let (t, f) = self.broadcast_pair("select", on_true, on_false)?;
        let (p_dims, t_dims) = (self.dims(pred)?.to_vec(), self.dims(t)?.to_vec());
        let Some(common) = broadcast_shapes(&p_dims, &t_dims) else {
            return Err(self.err(
                "select",
                format!(
                    "cannot broadcast predicate {} with branches {}",
                    dims(&p_dims),
                    dims(&t_dims)
                ),
            ));
        };
        let p = self.broadcast_to(pred, &common)?;
        let t = self.broadcast_to(t, &common)?;
        let f = self.broadcast_to(f, &common)?;
        self.push(Op::Select, &[p, t, f])
    }

    #[track_caller]
    pub fn convert(&mut self, x: NodeId, to: DType) -> Result<NodeId> {
        if self.dtype(x)? == to {
            return Ok(x);
        }
        self.push(Op::Convert(to), &[x])
    }

    /// `x + v` for a scalar `v` in `x`'s dtype.
    #[track_caller]
    pub fn add_scalar(&mut self, x: NodeId, v: f64) -> Result<NodeId> {
        let s = self.scalar_like(x, v)?;
        self.add(x, s)
    }

    /// `x * v` for a scalar `v` in `x`'s dtype.
    #[track_caller]
    pub fn mul_scalar(&mut self, x: NodeId, v: f64) -> Result<NodeId> {
        let s = self.scalar_like(x, v)?;
        self.mul(x, s)
    }

    /// Broadcasts two values to their numpy-style common shape; their dtypes
    /// must already agree (no implicit promotion).
    #[track_caller]
    pub(crate) fn broadcast_pair(
        &mut self,
        op: &'static str,
        a: NodeId,
        b: NodeId,
    ) -> Result<(NodeId, NodeId)> {
        let (ta, tb) = (self.ty(a)?.clone(), self.ty(b)?.clone());
        if ta.dtype != tb.dtype {
            return Err(self.err(op, format!("operand dtypes differ: lhs {ta} vs rhs {tb}")));
        }
        if ta.shape == tb.shape {
            return Ok((a, b));
        }
        let Some(common) = broadcast_shapes(ta.dims(), tb.dims()) else {
            return Err(self.err(op, format!("cannot broadcast lhs {ta} with rhs {tb}")));
        };
        Ok((
            self.broadcast_to(a, &common)?,
            self.broadcast_to(b, &common)?,
        ))
    }
}

// ---- VJP rules ----

pub(crate) fn vjp_unary(g: &mut Graph, u: UnaryOp, v: &Vjp) -> Result<Cts> {
    let (x, out, ct) = (v.x(0), v.out, v.ct);
    let d = match u {
        UnaryOp::Neg => g.neg(ct)?,
        UnaryOp::Exp => g.mul(ct, out)?,
        UnaryOp::Log => g.div(ct, x)?,
        UnaryOp::Log1p => {
            let x1 = g.add_scalar(x, 1.0)?;
            g.div(ct, x1)?
        }
        UnaryOp::Tanh => {
            // 1 - tanh^2
            let sq = g.mul(out, out)?;
            let one = g.full_like(out, 1.0)?;
            let d = g.sub(one, sq)?;
            g.mul(ct, d)?
        }
        UnaryOp::Logistic => {
            let one = g.full_like(out, 1.0)?;
            let rest = g.sub(one, out)?;
            let d = g.mul(out, rest)?;
            g.mul(ct, d)?
        }
        UnaryOp::Sqrt => {
            let half = g.mul_scalar(ct, 0.5)?;
            g.div(half, out)?
        }
        UnaryOp::Rsqrt => {
            // d x^-1/2 = -1/2 x^-3/2 = -1/2 * out / x
            let r = g.div(out, x)?;
            let r = g.mul_scalar(r, -0.5)?;
            g.mul(ct, r)?
        }
        UnaryOp::Abs => {
            let s = g.sign(x)?;
            g.mul(ct, s)?
        }
        UnaryOp::Sin => {
            let c = g.cos(x)?;
            g.mul(ct, c)?
        }
        UnaryOp::Cos => {
            let s = g.sin(x)?;
            let d = g.mul(ct, s)?;
            g.neg(d)?
        }
        UnaryOp::Erf => {
            // d erf(x) = 2/sqrt(pi) exp(-x^2)
            let sq = g.mul(x, x)?;
            let e = g.neg(sq)?;
            let e = g.exp(e)?;
            let e = g.mul_scalar(e, std::f64::consts::FRAC_2_SQRT_PI)?;
            g.mul(ct, e)?
        }
        UnaryOp::Sign | UnaryOp::Not => return Ok(vec![None]),
    };
    Ok(vec![Some(d)])
}

pub(crate) fn vjp_binary(g: &mut Graph, b: BinaryOp, v: &Vjp) -> Result<Cts> {
    let (x, y, out, ct) = (v.x(0), v.x(1), v.out, v.ct);
    let (dx, dy) = match b {
        BinaryOp::Add => (ct, ct),
        BinaryOp::Sub => (ct, g.neg(ct)?),
        BinaryOp::Mul => (g.mul(ct, y)?, g.mul(x, ct)?),
        BinaryOp::Div => {
            let dx = g.div(ct, y)?;
            let q = g.div(out, y)?;
            let dy = g.mul(ct, q)?;
            (dx, g.neg(dy)?)
        }
        BinaryOp::Pow => {
            // dx = y * x^(y-1); dy = out * log(x), taking log as 0 where x <= 0.
            let ym1 = g.add_scalar(y, -1.0)?;
            let p = g.pow(x, ym1)?;
            let p = g.mul(y, p)?;
            let dx = g.mul(ct, p)?;
            let zero = g.full_like(x, 0.0)?;
            let one = g.full_like(x, 1.0)?;
            let pos = g.gt(x, zero)?;
            let safe = g.select(pos, x, one)?;
            let lx = g.log(safe)?;
            let q = g.mul(out, lx)?;
            (dx, g.mul(ct, q)?)
        }
        BinaryOp::Max | BinaryOp::Min => {
            // The winner takes the gradient; ties split it evenly.
            let dt = g.dtype(x)?;
            let wins = if b == BinaryOp::Max {
                g.gt(x, y)?
            } else {
                g.lt(x, y)?
            };
            let ties = g.eq(x, y)?;
            let w = g.convert(wins, dt)?;
            let t = g.convert(ties, dt)?;
            let t = g.mul_scalar(t, 0.5)?;
            let wx = g.add(w, t)?;
            let one = g.full_like(x, 1.0)?;
            let wy = g.sub(one, wx)?;
            (g.mul(ct, wx)?, g.mul(ct, wy)?)
        }
        BinaryOp::Rem => {
            // out = x - y * trunc(x / y), so d/dy = -(x - out) / y.
            let q = g.sub(x, out)?;
            let q = g.div(q, y)?;
            let dy = g.mul(ct, q)?;
            (ct, g.neg(dy)?)
        }
        BinaryOp::And
        | BinaryOp::Or
        | BinaryOp::Xor
        | BinaryOp::ShiftLeft
        | BinaryOp::ShiftRightLogical => return Ok(vec![None, None]),
    };
    Ok(vec![Some(dx), Some(dy)])
}

pub(crate) fn vjp_select(g: &mut Graph, v: &Vjp) -> Result<Cts> {
    let (p, ct) = (v.x(0), v.ct);
    let zero = g.full_like(ct, 0.0)?;
    let dt = g.select(p, ct, zero)?;
    let df = g.select(p, zero, ct)?;
    Ok(vec![None, Some(dt), Some(df)])
}

pub(crate) fn vjp_convert(g: &mut Graph, v: &Vjp) -> Result<Cts> {
    let from = g.dtype(v.x(0))?;
    if !from.is_float() {
        return Ok(vec![None]);
    }
    Ok(vec![Some(g.convert(v.ct, from)?)])
}

#[cfg(test)]
mod tests {
    use crate::{DType, Graph, TensorType};

    #[test]
    fn binary_broadcasts_numpy_style() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([4, 3])).unwrap();
        let b = g.input("b", TensorType::f32([3])).unwrap();
        let y = g.add(x, b).unwrap();
        assert_eq!(g.dims(y).unwrap(), &[4, 3]);
        let s = g.mul_scalar(x, 2.0).unwrap();
        assert_eq!(g.dims(s).unwrap(), &[4, 3]);
    }

    #[test]
    fn binary_mismatch_names_op_shapes_and_caller() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([4, 3])).unwrap();
        let b = g.input("b", TensorType::f32([4])).unwrap();
        let line = line!() + 1;
        let e = g.add(x, b).unwrap_err().to_string();
        assert!(e.starts_with("add at "), "{e}");
        assert!(e.contains(&format!("elementwise.rs:{line}:")), "{e}");
        assert!(e.contains("f32[4,3]") && e.contains("f32[4]"), "{e}");
    }

    #[test]
    fn dtype_mismatch_and_bad_dtype() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2])).unwrap();
        let i = g.input("i", TensorType::new(DType::I32, [2])).unwrap();
        let e = g.mul(x, i).unwrap_err().to_string();
        assert!(e.contains("multiply") && e.contains("i32[2]"), "{e}");
        let e = g.exp(i).unwrap_err().to_string();
        assert!(e.contains("exponential") && e.contains("i32[2]"), "{e}");
        assert!(g.xor(i, i).is_ok());
        assert!(g.xor(x, x).is_err());
    }

    #[test]
    fn compare_and_select() {
        let mut g = Graph::new("t");
        let x = g.input("x", TensorType::f32([2, 3])).unwrap();
        let z = g.scalar(0.0, DType::F32).unwrap();
        let p = g.gt(x, z).unwrap();
        assert_eq!(g.ty(p).unwrap(), &TensorType::new(DType::Bool, [2, 3]));
        let y = g.select(p, x, z).unwrap();
        assert_eq!(g.ty(y).unwrap(), &TensorType::f32([2, 3]));
        let e = g.select(x, x, x).unwrap_err().to_string();
        assert!(e.contains("select") && e.contains("predicate"), "{e}");
    }
}
