//! Text-level checks of the lowering. Execution tests run through PJRT
//! elsewhere; `dump_cases_for_xla` writes every gradient-check case out for
//! `tools/check_with_jax.py`.

use crate::{hlo_sharding, lower, LowerOptions, Mesh};
use graph::gradcheck::{cases, prepare};
use graph::interp::{eval, HostTensor};
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

fn json_str(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c if (c as u32) < 0x20 => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn json_tensors(ts: &[HostTensor]) -> String {
    let parts: Vec<String> = ts
        .iter()
        .map(|t| {
            let data: Vec<String> = t.data.iter().map(|v| format!("{v:?}")).collect();
            let dims: Vec<String> = t.dims().iter().map(|d| d.to_string()).collect();
            format!(
                "{{\"dtype\": \"{}\", \"dims\": [{}], \"data\": [{}]}}",
                t.dtype(),
                dims.join(", "),
                data.join(", ")
            )
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Forward-only graphs with integer outputs or edge semantics.
fn forward_cases() -> Vec<(&'static str, Graph, Vec<HostTensor>)> {
    let f = |d: &[i64], v: &[f32]| HostTensor::f32(d, v).unwrap();
    let mut out = Vec::new();

    let mut g = Graph::new("argmax_ties");
    let x = g.input("x", TensorType::f32([2, 3])).unwrap();
    let a = g.argmax(x, 1).unwrap();
    g.set_outputs(&[a]).unwrap();
    out.push((
        "argmax_ties",
        g,
        vec![f(&[2, 3], &[1., 5., 5., 7., 0., 7.])],
    ));

    let mut g = Graph::new("rng_bits");
    let s = g.input("seed", TensorType::scalar(DType::U32)).unwrap();
    let b = g.rng_bits(s, 9, [3, 4]).unwrap();
    g.set_outputs(&[b]).unwrap();
    out.push(("rng_bits", g, vec![HostTensor::scalar(DType::U32, 1234.0)]));

    let mut g = Graph::new("int_ops");
    let x = g.input("x", TensorType::new(DType::I32, [4])).unwrap();
    let y = g.input("y", TensorType::new(DType::I32, [4])).unwrap();
    let q = g.div(x, y).unwrap();
    let r = g.rem(x, y).unwrap();
    let big = g.scalar(2_000_000_000.0, DType::I32).unwrap();
    let w = g.add(x, big).unwrap();
    let w = g.add(w, big).unwrap();
    let c = g.concatenate(&[q, r, w], 0).unwrap();
    g.set_outputs(&[c]).unwrap();
    let ints = |v: &[i32]| HostTensor::i32(&[4], v).unwrap();
    out.push((
        "int_ops",
        g,
        vec![ints(&[7, -7, 9, -9]), ints(&[2, 2, -4, -4])],
    ));

    let mut g = Graph::new("clamping");
    let t = g.input("t", TensorType::f32([3, 2])).unwrap();
    let ids = g.input("ids", TensorType::new(DType::I32, [2])).unwrap();
    let i = g.input("i", TensorType::scalar(DType::I32)).unwrap();
    let ga = g.gather(t, ids).unwrap();
    let z = g.scalar(0.0, DType::I32).unwrap();
    let ds = g.dynamic_slice(t, &[i, z], &[2, 2]).unwrap();
    let c = g.concatenate(&[ga, ds], 0).unwrap();
    g.set_outputs(&[c]).unwrap();
    out.push((
        "clamping",
        g,
        vec![
            f(&[3, 2], &[1., 2., 3., 4., 5., 6.]),
            HostTensor::i32(&[2], &[-1, 7]).unwrap(),
            HostTensor::scalar(DType::I32, 5.0),
        ],
    ));

    // bf16 x bf16 -> f32 dots in the layouts transformer code emits.
    for (name, ld, rd, dims) in [
        (
            "bf16_dot_matmul",
            vec![4, 8],
            vec![8, 3],
            graph::DotDims::contract(&[1], &[0]),
        ),
        (
            "bf16_dot_nt",
            vec![4, 8],
            vec![3, 8],
            graph::DotDims::contract(&[1], &[1]),
        ),
        (
            "bf16_dot_tn",
            vec![8, 4],
            vec![8, 3],
            graph::DotDims::contract(&[0], &[0]),
        ),
        (
            "bf16_dot_attention_scores",
            vec![2, 3, 4, 8],
            vec![2, 3, 5, 8],
            graph::DotDims {
                lhs_batch: vec![0, 1],
                rhs_batch: vec![0, 1],
                lhs_contract: vec![3],
                rhs_contract: vec![3],
            },
        ),
        (
            "bf16_dot_attention_values",
            vec![2, 3, 4, 5],
            vec![2, 3, 5, 8],
            graph::DotDims {
                lhs_batch: vec![0, 1],
                rhs_batch: vec![0, 1],
                lhs_contract: vec![3],
                rhs_contract: vec![2],
            },
        ),
        (
            "bf16_dot_batch_not_leading",
            vec![4, 2, 5],
            vec![5, 2, 3],
            graph::DotDims {
                lhs_batch: vec![1],
                rhs_batch: vec![1],
                lhs_contract: vec![2],
                rhs_contract: vec![0],
            },
        ),
    ] {
        let mut g = Graph::new(name);
        let a = g
            .input("a", TensorType::new(DType::BF16, ld.clone()))
            .unwrap();
        let b = g
            .input("b", TensorType::new(DType::BF16, rd.clone()))
            .unwrap();
        let y = g.dot_general(a, b, dims, Some(DType::F32)).unwrap();
        g.set_outputs(&[y]).unwrap();
        // Small integers are exact in bf16.
        let fill = |d: &[i64], k: i64| {
            let n: i64 = d.iter().product();
            let v = (0..n).map(|i| ((i * k) % 7 - 3) as f64).collect();
            HostTensor::new(TensorType::new(DType::BF16, d.to_vec()), v).unwrap()
        };
        out.push((name, g, vec![fill(&ld, 3), fill(&rd, 5)]));
    }
    out
}

/// With `RXLA_DUMP_DIR` set, writes each case's forward and gradient
/// module with arguments and interpreter results as JSON.
#[test]
fn dump_cases_for_xla() {
    let Ok(dir) = std::env::var("RXLA_DUMP_DIR") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    for c in cases().unwrap() {
        let p = prepare(&c).unwrap();
        for (suffix, g) in [("fwd", &c.graph), ("grad", &p.grads)] {
            let text = lower(g, &one_device()).unwrap();
            let want = eval(g, &c.args).unwrap();
            let json = format!(
                "{{\"name\": \"{}_{suffix}\", \"mlir\": {}, \"args\": {}, \"expected\": {}}}",
                c.name,
                json_str(&text),
                json_tensors(&c.args),
                json_tensors(&want)
            );
            std::fs::write(format!("{dir}/{}_{suffix}.json", c.name), json).unwrap();
        }
    }
    for (name, g, args) in forward_cases() {
        let text = lower(&g, &one_device()).unwrap();
        check_ssa(&text);
        let want = eval(&g, &args).unwrap();
        let json = format!(
            "{{\"name\": \"{name}\", \"mlir\": {}, \"args\": {}, \"expected\": {}}}",
            json_str(&text),
            json_tensors(&args),
            json_tensors(&want)
        );
        std::fs::write(format!("{dir}/{name}.json"), json).unwrap();
    }
}
