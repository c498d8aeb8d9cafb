//! Text emission: SSA names, types, attributes, constants, locations.

use crate::LowerOptions;
use graph::{DType, Location, TensorType};
use std::fmt::Write;

pub(crate) struct Emitter<'o> {
    out: String,
    next: usize,
    pub indent: usize,
    pub opts: &'o LowerOptions,
}

impl<'o> Emitter<'o> {
    pub fn new(opts: &'o LowerOptions) -> Self {
        Emitter {
            out: String::new(),
            next: 0,
            indent: 0,
            opts,
        }
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// A fresh SSA name, unique in the whole function (regions included).
    pub fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%{}", self.next - 1)
    }

    pub fn line(&mut self, s: &str) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    pub fn loc(&self, loc: Option<&Location>, name: Option<&str>) -> String {
        match loc {
            Some(l) if !self.opts.no_locations => {
                let fl = format!("{}:{}:{}", quote(&l.file), l.line, l.col);
                match name {
                    Some(n) => format!(" loc({}({fl}))", quote(n)),
                    None => format!(" loc({fl})"),
                }
            }
            _ => String::new(),
        }
    }

    /// Writes `results = "name"(operands) attrs : (in types) -> out types loc`
    /// and returns one reference per result.
    pub fn op(&mut self, o: Op<'_>) -> Vec<String> {
        let (lhs, refs) = self.results(o.outs.len());
        let head = format!("{lhs}\"{}\"({})", o.name, o.operands.join(", "));
        let tail = format!("{}{}", attr_dict(&o.attrs), signature(o.ins, o.outs));
        let loc = self.loc(o.loc, o.loc_name);
        self.line(&format!("{head}{tail}{loc}"));
        refs
    }

    /// Like `op` but with regions, each built by `regions` between
    /// `begin_region` / `end_region` calls.
    pub fn op_with_regions(
        &mut self,
        o: Op<'_>,
        regions: impl FnOnce(&mut Self) -> crate::Result<()>,
    ) -> crate::Result<Vec<String>> {
        let (lhs, refs) = self.results(o.outs.len());
        self.line(&format!("{lhs}\"{}\"({}) (", o.name, o.operands.join(", ")));
        self.indent += 1;
        regions(self)?;
        self.indent -= 1;
        let tail = format!("{}{}", attr_dict(&o.attrs), signature(o.ins, o.outs));
        let loc = self.loc(o.loc, o.loc_name);
        self.line(&format!("){tail}{loc}"));
        Ok(refs)
    }

    /// Opens a region block with fresh arguments of `types`; returns them.
    pub fn begin_region(&mut self, first: bool, types: &[TensorType]) -> Vec<String> {
        let names: Vec<String> = types.iter().map(|_| self.fresh()).collect();
        let args: Vec<String> = names
            .iter()
            .zip(types)
            .map(|(n, t)| format!("{n}: {}", ty(t)))
            .collect();
        self.line(if first { "{" } else { ", {" });
        self.line(&format!("^bb0({}):", args.join(", ")));
        self.indent += 1;
        names
    }

    /// Closes a region with `stablehlo.return` of `vals`.
    pub fn end_region(&mut self, vals: &[String], types: &[TensorType]) {
        let tys: Vec<String> = types.iter().map(ty).collect();
        self.line(&format!(
            "\"stablehlo.return\"({}) : ({}) -> ()",
            vals.join(", "),
            tys.join(", ")
        ));
        self.indent -= 1;
        self.line("}");
    }

    fn results(&mut self, n: usize) -> (String, Vec<String>) {
        let base = self.fresh();
        match n {
            0 => (String::new(), vec![]),
            1 => (format!("{base} = "), vec![base]),
            _ => (
                format!("{base}:{n} = "),
                (0..n).map(|i| format!("{base}#{i}")).collect(),
            ),
        }
    }

    /// A constant splat of `v`.
    pub fn splat(&mut self, t: &TensorType, v: f64) -> String {
        let attr = format!("value = dense<{}> : {}", elem(t.dtype, v), ty(t));
        self.op(Op::new("stablehlo.constant", vec![], &[], std::slice::from_ref(t)).attr(attr))
            .remove(0)
    }
}

/// One op to emit.
pub(crate) struct Op<'a> {
    pub name: &'a str,
    pub operands: Vec<String>,
    pub attrs: Vec<String>,
    pub ins: &'a [TensorType],
    pub outs: &'a [TensorType],
    pub loc: Option<&'a Location>,
    pub loc_name: Option<&'a str>,
}

impl<'a> Op<'a> {
    pub fn new(
        name: &'a str,
        operands: Vec<String>,
        ins: &'a [TensorType],
        outs: &'a [TensorType],
    ) -> Self {
        Op {
            name,
            operands,
            attrs: Vec::new(),
            ins,
            outs,
            loc: None,
            loc_name: None,
        }
    }

    pub fn attr(mut self, a: impl Into<String>) -> Self {
        self.attrs.push(a.into());
        self
    }

    pub fn at(mut self, loc: &'a Location, name: Option<&'a str>) -> Self {
        self.loc = Some(loc);
        self.loc_name = name;
        self
    }
}

pub(crate) fn signature(ins: &[TensorType], outs: &[TensorType]) -> String {
    let i: Vec<String> = ins.iter().map(ty).collect();
    let o: Vec<String> = outs.iter().map(ty).collect();
    let o = if o.len() == 1 {
        o[0].clone()
    } else {
        format!("({})", o.join(", "))
    };
    format!(" : ({}) -> {o}", i.join(", "))
}

pub(crate) fn attr_dict(attrs: &[String]) -> String {
    if attrs.is_empty() {
        String::new()
    } else {
        format!(" {{{}}}", attrs.join(", "))
    }
}

/// `tensor<2x3xf32>`, `tensor<f32>`.
pub(crate) fn ty(t: &TensorType) -> String {
    let mut s = String::from("tensor<");
    for d in t.dims() {
        let _ = write!(s, "{d}x");
    }
    s.push_str(t.dtype.mlir_name());
    s.push('>');
    s
}

/// `array<i64: 1, 2>`.
pub(crate) fn i64_array(v: &[i64]) -> String {
    if v.is_empty() {
        return "array<i64>".into();
    }
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("array<i64: {}>", parts.join(", "))
}

pub(crate) fn usize_array(v: &[usize]) -> String {
    i64_array(&v.iter().map(|&x| x as i64).collect::<Vec<_>>())
}

/// `[0, 1]` for dimension lists inside `#stablehlo.*<...>` attributes.
pub(crate) fn list(v: &[usize]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// `dense<[[lo, hi], ...]> : tensor<Nx2xi64>`.
pub(crate) fn padding_attr(p: &[(i64, i64)]) -> String {
    if p.is_empty() {
        return "dense<> : tensor<0x2xi64>".into();
    }
    let rows: Vec<String> = p.iter().map(|(l, h)| format!("[{l}, {h}]")).collect();
    format!("dense<[{}]> : tensor<{}x2xi64>", rows.join(", "), p.len())
}

pub(crate) fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A symbol name, quoted unless it is a bare identifier.
pub(crate) fn symbol(s: &str) -> String {
    let bare = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_$.".contains(c));
    if bare {
        s.to_string()
    } else {
        quote(s)
    }
}

/// One element of a dense literal.
pub(crate) fn elem(d: DType, v: f64) -> String {
    match d {
        DType::Bool => (if v != 0.0 { "true" } else { "false" }).into(),
        // Saturating: i64's extremes (reduction identities) are not exact f64s.
        DType::I64 => format!("{}", v as i64),
        // Wrap like the interpreter does.
        _ if d.is_int() => format!("{}", graph::interp::wrap(d, v) as i128),
        _ => float(d, v),
    }
}

fn float(d: DType, v: f64) -> String {
    if !v.is_finite() {
        // Special values as their bit patterns.
        let (nan, inf, ninf) = match d {
            DType::BF16 => ("0x7FC0", "0x7F80", "0xFF80"),
            DType::F16 => ("0x7E00", "0x7C00", "0xFC00"),
            DType::F64 => (
                "0x7FF8000000000000",
                "0x7FF0000000000000",
                "0xFFF0000000000000",
            ),
            _ => ("0x7FC00000", "0x7F800000", "0xFF800000"),
        };
        return if v.is_nan() {
            nan
        } else if v > 0.0 {
            inf
        } else {
            ninf
        }
        .into();
    }
    // Shortest round-trip form; MLIR float literals need a '.'.
    let s = if d == DType::F64 {
        format!("{v:e}")
    } else {
        format!("{:e}", v as f32)
    };
    match s.find('e') {
        Some(i) if !s[..i].contains('.') => format!("{}.0{}", &s[..i], &s[i..]),
        _ => s,
    }
}

/// The lowest / highest value of `d` (reduction identities).
pub(crate) fn lowest(d: DType) -> f64 {
    d.int_range().map_or(f64::NEG_INFINITY, |(lo, _)| lo as f64)
}

pub(crate) fn highest(d: DType) -> f64 {
    d.int_range().map_or(f64::INFINITY, |(_, hi)| hi as f64)
}

/// The comparison type StableHLO expects for `d`.
pub(crate) fn compare_type(d: DType) -> &'static str {
    if d.is_float() {
        "FLOAT"
    } else if d.is_unsigned() || d == DType::Bool {
        "UNSIGNED"
    } else {
        "SIGNED"
    }
}
