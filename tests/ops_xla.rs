//! Every op's lowering and gradient through the real XLA CPU plugin: each gradcheck case
//! (graph/src/gradcheck) runs forward against the reference interpreter, and its autodiff
//! gradient against central finite differences computed with XLA itself.

use std::collections::HashMap;

use graph::gradcheck::{cases, check, prepare, Tolerance};
use graph::interp::{eval, HostTensor};
use graph::Graph;
use lower::LowerOptions;
use runtime::{Buffer, CompileOptions, Executable};

struct Xla {
    client: runtime::Client,
    cache: HashMap<String, Executable>,
}

impl Xla {
    fn eval(&mut self, g: &Graph, args: &[HostTensor]) -> Result<Vec<HostTensor>, String> {
        // A one-device mesh, so `Sharding::Mesh` annotations lower (as trivial shardings).
        let opts = LowerOptions {
            mesh: Some(lower::Mesh {
                axes: vec![("data".into(), 1)],
            }),
            ..Default::default()
        };
        let mlir = lower::lower(g, &opts).map_err(|e| e.to_string())?;
        if !self.cache.contains_key(&mlir) {
            let exe = self
                .client
                .compile(&mlir, &CompileOptions::default())
                .map_err(|e| format!("{e}\n{mlir}"))?;
            self.cache.insert(mlir.clone(), exe);
        }
        let exe = &self.cache[&mlir];
        let bufs: Vec<Buffer> = args
            .iter()
            .map(|a| train::exec::to_device(&self.client, a, 0))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let refs: Vec<&Buffer> = bufs.iter().collect();
        let out = exe.execute1(&refs).map_err(|e| e.to_string())?;
        out.iter()
            .map(|b| train::exec::to_host(b).map_err(|e| e.to_string()))
            .collect()
    }
}

fn close(a: &HostTensor, b: &HostTensor, rtol: f64, atol: f64) -> bool {
    a.ty == b.ty
        && a.data.iter().zip(&b.data).all(|(x, y)| {
            x == y
                || (x - y).abs() <= atol + rtol * x.abs().max(y.abs())
                || (x.is_nan() && y.is_nan())
        })
}

#[test]
fn every_op_lowers_runs_and_differentiates_on_xla() {
    let mut xla = Xla {
        client: runtime::provision::cpu_client(1).unwrap(),
        cache: HashMap::new(),
    };
    let all = cases().unwrap();
    assert!(all.len() >= 60, "{} cases", all.len());
    let mut failures = Vec::new();
    for case in &all {
        // Forward and gradient graphs agree with the interpreter.
        let p = prepare(case).unwrap();
        // The interpreter computes in f64 without rounding to bf16/f16.
        let low_precision = [&case.graph, &p.grads].iter().any(|g| {
            g.nodes.iter().any(|n| {
                n.ty.elements()
                    .iter()
                    .any(|t| matches!(t.dtype, graph::DType::BF16 | graph::DType::F16))
            })
        });
        let (rtol, atol) = if low_precision {
            (2e-2, 2e-3)
        } else {
            (1e-4, 1e-5)
        };
        for (what, g) in [("forward", &case.graph), ("gradient", &p.grads)] {
            match (xla.eval(g, &case.args), eval(g, &case.args)) {
                (Ok(x), Ok(r)) => {
                    for (a, b) in x.iter().zip(&r) {
                        if !close(a, b, rtol, atol) {
                            failures.push(format!(
                                "{} {what}: XLA {:?} vs interpreter {:?}",
                                case.name,
                                &a.data[..a.data.len().min(6)],
                                &b.data[..b.data.len().min(6)]
                            ));
                        }
                    }
                }
                (Err(e), _) => failures.push(format!("{} {what}: XLA failed: {e}", case.name)),
                (_, Err(e)) => {
                    failures.push(format!("{} {what}: interpreter failed: {e}", case.name))
                }
            }
        }
        // Autodiff against finite differences, all on XLA.
        let mut ev = |g: &Graph, a: &[HostTensor]| xla.eval(g, a);
        // A small step: f32 round-off stays below the tolerance, and max-pool windows with
        // close values do not swap their maximum.
        // bf16 spacing is ~4e-3: there only a coarse check (sign and scale) is meaningful.
        let tol = if low_precision {
            Tolerance {
                eps: 5e-2,
                rtol: 0.1,
                atol: 2e-2,
            }
        } else {
            Tolerance {
                eps: 1e-3,
                ..Tolerance::F32
            }
        };
        if let Err(e) = check(case, &mut ev, tol) {
            failures.push(format!("gradient check on XLA: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn forward_edge_cases_and_bf16_dot_layouts_match_the_interpreter() {
    let mut xla = Xla {
        client: runtime::provision::cpu_client(1).unwrap(),
        cache: HashMap::new(),
    };
    let mut failures = Vec::new();
    let all = graph::gradcheck::forward_cases();
    assert!(all.iter().filter(|c| c.0.starts_with("bf16_dot")).count() >= 6);
    for (name, g, args) in &all {
        match (xla.eval(g, args), eval(g, args)) {
            (Ok(x), Ok(r)) => {
                for (a, b) in x.iter().zip(&r) {
                    // Integer results and exact-in-bf16 products must match exactly.
                    if !close(a, b, 0.0, 0.0) {
                        failures.push(format!(
                            "{name}: XLA {:?} vs interpreter {:?}",
                            a.data, b.data
                        ));
                    }
                }
            }
            (Err(e), _) => failures.push(format!("{name}: XLA failed: {e}")),
            (_, Err(e)) => failures.push(format!("{name}: interpreter failed: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn long_sorts_with_many_ties_and_nans_match_the_interpreter() {
    // Longer rows than the gradcheck cases: XLA may pick another sort algorithm there, and
    // stability only shows with many ties.
    let mut xla = Xla {
        client: runtime::provision::cpu_client(1).unwrap(),
        cache: HashMap::new(),
    };
    let (rows, n) = (3i64, 700i64);
    let mut g = Graph::new("long_sorts");
    let k = g
        .input("k", graph::TensorType::new(graph::DType::I32, [rows, n]))
        .unwrap();
    let x = g.input("x", graph::TensorType::f32([rows, n])).unwrap();
    let mut outs = Vec::new();
    for desc in [false, true] {
        outs.push(g.argsort(k, 1, desc).unwrap());
        outs.push(g.argsort(x, 1, desc).unwrap());
        outs.extend(g.sort_with_payload(x, &[k], 1, desc).unwrap());
    }
    g.set_outputs(&outs).unwrap();
    let mut rng = graph::gradcheck::Lcg::new(9);
    let total = (rows * n) as usize;
    let ks: Vec<i32> = (0..total).map(|_| rng.next(0.0, 6.0) as i32).collect();
    let xs: Vec<f32> = (0..total)
        .map(|i| match i % 50 {
            0 => f32::NAN,
            1 => -0.0,
            2 => f32::INFINITY,
            _ => (rng.next(-4.0, 4.0) as f32).round(),
        })
        .collect();
    let args = [
        HostTensor::i32(&[rows, n], &ks).unwrap(),
        HostTensor::f32(&[rows, n], &xs).unwrap(),
    ];
    let (x, r) = (xla.eval(&g, &args).unwrap(), eval(&g, &args).unwrap());
    for (i, (a, b)) in x.iter().zip(&r).enumerate() {
        assert!(
            close(a, b, 0.0, 0.0),
            "output {i} differs from the interpreter"
        );
    }
}
