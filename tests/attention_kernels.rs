//! The attention kernels (nn::kernels) through the real XLA CPU plugin, in f32: chunked
//! equals dense within 1e-5; local with a window covering T, block-sparse with every block
//! selected, axial with one row, LSH with one bucket equal their dense counterparts; and
//! every kernel's autodiff gradient (chunked: its custom VJP) matches central finite
//! differences computed with XLA. Plus the `[model] attention` config errors.

use graph::gradcheck::{check, CaseBuilder, GradCase, Tolerance};
use graph::interp::HostTensor;
use graph::{DType, Graph, NodeId, TensorType};
use nn::attention::dense_attention;
use nn::kernels::block_sparse::{block_sparse_attention, Pattern};
use nn::kernels::{axial, chunked, local, lsh};

mod common;

use common::Xla;

impl Xla {
    fn run(&mut self, c: &GradCase) -> HostTensor {
        self.eval(&c.graph, &c.args).unwrap().remove(0)
    }

    fn gradcheck(&mut self, c: &GradCase) {
        let mut ev = |g: &Graph, a: &[HostTensor]| self.eval(g, a);
        let tol = Tolerance {
            eps: 1e-3,
            ..Tolerance::F32
        };
        check(c, &mut ev, tol).unwrap();
    }
}

type Kernel = dyn Fn(&mut Graph, NodeId, NodeId, NodeId, Option<NodeId>) -> graph::Result<NodeId>;

/// q, k, v `(2, 2, T, 4)` in [-1, 1) and, with `masked`, a key mask hiding batch 1's last key.
fn case(name: &'static str, t: i64, masked: bool, kernel: &Kernel) -> GradCase {
    case_dims(name, [2, 2, t, 4], masked, kernel)
}

/// [`case`] with q, k, v of `dims` (smaller for finite differences: two evaluations per
/// element).
fn case_dims(name: &'static str, dims: [i64; 4], masked: bool, kernel: &Kernel) -> GradCase {
    let t = dims[2];
    let mut c = CaseBuilder::new(name, 11);
    let q = c.x(&dims).unwrap();
    let k = c.x(&dims).unwrap();
    let v = c.x(&dims).unwrap();
    let m = masked.then(|| {
        let data = (0..2 * t)
            .map(|i| if i == 2 * t - 1 { 0.0 } else { 1.0 })
            .collect();
        c.input_with(TensorType::new(DType::Bool, [2, t]), data)
            .unwrap()
    });
    let y = kernel(&mut c.g, q, k, v, m).unwrap();
    c.finish(name, y).unwrap()
}

fn dense(
    causal: bool,
) -> impl Fn(&mut Graph, NodeId, NodeId, NodeId, Option<NodeId>) -> graph::Result<NodeId> {
    move |g, q, k, v, m| dense_attention(g, q, k, v, causal, m, |_, p| Ok(p))
}

fn max_diff(a: &HostTensor, b: &HostTensor) -> f64 {
    assert_eq!(a.ty, b.ty);
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn chunked_equals_dense_within_1e5_on_xla_and_its_custom_vjp_matches_finite_differences() {
    let mut xla = Xla::new();
    let t = 64;
    for (causal, masked) in [(true, false), (false, true)] {
        let want = xla.run(&case("dense", t, masked, &dense(causal)));
        for chunk in [8, 16, 64] {
            let c = case("chunked", t, masked, &move |g, q, k, v, m| {
                chunked::chunked_attention(g, q, k, v, causal, chunk, m)
            });
            let d = max_diff(&xla.run(&c), &want);
            assert!(d < 1e-5, "causal {causal} chunk {chunk}: {d}");
        }
        // Gradients: the custom VJP against XLA's finite differences, and against autodiff
        // of dense attention.
        let dims = [2, 1, 8, 2];
        let c = case_dims("chunked", dims, masked, &move |g, q, k, v, m| {
            chunked::chunked_attention(g, q, k, v, causal, 2, m)
        });
        xla.gradcheck(&c);
        let d = case_dims("dense", dims, masked, &dense(causal));
        let (pc, pd) = (
            graph::gradcheck::prepare(&c).unwrap(),
            graph::gradcheck::prepare(&d).unwrap(),
        );
        let (gc, gd) = (
            xla.eval(&pc.grads, &c.args).unwrap(),
            xla.eval(&pd.grads, &d.args).unwrap(),
        );
        for (a, b) in gc.iter().zip(&gd) {
            let diff = max_diff(a, b);
            assert!(diff < 1e-5, "gradient: {diff}");
        }
    }
}

#[test]
fn sparse_kernels_equal_dense_where_they_cover_everything_and_differentiate_on_xla() {
    let mut xla = Xla::new();
    let t = 16;
    for causal in [true, false] {
        let want = xla.run(&case("dense", t, true, &dense(causal)));
        let window = if causal { t } else { 2 * t };
        let kernels: Vec<(&str, Box<Kernel>)> = vec![
            (
                "local, window covers T",
                Box::new(move |g, q, k, v, m| {
                    local::local_attention(g, q, k, v, causal, window, t, m, &mut |_, p| Ok(p))
                }),
            ),
            (
                "block_sparse, every block",
                Box::new(move |g, q, k, v, m| {
                    let pat = Pattern::new(t, 4, 0, 100, causal, 3);
                    block_sparse_attention(g, q, k, v, &pat, m, &mut |_, p| Ok(p))
                }),
            ),
            (
                "axial [1, T]",
                Box::new(move |g, q, k, v, m| {
                    axial::axial_attention(g, q, k, v, causal, 1, t, m, &mut |_, p| Ok(p))
                }),
            ),
        ];
        for (name, k) in &kernels {
            let d = max_diff(&xla.run(&case("kernel", t, true, k.as_ref())), &want);
            assert!(d < 1e-5, "{name} (causal {causal}): {d}");
        }
        // Finite differences on small, genuinely sparse settings.
        let t = 8;
        let small: Vec<(&str, Box<Kernel>)> = vec![
            (
                "local window 2",
                Box::new(move |g, q, k, v, m| {
                    local::local_attention(g, q, k, v, causal, 2, 2, m, &mut |_, p| Ok(p))
                }),
            ),
            (
                "block_sparse block 2, global 2, random 1",
                Box::new(move |g, q, k, v, m| {
                    let pat = Pattern::new(t, 2, 2, 1, causal, 3);
                    block_sparse_attention(g, q, k, v, &pat, m, &mut |_, p| Ok(p))
                }),
            ),
            (
                "axial [2, 4]",
                Box::new(move |g, q, k, v, m| {
                    axial::axial_attention(g, q, k, v, causal, 2, 4, m, &mut |_, p| Ok(p))
                }),
            ),
            (
                "lsh bucket 2, 2 hashes",
                Box::new(move |g, q, _k, v, m| {
                    let seed = g.scalar(5.0, DType::U32)?;
                    let l = lsh::Lsh {
                        causal,
                        bucket_size: 2,
                        n_hashes: 2,
                    };
                    l.apply(g, q, v, m, seed, 1, &mut |_, p| Ok(p))
                }),
            ),
        ];
        for (name, k) in &small {
            let c = case_dims("kernel", [2, 1, t, 2], true, k.as_ref());
            let mut ev = |g: &Graph, a: &[HostTensor]| xla.eval(g, a);
            let tol = Tolerance {
                eps: 1e-3,
                ..Tolerance::F32
            };
            if let Err(e) = check(&c, &mut ev, tol) {
                panic!("{name} (causal {causal}): {e}");
            }
        }
    }
}

#[test]
fn lsh_with_one_bucket_and_one_hash_matches_the_interpreter_on_xla() {
    // The interpreter's own test pins one bucket to shared-QK dense attention; here the
    // same graph (sorts, rng, argmax) must lower and agree in f32.
    let mut xla = Xla::new();
    for causal in [true, false] {
        let c = case("lsh", 16, true, &move |g, q, _k, v, m| {
            let seed = g.scalar(9.0, DType::U32)?;
            let l = lsh::Lsh {
                causal,
                bucket_size: 4,
                n_hashes: 3,
            };
            l.apply(g, q, v, m, seed, 2, &mut |_, p| Ok(p))
        });
        let want = graph::interp::eval(&c.graph, &c.args).unwrap().remove(0);
        let d = max_diff(&xla.run(&c), &want);
        assert!(d < 1e-5, "causal {causal}: {d}");
    }
}

#[test]
fn bad_attention_configs_name_the_key_and_the_numbers() {
    let gpt = "configs/gpt-tiny.toml";
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--set", "model.attention={ kind = \"local\", window = 48 }"],
            &["model.attention.window (48) must divide model.seq_len (128)"],
        ),
        (
            &[
                "--set",
                "model.attention={ kind = \"lsh\", bucket_size = 100 }",
            ],
            &["model.attention.bucket_size (100)", "model.seq_len (128)"],
        ),
        (
            &[
                "--set",
                "model.attention={ kind = \"chunked\", chunk = 30 }",
            ],
            &["model.attention.chunk (30)", "128"],
        ),
        (
            &[
                "--set",
                "model.attention={ kind = \"axial\", shape = [8, 8] }",
            ],
            &[
                "model.attention.shape [8, 8] has 64 positions",
                "model.seq_len is 128",
            ],
        ),
        (
            &[
                "--set",
                "model.attention={ kind = \"block_sparse\", block = 16, global = 8 }",
            ],
            &["model.attention.global (8)", "model.attention.block (16)"],
        ),
        (
            &["--set", "model.attention={ kind = \"sparse\" }"],
            &["model.attention", "unknown variant `sparse`", "chunked"],
        ),
        (
            &["--set", "model.attention={ kind = \"local\", windw = 4 }"],
            &["model.attention", "windw"],
        ),
        (
            &[
                "--set",
                "model.attention={ kind = \"chunked\" }",
                "--set",
                "model.dropout=0.1",
            ],
            &["chunked", "model.dropout = 0"],
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["summary", "--config", gpt];
        a.extend_from_slice(args);
        let e = common::rxla_err(&a);
        for w in *want {
            assert!(e.contains(w), "{args:?}: {e:?} lacks {w:?}");
        }
    }
}
