//! Every kernel against dense attention (or a dense reference with the kernel's mask) and
//! against finite differences, on the reference interpreter (f64 math).

use graph::gradcheck::{check, interp_evaluator, CaseBuilder, GradCase, Tolerance};
use graph::interp::{eval, HostTensor};
use graph::{DType, DotDims, Graph, NodeId, TensorType};

use crate::attention::dense_attention;
use crate::kernels::block_sparse::{block_sparse_attention, Pattern};
use crate::kernels::{axial, chunked, hide, local, lsh, positions, NEG};

const B: i64 = 2;
const H: i64 = 2;
const HD: i64 = 3;

type Kernel = dyn Fn(&mut Graph, NodeId, NodeId, NodeId, Option<NodeId>) -> graph::Result<NodeId>;

/// q, k, v `(B, H, T, HD)` and, with `masked`, a key mask hiding the last key of batch 1
/// (every query keeps a visible key, so no kernel meets an all-hidden row).
fn case(name: &'static str, t: i64, masked: bool, kernel: &Kernel) -> GradCase {
    let mut c = CaseBuilder::new(name, 3);
    let q = c.x(&[B, H, t, HD]).unwrap();
    let k = c.x(&[B, H, t, HD]).unwrap();
    let v = c.x(&[B, H, t, HD]).unwrap();
    let m = masked.then(|| {
        let data = (0..B * t)
            .map(|i| if i == 2 * t - 1 { 0.0 } else { 1.0 })
            .collect();
        c.input_with(TensorType::new(DType::Bool, [B, t]), data)
            .unwrap()
    });
    let y = kernel(&mut c.g, q, k, v, m).unwrap();
    c.finish(name, y).unwrap()
}

fn run(c: &GradCase) -> HostTensor {
    graph::verify(&c.graph).unwrap();
    eval(&c.graph, &c.args).unwrap().remove(0)
}

fn max_diff(a: &HostTensor, b: &HostTensor) -> f64 {
    assert_eq!(a.ty, b.ty);
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn dense(
    causal: bool,
) -> impl Fn(&mut Graph, NodeId, NodeId, NodeId, Option<NodeId>) -> graph::Result<NodeId> {
    move |g, q, k, v, m| dense_attention(g, q, k, v, causal, m, |_, p| Ok(p))
}

/// Dense attention with an arbitrary `(T, T)` visibility (row: query, column: key).
fn masked_dense(
    visible: Vec<bool>,
) -> impl Fn(&mut Graph, NodeId, NodeId, NodeId, Option<NodeId>) -> graph::Result<NodeId> {
    move |g, q, k, v, m| {
        let d = g.dims(q)?.to_vec();
        let t = d[2];
        let batch = |lc: usize, rc: usize| DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contract: vec![lc],
            rhs_contract: vec![rc],
        };
        let s = g.dot_general(q, k, batch(3, 3), None)?;
        let s = g.mul_scalar(s, 1.0 / (d[3] as f64).sqrt())?;
        let vis: Vec<f32> = visible.iter().map(|&b| b as i32 as f32).collect();
        let vis = g.constant_f32([t, t], vis)?;
        let half = g.full(0.5, TensorType::f32([t, t]))?;
        let vis = g.gt(vis, half)?;
        let sd = g.dims(s)?.to_vec();
        let mut vis = g.broadcast_to(vis, &sd)?;
        if let Some(m) = m {
            let m = g.broadcast_in_dim(m, sd.clone(), &[0, 3])?;
            vis = g.and(vis, m)?;
        }
        let s = hide(g, s, vis)?;
        let p = g.softmax(s, 3)?;
        g.dot_general(p, v, batch(3, 2), None)
    }
}

fn assert_same(a: &GradCase, b: &GradCase, tol: f64) {
    let d = max_diff(&run(a), &run(b));
    assert!(d < tol, "{} vs {}: max difference {d}", a.name, b.name);
}

fn gradcheck(c: &GradCase) {
    check(c, &mut interp_evaluator(), Tolerance::F64).unwrap();
}

#[test]
fn chunked_equals_dense_and_differentiates() {
    for (causal, masked) in [(true, false), (false, true), (true, true)] {
        let d = case("dense", 8, masked, &dense(causal));
        for chunk in [2, 4, 8] {
            let c = case("chunked", 8, masked, &move |g, q, k, v, m| {
                chunked::chunked_attention(g, q, k, v, causal, chunk, m)
            });
            assert_same(&c, &d, 1e-12);
        }
        let c = case("chunked", 8, masked, &move |g, q, k, v, m| {
            chunked::chunked_attention(g, q, k, v, causal, 4, m)
        });
        gradcheck(&c);
    }
}

fn local_case(t: i64, causal: bool, window: i64, block: i64, masked: bool) -> GradCase {
    case("local", t, masked, &move |g, q, k, v, m| {
        local::local_attention(g, q, k, v, causal, window, block, m, &mut |_, p| Ok(p))
    })
}

#[test]
fn local_matches_a_banded_dense_and_dense_when_the_window_covers_t() {
    let t = 8;
    assert_same(
        &local_case(t, true, 8, 8, true),
        &case("d", t, true, &dense(true)),
        1e-12,
    );
    assert_same(
        &local_case(t, true, 20, 8, false),
        &case("d", t, false, &dense(true)),
        1e-12,
    );
    assert_same(
        &local_case(t, false, 16, 8, true),
        &case("d", t, true, &dense(false)),
        1e-12,
    );
    for (causal, window) in [(true, 2), (true, 4), (false, 2), (false, 4)] {
        let vis: Vec<bool> = (0..t * t)
            .map(|x| {
                let (i, j) = (x / t, x % t);
                if causal {
                    i - j >= 0 && i - j < window
                } else {
                    (i - j).abs() <= window / 2
                }
            })
            .collect();
        let want = case("banded dense", t, true, &masked_dense(vis));
        assert_same(&local_case(t, causal, window, window, true), &want, 1e-12);
    }
    gradcheck(&local_case(t, true, 4, 4, true));
    gradcheck(&local_case(t, false, 4, 4, false));
}

fn sparse_case(t: i64, pat: Pattern, masked: bool) -> GradCase {
    case("block_sparse", t, masked, &move |g, q, k, v, m| {
        block_sparse_attention(g, q, k, v, &pat, m, &mut |_, p| Ok(p))
    })
}

#[test]
fn block_sparse_matches_its_pattern_and_dense_when_every_block_is_selected() {
    let t = 12;
    for causal in [true, false] {
        let all = Pattern::new(t, 2, 0, 100, causal, 1);
        assert_same(
            &sparse_case(t, all, true),
            &case("d", t, true, &dense(causal)),
            1e-12,
        );
        // Some blocks: the reference is dense attention masked by the same pattern, with the
        // global rows seeing everything.
        let pat = Pattern::new(t, 2, 2, 1, causal, 5);
        let mut vis = vec![false; (t * t) as usize];
        for i in 0..t {
            for j in 0..t {
                let (bi, bj) = ((i / 2) as usize, (j / 2) as i32);
                let row = &pat.table[bi];
                let picked = row
                    .iter()
                    .zip(&pat.valid[bi])
                    .any(|(&b, &ok)| ok && b == bj);
                let seen = i < pat.global || picked;
                vis[(i * t + j) as usize] = seen && (!causal || j <= i);
            }
        }
        // The pattern is sparse: some pairs are hidden.
        assert!(vis.iter().filter(|v| !**v).count() > if causal { 66 } else { 0 });
        let want = case("pattern dense", t, true, &masked_dense(vis));
        assert_same(&sparse_case(t, pat.clone(), true), &want, 1e-12);
        gradcheck(&sparse_case(t, pat, true));
    }
}

fn axial_case(t: i64, causal: bool, rows: i64, cols: i64, masked: bool) -> GradCase {
    case("axial", t, masked, &move |g, q, k, v, m| {
        axial::axial_attention(g, q, k, v, causal, rows, cols, m, &mut |_, p| Ok(p))
    })
}

#[test]
fn axial_with_one_row_or_column_is_dense_and_differentiates() {
    let t = 6;
    for causal in [true, false] {
        let d = case("d", t, true, &dense(causal));
        assert_same(&axial_case(t, causal, 1, t, true), &d, 1e-12);
        let d = case("d", t, false, &dense(causal));
        assert_same(&axial_case(t, causal, t, 1, false), &d, 1e-12);
        gradcheck(&axial_case(t, causal, 2, 3, true));
    }
}

#[test]
fn axial_causal_output_depends_only_on_the_past() {
    // Changing the last position's k and v leaves every earlier output unchanged.
    let (t, rows, cols) = (6, 2, 3);
    let c = axial_case(t, true, rows, cols, false);
    let a = run(&c);
    let mut c2 = c.clone();
    for arg in [1, 2] {
        for bh in 0..(B * H) as usize {
            let base = bh * (t * HD) as usize + ((t - 1) * HD) as usize;
            for x in &mut c2.args[arg].data[base..base + HD as usize] {
                *x += 0.7;
            }
        }
    }
    let b = run(&c2);
    for bh in 0..(B * H) as usize {
        let s = bh * (t * HD) as usize;
        let last = s + ((t - 1) * HD) as usize;
        assert_eq!(a.data[s..last], b.data[s..last]);
        assert_ne!(a.data[last..last + 3], b.data[last..last + 3]);
    }
}

fn lsh_case(t: i64, causal: bool, bucket_size: i64, n_hashes: i64, masked: bool) -> GradCase {
    case("lsh", t, masked, &move |g, q, _k, v, m| {
        let seed = g.scalar(7.0, DType::U32)?;
        let l = lsh::Lsh {
            causal,
            bucket_size,
            n_hashes,
        };
        l.apply(g, q, v, m, seed, 1, &mut |_, p| Ok(p))
    })
}

/// Shared-QK dense attention: keys are the normalized queries, self scored at -1e5.
fn shared_qk_dense(
    causal: bool,
) -> impl Fn(&mut Graph, NodeId, NodeId, NodeId, Option<NodeId>) -> graph::Result<NodeId> {
    move |g, q, _k, v, m| {
        let d = g.dims(q)?.to_vec();
        let t = d[2];
        let sq = g.mul(q, q)?;
        let n = g.reduce_sum(sq, &[3])?;
        let n = g.add_scalar(n, 1e-6)?;
        let n = g.rsqrt(n)?;
        let n = g.broadcast_in_dim(n, d.clone(), &[0, 1, 2])?;
        let k = g.mul(q, n)?;
        let batch = |lc: usize, rc: usize| DotDims {
            lhs_batch: vec![0, 1],
            rhs_batch: vec![0, 1],
            lhs_contract: vec![lc],
            rhs_contract: vec![rc],
        };
        let s = g.dot_general(q, k, batch(3, 3), None)?;
        let s = g.mul_scalar(s, 1.0 / (d[3] as f64).sqrt())?;
        let sd = g.dims(s)?.to_vec();
        let i = positions(g, &[t, t], 0)?;
        let j = positions(g, &[t, t], 1)?;
        let mut vis = if causal {
            let v = g.ge(i, j)?;
            g.broadcast_to(v, &sd)?
        } else {
            let v = g.full(1.0, TensorType::f32(sd.clone()))?;
            let z = g.full(0.0, TensorType::f32(sd.clone()))?;
            g.gt(v, z)?
        };
        if let Some(m) = m {
            let m = g.broadcast_in_dim(m, sd.clone(), &[0, 3])?;
            vis = g.and(vis, m)?;
        }
        let s = hide(g, s, vis)?;
        let own = g.eq(i, j)?;
        let own = g.broadcast_to(own, &sd)?;
        let low = g.full(-1e5, TensorType::f32(sd.clone()))?;
        let s = g.select(own, low, s)?;
        let p = g.softmax(s, 3)?;
        g.dot_general(p, v, batch(3, 2), None)
    }
}

#[test]
fn lsh_with_one_bucket_and_one_hash_is_shared_qk_dense_attention() {
    let t = 8;
    for (causal, masked) in [(true, false), (false, true)] {
        let want = case("shared-qk dense", t, masked, &shared_qk_dense(causal));
        assert_same(&lsh_case(t, causal, t, 1, masked), &want, 1e-12);
        // Several identical rounds combine to the same thing.
        assert_same(&lsh_case(t, causal, t, 3, masked), &want, 1e-12);
    }
    let _ = NEG;
}

#[test]
fn lsh_rounds_differentiate_and_stay_causal() {
    let t = 8;
    gradcheck(&lsh_case(t, true, 2, 2, false));
    gradcheck(&lsh_case(t, false, 4, 1, true));
    // Causal: the first position sees only itself, so its output is its own value.
    let c = lsh_case(t, true, 2, 2, false);
    let y = run(&c);
    for bh in 0..(B * H) as usize {
        let s = bh * (t * HD) as usize;
        for e in 0..HD as usize {
            assert!((y.data[s + e] - c.args[2].data[s + e]).abs() < 1e-9);
        }
    }
}
