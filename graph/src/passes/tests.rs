//! Passes on the interpreter: same outputs, fewer residuals, verified graphs.

use super::*;
use crate::autodiff::grad;
use crate::gradcheck::Lcg;
use crate::interp::{eval, HostTensor};
use crate::{verify, DType, Graph, GraphError, TensorType};
use std::collections::BTreeMap;

/// `blocks` residual MLP blocks (layer norm, dense, gelu, dropout, dense),
/// each a region, then an untagged head and cross-entropy; the step
/// outputs the loss and every gradient. Returns the graph and its args.
fn mlp_step(blocks: usize, batch: i64, d: i64) -> (Graph, Vec<HostTensor>) {
    let mut g = Graph::new("mlp_step");
    let mut rng = Lcg::new(3);
    let mut args = Vec::new();
    let mut arg = |g: &mut Graph,
                   args: &mut Vec<HostTensor>,
                   name: &str,
                   dims: &[i64],
                   scale: f64,
                   param: bool| {
        let ty = TensorType::f32(dims.to_vec());
        let n = ty.shape.num_elements() as usize;
        args.push(
            HostTensor::new(
                ty.clone(),
                (0..n).map(|_| rng.next(-scale, scale)).collect(),
            )
            .unwrap(),
        );
        if param {
            g.parameter(name, ty).unwrap()
        } else {
            g.input(name, ty).unwrap()
        }
    };
    let x = arg(&mut g, &mut args, "x", &[batch, d], 1.0, false);
    let mut params = Vec::new();
    let mut h = x;
    for b in 0..blocks {
        let w1 = arg(
            &mut g,
            &mut args,
            &format!("b{b}.w1"),
            &[d, 2 * d],
            0.5,
            true,
        );
        let b1 = arg(&mut g, &mut args, &format!("b{b}.b1"), &[2 * d], 0.1, true);
        let w2 = arg(
            &mut g,
            &mut args,
            &format!("b{b}.w2"),
            &[2 * d, d],
            0.5,
            true,
        );
        let gamma = arg(&mut g, &mut args, &format!("b{b}.gamma"), &[d], 1.0, true);
        params.extend([w1, b1, w2, gamma]);
        let seed = g
            .input(&format!("b{b}.seed"), TensorType::scalar(DType::I32))
            .unwrap();
        args.push(HostTensor::scalar(DType::I32, 17.0 + b as f64));
        h = g
            .region(&format!("block{b}"), |g| -> crate::Result<_> {
                let zero = g.zeros_like(gamma)?;
                let n = g.layer_norm(h, gamma, zero, 1e-5)?;
                let u = g.dot(n, w1)?;
                let u = g.add(u, b1)?;
                let u = g.gelu(u)?;
                let u = g.dropout(u, 0.25, seed, b as u32)?;
                let y = g.dot(u, w2)?;
                g.add(h, y)
            })
            .unwrap();
    }
    let wo = arg(&mut g, &mut args, "head.w", &[d, 5], 0.5, true);
    params.push(wo);
    let labels = g
        .input("labels", TensorType::new(DType::I32, [batch]))
        .unwrap();
    args.push(
        HostTensor::i32(
            &[batch],
            &(0..batch as i32).map(|i| i % 5).collect::<Vec<_>>(),
        )
        .unwrap(),
    );
    let logits = g.dot(h, wo).unwrap();
    let loss = g.cross_entropy(logits, labels).unwrap();
    let (mut g, grads) = grad(&g, loss, &params).unwrap();
    let mut outs = vec![loss];
    outs.extend(grads);
    g.set_outputs(&outs).unwrap();
    verify(&g).unwrap();
    (g, args)
}

fn count_ops(g: &Graph, f: impl Fn(&Op) -> bool) -> usize {
    g.nodes.iter().filter(|n| f(&n.op)).count()
}

#[test]
fn remat_policies_compute_the_same_bits_with_fewer_residuals() {
    let (g, args) = mlp_step(3, 4, 6);
    let want = eval(&g, &args).unwrap();
    let mut kept = BTreeMap::new();
    for policy in [RematPolicy::None, RematPolicy::SaveDots, RematPolicy::Full] {
        let (r, report) = remat(&g, &policy).unwrap();
        verify(&r).unwrap();
        assert_eq!(eval(&r, &args).unwrap(), want, "{policy:?}");
        assert_eq!(report.residuals_before, residuals(&g).len());
        assert_eq!(report.residuals_after, residuals(&r).len());
        assert_eq!(report.regions.len(), 3);
        kept.insert(
            format!("{policy:?}"),
            (
                report.residuals_after,
                report.residual_bytes_after,
                report.cloned_nodes,
            ),
        );
        match policy {
            RematPolicy::None => {
                assert_eq!(r.len(), g.len());
                assert!(report.rematerialized().is_empty());
            }
            _ => {
                assert_eq!(report.rematerialized(), vec!["block0", "block1", "block2"]);
                assert_eq!(count_ops(&r, |o| matches!(o, Op::OptimizationBarrier)), 3);
                let gtes = r
                    .nodes
                    .iter()
                    .filter(|n| {
                        matches!(n.op, Op::GetTupleElement(_))
                            && matches!(r.nodes[n.inputs[0].index()].op, Op::OptimizationBarrier)
                    })
                    .count();
                assert_eq!(r.len(), g.len() + report.cloned_nodes + 3 + gtes);
            }
        }
    }
    let (none, dots, full) = (kept["None"], kept["SaveDots"], kept["Full"]);
    assert!(
        full.0 < dots.0 && dots.0 < none.0,
        "residual counts {kept:?}"
    );
    assert!(
        full.1 < dots.1 && dots.1 < none.1,
        "residual bytes {kept:?}"
    );
    assert!(full.2 > dots.2, "Full clones more than SaveDots: {kept:?}");
}

#[test]
fn clones_sit_behind_a_barrier_on_a_backward_value() {
    let (g, _) = mlp_step(2, 3, 4);
    let (r, report) = remat(&g, &RematPolicy::Full).unwrap();
    let users = region::users(&r);
    let constant = region::constant_like(&r);
    for (i, n) in r.nodes.iter().enumerate() {
        let id = NodeId(i as u32);
        if let Op::OptimizationBarrier = n.op {
            let region = r.regions.region_of(id).unwrap();
            assert_eq!(r.regions.tag(id), Some(NodeTag::Backward(Some(region))));
            // The last operand is the backward value that triggers recomputation.
            let t = *n.inputs.last().unwrap();
            assert!(r.regions.is_backward(t), "trigger {t} of {id}");
            // Its other operands are forward values or arguments: the inputs.
            for &x in &n.inputs[..n.inputs.len() - 1] {
                assert!(!r.regions.is_backward(x));
            }
        }
        // No backward node reads a value the region could recompute.
        if let Some(NodeTag::Forward(reg)) = r.regions.tag(id) {
            let outside_forward = users[i]
                .iter()
                .any(|&u| !r.regions.is_backward(u) && r.regions.forward_region(u) != Some(reg));
            let read_by_backward = users[i].iter().any(|&u| {
                r.regions.is_backward(u)
                    && !matches!(r.nodes[u.index()].op, Op::OptimizationBarrier)
            });
            if read_by_backward && !region::is_free(&n.op) && !constant[i] {
                assert!(
                    outside_forward || r.outputs.contains(&id),
                    "{id} {:?} kept",
                    n.op
                );
            }
        }
    }
    // Remat of a remat'd graph has nothing left to do.
    let (r2, again) = remat(&r, &RematPolicy::Full).unwrap();
    assert_eq!(again.cloned_nodes, 0, "{again}");
    assert_eq!(r2.len(), r.len());
    assert!(report.cloned_nodes > 0);
}

#[test]
fn estimate_and_budget_choose_per_region() {
    let (g, args) = mlp_step(3, 4, 6);
    let est = estimate(&g).unwrap();
    assert_eq!(est.regions.len(), 3);
    for r in &est.regions {
        assert!(r.full < r.save_dots && r.save_dots < r.none, "{r:?}");
    }
    let all = |p| {
        est.regions
            .iter()
            .map(|r| (r.name.clone(), p))
            .collect::<BTreeMap<_, _>>()
    };
    let none = est.total(&all(RegionPolicy::None));
    let full = est.total(&all(RegionPolicy::Full));
    assert_eq!(est.plan_for_budget(u64::MAX), all(RegionPolicy::None));
    assert_eq!(est.plan_for_budget(0), all(RegionPolicy::Full));
    // A budget between: some regions change, the total fits.
    let mid = (none + full) / 2;
    let plan = est.plan_for_budget(mid);
    assert!(est.total(&plan) <= mid, "{plan:?}");
    assert!(plan.values().any(|&p| p != RegionPolicy::None));
    let want = eval(&g, &args).unwrap();
    let (r, report) = remat(&g, &RematPolicy::Budget(mid)).unwrap();
    verify(&r).unwrap();
    assert_eq!(eval(&r, &args).unwrap(), want);
    for rr in &report.regions {
        assert_eq!(rr.policy, plan[&rr.name]);
    }
    // An explicit choice; unknown names are errors.
    let mut m = BTreeMap::new();
    m.insert("block1".to_string(), RegionPolicy::Full);
    let (r, report) = remat(&g, &RematPolicy::PerRegion(m.clone())).unwrap();
    assert_eq!(report.rematerialized(), vec!["block1"]);
    assert_eq!(eval(&r, &args).unwrap(), want);
    m.insert("block9".to_string(), RegionPolicy::Full);
    let e = remat(&g, &RematPolicy::PerRegion(m))
        .unwrap_err()
        .to_string();
    assert!(e.contains("block9"), "{e}");
}

#[test]
fn remat_recomputes_a_scan_inside_a_region() {
    let mut g = Graph::new("scan_region");
    let w = g.parameter("w", TensorType::f32([3])).unwrap();
    let h0 = g.input("h0", TensorType::f32([3])).unwrap();
    let y = g
        .region("rnn", |g| -> crate::Result<_> {
            let out = g.scan(4, &[w], &[h0], &[], false, |b, a| {
                let h = b.mul(a.carries[0], a.consts[0])?;
                let h = b.sin(h)?;
                Ok((vec![h], vec![h]))
            })?;
            let s = g.tanh(out.ys[0])?;
            g.mul(s, s)
        })
        .unwrap();
    let l = g.sum_all(y).unwrap();
    let (mut g, gr) = grad(&g, l, &[w]).unwrap();
    g.set_outputs(&[l, gr[0]]).unwrap();
    let args = [
        HostTensor::f32(&[3], &[0.5, 1.5, -0.7]).unwrap(),
        HostTensor::f32(&[3], &[1.0, -1.0, 0.3]).unwrap(),
    ];
    let want = eval(&g, &args).unwrap();
    let (r, report) = remat(&g, &RematPolicy::Full).unwrap();
    verify(&r).unwrap();
    assert!(report.cloned_nodes > 0, "{report}");
    assert_eq!(
        count_ops(&r, |o| matches!(o, Op::Scan(_))),
        count_ops(&g, |o| matches!(o, Op::Scan(_))) + 1
    );
    assert_eq!(eval(&r, &args).unwrap(), want);
}

#[test]
fn mixed_precision_rewrites_forward_and_backward_dots() {
    let (g, args) = mlp_step(2, 4, 6);
    let dots = count_ops(&g, |o| matches!(o, Op::DotGeneral { .. }));
    let (m, report) = mixed_precision(&g, &PrecisionPolicy::bf16()).unwrap();
    verify(&m).unwrap();
    // Forward dots (5) and two per dot in the backward pass (10): the forward and
    // input-gradient dots go bf16; the weight-gradient dots (lhs contracted over its leading
    // batch dim) stay f32, since XLA CPU has no bf16 kernel for that layout.
    assert_eq!(dots, 15);
    assert_eq!(report.dots + report.kept_wide, dots);
    assert_eq!(report.kept_wide, 5, "{report:?}");
    let mut narrow = 0;
    for n in &m.nodes {
        if let Op::DotGeneral { out_dtype, dims } = &n.op {
            let lhs_bf16 = m.dtype(n.inputs[0]).unwrap() == DType::BF16;
            assert_eq!(lhs_bf16, m.dtype(n.inputs[1]).unwrap() == DType::BF16);
            if lhs_bf16 {
                narrow += 1;
                assert_eq!(*out_dtype, Some(DType::F32));
                let rank = m.rank(n.inputs[0]).unwrap();
                assert_eq!(
                    dims.lhs_contract,
                    vec![rank - 1],
                    "lhs contracted over its last dim"
                );
            }
        }
    }
    assert_eq!(narrow, report.dots);
    // Each value is cast once: the backward dots reuse the forward casts.
    assert!(report.casts < 2 * dots, "{report:?}");
    let converts = count_ops(&m, |o| matches!(o, Op::Convert(DType::BF16)))
        - count_ops(&g, |o| matches!(o, Op::Convert(DType::BF16)));
    assert_eq!(converts, report.casts);
    // Arguments and outputs keep their types (master weights stay f32).
    for (a, b) in g.args().iter().zip(m.args()) {
        assert_eq!(g.ty(*a).unwrap(), m.ty(b).unwrap());
    }
    for (a, b) in g.outputs.iter().zip(&m.outputs) {
        assert_eq!(g.ty(*a).unwrap(), m.ty(*b).unwrap());
    }
    // The interpreter does not round to bf16: the same values up to f64 round-off.
    let (want, got) = (eval(&g, &args).unwrap(), eval(&m, &args).unwrap());
    for (a, b) in want.iter().zip(&got) {
        for (x, y) in a.data.iter().zip(&b.data) {
            assert!((x - y).abs() <= 1e-12 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
    // Remat after mixed precision clones the casts too and keeps the bits.
    let (r, rr) = remat(&m, &RematPolicy::Full).unwrap();
    verify(&r).unwrap();
    assert!(rr.cloned_nodes > 0);
    assert_eq!(eval(&r, &args).unwrap(), got);
    // A second pass finds nothing to do; f32 changes nothing.
    let (_, again) = mixed_precision(&m, &PrecisionPolicy::bf16()).unwrap();
    assert_eq!((again.dots, again.casts), (0, 0));
    let (same, none) = mixed_precision(&g, &PrecisionPolicy::f32()).unwrap();
    assert_eq!((none.dots, same.len()), (0, g.len()));
}

#[test]
fn mixed_precision_reads_narrow_values_directly() {
    // A dot the model already runs in bf16: its backward dots read bf16
    // operands through converts; the pass leaves them alone.
    let mut g = Graph::new("t");
    let x = g.input("x", TensorType::f32([2, 3])).unwrap();
    let w = g.parameter("w", TensorType::f32([3, 4])).unwrap();
    let xb = g.convert(x, DType::BF16).unwrap();
    let wide = g.convert(xb, DType::F32).unwrap();
    let y = g.dot(wide, w).unwrap();
    let l = g.sum_all(y).unwrap();
    let (mut g, gr) = grad(&g, l, &[w]).unwrap();
    g.set_outputs(&[l, gr[0]]).unwrap();
    let (m, report) = mixed_precision(&g, &PrecisionPolicy::bf16()).unwrap();
    verify(&m).unwrap();
    assert_eq!(report.casts_avoided, 1, "{report:?}");
    let dot = m
        .nodes
        .iter()
        .find(|n| matches!(n.op, Op::DotGeneral { .. }))
        .unwrap();
    assert_eq!(dot.inputs[0], report.map[xb.index()]);
}

#[test]
fn remat_within_searches_the_ladder_with_a_measure() {
    let (g, args) = mlp_step(4, 4, 6);
    let est = estimate(&g).unwrap();
    let ladder = est.ladder();
    assert_eq!(ladder.len(), 1 + 2 * 4);
    let totals: Vec<u64> = ladder.iter().map(|p| est.total(p)).collect();
    assert!(totals.windows(2).all(|w| w[1] < w[0]), "{totals:?}");
    // Measured = residual bytes of the rematerialized graph.
    let measure = |r: &Graph| -> crate::Result<u64> {
        Ok(residuals(r).iter().map(|&x| node_bytes(r, x)).sum())
    };
    let all = measure(&g).unwrap();
    let (r, report, bytes) = remat_within(&g, u64::MAX, measure).unwrap();
    assert_eq!((report.cloned_nodes, bytes), (0, all));
    let (_, _, least) = remat_within(&g, 0, measure).unwrap();
    let mut calls = 0;
    let budget = (all + least) / 2;
    let (r2, report, bytes) = remat_within(&g, budget, |x: &Graph| {
        calls += 1;
        measure(x)
    })
    .unwrap();
    assert!(bytes <= budget && bytes > least, "{bytes} vs {budget}");
    assert!(calls <= 4, "{calls} measurements");
    assert!(!report.rematerialized().is_empty());
    verify(&r2).unwrap();
    assert_eq!(eval(&r2, &args).unwrap(), eval(&r, &args).unwrap());
}

#[test]
fn passes_accept_sort_and_custom_vjp_in_regions() {
    // A block with a dot, a custom VJP (a reversible-style coupling) and a
    // sort over its features; every pass keeps the values.
    let mut g = Graph::new("sort_custom");
    let x = g.input("x", TensorType::f32([3, 4])).unwrap();
    let w = g.parameter("w", TensorType::f32([4, 4])).unwrap();
    let y = g
        .region("block", |g| -> crate::Result<_> {
            let h = g.dot(x, w)?;
            let c = g.custom_vjp(
                "tanh_coupling",
                &[h, x],
                |g, xs| {
                    let t = g.tanh(xs[1])?;
                    Ok(vec![g.add(xs[0], t)?])
                },
                |g, xs, _, cts| {
                    let t = g.tanh(xs[1])?;
                    let t2 = g.mul(t, t)?;
                    let one = g.ones_like(t2)?;
                    let d = g.sub(one, t2)?;
                    Ok(vec![Some(cts[0]), Some(g.mul(cts[0], d)?)])
                },
            )?;
            let s = g.sort(c[0], 1, true)?;
            let s = g.dot(s, w)?;
            g.mul(s, s)
        })
        .unwrap();
    let l = g.sum_all(y).unwrap();
    let (mut g, gr) = grad(&g, l, &[w]).unwrap();
    g.set_outputs(&[l, gr[0]]).unwrap();
    let sorts = count_ops(&g, |o| matches!(o, Op::Sort { .. }));
    assert_eq!(sorts, 2, "the forward sort (now with indices) and its VJP");
    assert!(g
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Sort { indices: true, .. })));
    let mut rng = Lcg::new(5);
    let mut arg = |n: usize, dims: &[i64]| {
        HostTensor::f32(
            dims,
            &(0..n)
                .map(|_| rng.next(-1.0, 1.0) as f32)
                .collect::<Vec<_>>(),
        )
        .unwrap()
    };
    let args = [arg(12, &[3, 4]), arg(16, &[4, 4])];
    let want = eval(&g, &args).unwrap();
    let (m, report) = mixed_precision(&g, &PrecisionPolicy::bf16()).unwrap();
    assert!(report.dots > 0, "{report:?}");
    let got = eval(&m, &args).unwrap();
    for (a, b) in want.iter().zip(&got) {
        for (x, y) in a.data.iter().zip(&b.data) {
            assert!((x - y).abs() <= 1e-12 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
    let (r, rr) = remat(&m, &RematPolicy::Full).unwrap();
    assert!(rr.cloned_nodes > 0, "{rr}");
    assert!(
        count_ops(&r, |o| matches!(o, Op::CustomVjp(_))) >= 2,
        "recomputed"
    );
    assert_eq!(eval(&r, &args).unwrap(), got);
}

#[test]
fn an_invalid_result_is_an_error_naming_the_pass_or_its_input() {
    let (g, _) = mlp_step(1, 2, 3);
    let mut bad = g.clone();
    let dot = bad
        .ids()
        .find(|&id| matches!(bad.nodes[id.index()].op, Op::DotGeneral { .. }))
        .unwrap();
    bad.nodes[dot.index()].ty = crate::NodeType::Tensor(TensorType::f32([7]));
    let e = checked("remat", &g, bad.clone()).unwrap_err();
    assert!(
        matches!(e, GraphError::PassOutput { pass: "remat", .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.starts_with("pass `remat` produced an invalid graph: node %")
            && msg.contains("stored type f32[7]"),
        "{msg}"
    );
    let e = checked("remat", &bad, bad.clone()).unwrap_err().to_string();
    assert!(
        e.starts_with("the input of pass `remat` does not verify"),
        "{e}"
    );

    // grad checks its result: an input broken off the gradient path is blamed.
    let mut h = Graph::new("t");
    let x = h.parameter("x", TensorType::f32([2])).unwrap();
    let unused = h.exp(x).unwrap();
    let l = h.sum_all(x).unwrap();
    h.nodes[unused.index()].ty = crate::NodeType::Tensor(TensorType::new(DType::F64, [2]));
    let e = grad(&h, l, &[x]).unwrap_err().to_string();
    assert!(
        e.starts_with("the input of pass `grad` does not verify: node %1 (exponential"),
        "{e}"
    );
}
