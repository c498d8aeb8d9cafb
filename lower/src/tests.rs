//! Text-level checks of the lowering. Execution through the real XLA CPU
//! plugin is tested in the workspace's `tests/ops_xla.rs`.

use crate::{hlo_sharding, lower, LowerOptions, Mesh};
use graph::gradcheck::{cases, forward_cases, prepare};
use graph::{DType, Graph, Padding, Sharding, TensorType};
use std::collections::HashSet;

/// Every `%name` used is defined earlier (as a result or block argument),
/// each defined once; brackets balance.
fn check_ssa(text: &str) {
    let mut defined: HashSet<String> = HashSet::new();
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for line in text.lines() {
        let l = line.trim();
        let (defs, rest) = match l.find(" = \"") {
            Some(i) if l.starts_with('%') => (&l[..i], &l[i..]),
            _ => ("", l),
        };
        // Uses first (an op cannot use its own result).
        let header = l.starts_with("^bb0") || l.starts_with("func.func");
        let body = if header { "" } else { rest };
        for (i, _) in body.match_indices('%') {
            let n = word(&body[i + 1..]);
            assert!(
                defined.contains(&n),
                "use of undefined %{n} in: {l}\n{text}"
            );
        }
        if let Some(d) = defs.strip_prefix('%') {
            let n = word(d);
            assert!(defined.insert(n.clone()), "%{n} defined twice\n{text}");
        }
        if header {
            for (i, _) in l.match_indices('%') {
                assert!(
                    defined.insert(word(&l[i + 1..])),
                    "block arg redefined: {l}"
                );
            }
        }
    }
    for (o, c) in [('(', ')'), ('{', '}'), ('[', ']'), ('<', '>')] {
        let strip: String = text.replace("->", "");
        let (a, b) = (strip.matches(o).count(), strip.matches(c).count());
        assert_eq!(a, b, "unbalanced {o}{c}\n{text}");
    }
}

fn mlp() -> Graph {
    let mut g = Graph::new("mlp");
    let x = g.input("x", TensorType::f32([4, 3])).unwrap();
    let w = g.parameter("w", TensorType::f32([3, 2])).unwrap();
    let b = g.parameter("b", TensorType::f32([2])).unwrap();
    let h = g.dot(x, w).unwrap();
    let h = g.add(h, b).unwrap();
    let h = g.relu(h).unwrap();
    let y = g.input("y", TensorType::new(DType::I32, [4])).unwrap();
    let l = g.cross_entropy(h, y).unwrap();
    g.set_outputs(&[l, w]).unwrap();
    g
}

#[test]
fn module_signature_locations_and_ops() {
    let g = mlp();
    let t = lower(&g, &LowerOptions::default()).unwrap();
    check_ssa(&t);
    assert!(
        t.starts_with("module @mlp attributes {mhlo.num_partitions = 1 : i32"),
        "{t}"
    );
    assert!(t.contains(
        "func.func public @main(%arg0: tensor<4x3xf32>, %arg1: tensor<3x2xf32>, %arg2: tensor<2xf32>, %arg3: tensor<4xi32>) -> (tensor<f32>, tensor<3x2xf32>)"
    ), "{t}");
    assert!(t.contains("\"stablehlo.dot_general\"(%arg0, %arg1) {dot_dimension_numbers = #stablehlo.dot<lhs_contracting_dimensions = [1], rhs_contracting_dimensions = [0]>} : (tensor<4x3xf32>, tensor<3x2xf32>) -> tensor<4x2xf32>"), "{t}");
    assert!(t.contains(&format!("loc(\"{}\":", file!())), "{t}");
    assert!(t.contains("\"stablehlo.reduce\""), "{t}");
    assert!(t.contains("func.return"), "{t}");
    let t = lower(
        &g,
        &LowerOptions {
            no_locations: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!t.contains("loc("), "{t}");
}

#[test]
fn arg_attributes_for_sharding_and_donation() {
    let g = mlp();
    let opts = LowerOptions {
        arg_shardings: vec![
            Some(Sharding::Mesh(vec![Some("data".into()), None])),
            Some(Sharding::Replicated),
        ],
        mesh: Some(Mesh {
            axes: vec![("data".into(), 2)],
        }),
        aliases: vec![(1, 1)],
        num_partitions: 2,
        ..Default::default()
    };
    let t = lower(&g, &opts).unwrap();
    assert!(
        t.contains("%arg0: tensor<4x3xf32> {mhlo.sharding = \"{devices=[2,1]0,1}\"}"),
        "{t}"
    );
    assert!(t.contains("%arg1: tensor<3x2xf32> {mhlo.sharding = \"{replicated}\", tf.aliasing_output = 1 : i32}"), "{t}");
    assert!(t.contains("mhlo.num_partitions = 2 : i32"), "{t}");
    let bad = LowerOptions {
        aliases: vec![(0, 1)],
        ..Default::default()
    };
    let e = lower(&g, &bad).unwrap_err().to_string();
    assert!(e.contains("cannot alias"), "{e}");
    assert_eq!(
        hlo_sharding(&Sharding::Raw("{maximal device=0}".into()), 2, None).unwrap(),
        "{maximal device=0}"
    );
}

/// One device, so `Sharding::Mesh` annotations lower on a single CPU.
fn one_device() -> LowerOptions {
    LowerOptions {
        mesh: Some(Mesh {
            axes: vec![("data".into(), 1)],
        }),
        ..Default::default()
    }
}

#[test]
fn every_gradcheck_graph_lowers() {
    for c in cases().unwrap() {
        let t = lower(&c.graph, &one_device()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        check_ssa(&t);
        let p = prepare(&c).unwrap();
        let t = lower(&p.grads, &one_device()).unwrap_or_else(|e| panic!("{} grads: {e}", c.name));
        check_ssa(&t);
    }
}

#[test]
fn forward_cases_lower() {
    for (name, g, _) in forward_cases() {
        let t = lower(&g, &one_device()).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_ssa(&t);
    }
}

#[test]
fn op_spellings() {
    let mut g = Graph::new("ops");
    let x = g.input("x", TensorType::f32([1, 4, 4, 2])).unwrap();
    let k = g.parameter("k", TensorType::f32([3, 3, 2, 3])).unwrap();
    let c = g.conv2d(x, k, [2, 2], Padding::Same, [1, 1]).unwrap();
    let m = g.max_pool2d(c, [2, 2], [1, 1], Padding::Valid).unwrap();
    let a = g.argmax(m, 3).unwrap();
    let s = g.shard(m, Sharding::Replicated).unwrap();
    let big = g.scalar(f64::NEG_INFINITY, DType::F32).unwrap();
    let u = g.scalar(4_000_000_000.0, DType::U32).unwrap();
    g.set_outputs(&[s, a, big, u]).unwrap();
    let t = lower(&g, &LowerOptions::default()).unwrap();
    check_ssa(&t);
    for want in [
        "dimension_numbers = #stablehlo.conv<[b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f]>",
        "window_strides = array<i64: 2, 2>",
        "padding = dense<[[0, 1], [0, 1]]> : tensor<2x2xi64>",
        "\"stablehlo.reduce_window\"",
        "window_dimensions = array<i64: 1, 2, 2, 1>",
        "call_target_name = \"Sharding\", mhlo.sharding = \"{replicated}\"",
        "dense<0xFF800000> : tensor<f32>",
        "dense<4000000000> : tensor<ui32>",
        "-> (tensor<1x1x1xf32>, tensor<1x1x1xi32>)",
    ] {
        assert!(t.contains(want), "missing {want}\n{t}");
    }
}

#[test]
fn logical_constraints_follow_axis_rules() {
    let mut g = Graph::new("logical");
    let x = g.input("x", TensorType::f32([4, 6])).unwrap();
    let y = g.logical_axes(x, &[Some("batch"), Some("mlp")]).unwrap();
    let z = g.exp(y).unwrap();
    g.set_outputs(&[z]).unwrap();
    // One device: the hint is dropped.
    let t = lower(&g, &LowerOptions::default()).unwrap();
    assert!(!t.contains("Sharding"), "{t}");
    let opts = LowerOptions {
        mesh: Some(Mesh {
            axes: vec![("data".into(), 2), ("model".into(), 2)],
        }),
        axis_rules: vec![
            ("batch".into(), "data".into()),
            ("mlp".into(), "model".into()),
        ],
        num_partitions: 4,
        ..Default::default()
    };
    let t = lower(&g, &opts).unwrap();
    assert!(
        t.contains("mhlo.sharding = \"{devices=[2,2]0,1,2,3}\""),
        "{t}"
    );
}

#[test]
fn sharding_errors_name_the_model_line() {
    let mut g = Graph::new("bad_axis");
    let x = g.input("x", TensorType::f32([4, 6])).unwrap();
    let y = g
        .shard(x, Sharding::Mesh(vec![Some("rows".into()), None]))
        .unwrap();
    g.set_outputs(&[y]).unwrap();
    let e = lower(&g, &one_device()).unwrap_err().to_string();
    assert!(
        e.starts_with("sharding at lower/src/tests.rs:") && e.contains("no axis \"rows\""),
        "{e}"
    );
}

#[test]
fn sort_custom_vjp_and_narrow_int_spellings() {
    let mut g = Graph::new("sort");
    let x = g.input("x", TensorType::f32([2, 5])).unwrap();
    let k = g.input("k", TensorType::new(DType::I8, [2, 5])).unwrap();
    let s = g.sort_with_payload(x, &[k], 1, true).unwrap();
    let a = g.argsort(k, 0, false).unwrap();
    let q = g.convert(x, DType::I4).unwrap();
    let u = g.scalar(-1.0, DType::U4).unwrap();
    let y = g
        .custom_vjp(
            "twice",
            &[x],
            |g, xs| Ok(vec![g.add(xs[0], xs[0])?]),
            |g, _, _, cts| Ok(vec![Some(g.mul_scalar(cts[0], 2.0)?)]),
        )
        .unwrap()[0];
    g.set_outputs(&[s[0], s[1], a, q, u, y]).unwrap();
    let t = lower(&g, &LowerOptions::default()).unwrap();
    check_ssa(&t);
    for want in [
        "\"stablehlo.sort\"(%arg0, %arg1) (",
        "^bb0(%",
        "{dimension = 1 : i64, is_stable = true} : (tensor<2x5xf32>, tensor<2x5xi8>) -> (tensor<2x5xf32>, tensor<2x5xi8>)",
        // argsort: an iota payload; i8 keys compare signed.
        "{iota_dimension = 0 : i64} : () -> tensor<2x5xi32>",
        "{dimension = 0 : i64, is_stable = true} : (tensor<2x5xi8>, tensor<2x5xi32>) -> (tensor<2x5xi8>, tensor<2x5xi32>)",
        "compare_type = #stablehlo<comparison_type SIGNED>",
        "-> tensor<2x5xi4>",
        "dense<15> : tensor<ui4>",
    ] {
        assert!(t.contains(want), "missing {want}\n{t}");
    }
    // The custom VJP's forward is inlined; its backward is not emitted.
    assert!(t.contains("\"stablehlo.add\"(%arg0, %arg0)"), "{t}");
    assert!(!t.contains("stablehlo.multiply"), "{t}");
}
