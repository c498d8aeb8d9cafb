//! Remat and mixed precision through the real XLA CPU plugin, on a stack of
//! transformer-ish blocks (attention + MLP, each block a region) built from
//! `graph` ops: the passes keep the step's results, remat cuts the compiled
//! temp memory, and bf16 runs every dot on bf16 operands.

use graph::gradcheck::Lcg;
use graph::interp::HostTensor;
use graph::passes::{estimate, remat_within, residuals};
use graph::{
    mixed_precision, remat, verify, DType, DotDims, Graph, NodeId, PrecisionPolicy, RematPolicy,
    TensorType,
};
use lower::LowerOptions;
use runtime::{Buffer, CompileOptions, Executable};

struct Dims {
    blocks: usize,
    batch: i64,
    seq: i64,
    model: i64,
    heads: i64,
    vocab: i64,
}

/// A step graph (outputs: loss, then every gradient) and its arguments.
fn transformer_step(d: &Dims) -> (Graph, Vec<HostTensor>) {
    let mut g = Graph::new("blocks_step");
    let mut rng = Lcg::new(11);
    let mut args = Vec::new();
    let mut params = Vec::new();
    let (b, t, c, nh) = (d.batch, d.seq, d.model, d.heads);
    let hd = c / nh;
    let mut param = |g: &mut Graph, args: &mut Vec<HostTensor>, name: &str, dims: &[i64]| {
        let ty = TensorType::f32(dims.to_vec());
        let n = ty.shape.num_elements() as usize;
        let s = 1.0 / (dims[0] as f64).sqrt();
        let data = (0..n).map(|_| rng.next(-s, s)).collect();
        args.push(HostTensor::new(ty.clone(), data).unwrap());
        let p = g.parameter(name, ty).unwrap();
        params.push(p);
        p
    };
    let x = g.input("x", TensorType::f32([b, t, c])).unwrap();
    let mut r = Lcg::new(5);
    let n = (b * t * c) as usize;
    args.push(
        HostTensor::new(
            TensorType::f32([b, t, c]),
            (0..n).map(|_| r.next(-1.0, 1.0)).collect(),
        )
        .unwrap(),
    );
    let mut h = x;
    for k in 0..d.blocks {
        let p = |s: &str| format!("block{k}.{s}");
        let wq = param(&mut g, &mut args, &p("wq"), &[c, c]);
        let wk = param(&mut g, &mut args, &p("wk"), &[c, c]);
        let wv = param(&mut g, &mut args, &p("wv"), &[c, c]);
        let wo = param(&mut g, &mut args, &p("wo"), &[c, c]);
        let w1 = param(&mut g, &mut args, &p("w1"), &[c, 4 * c]);
        let w2 = param(&mut g, &mut args, &p("w2"), &[4 * c, c]);
        h = g
            .region(&format!("block{k}"), |g| -> graph::Result<NodeId> {
                let ones = g.full(1.0, TensorType::f32([c]))?;
                let zeros = g.full(0.0, TensorType::f32([c]))?;
                // Attention.
                let n1 = g.layer_norm(h, ones, zeros, 1e-5)?; // (B, T, C)
                let heads = |g: &mut Graph, w: NodeId| -> graph::Result<NodeId> {
                    let y = g.dot(n1, w)?;
                    let y = g.reshape(y, [b, t, nh, hd])?;
                    g.transpose(y, &[0, 2, 1, 3]) // (B, H, T, D)
                };
                let q = heads(g, wq)?;
                let kk = heads(g, wk)?;
                let v = heads(g, wv)?;
                let batch = DotDims {
                    lhs_batch: vec![0, 1],
                    rhs_batch: vec![0, 1],
                    lhs_contract: vec![3],
                    rhs_contract: vec![3],
                };
                let s = g.dot_general(q, kk, batch, None)?; // (B, H, T, T)
                let s = g.mul_scalar(s, 1.0 / (hd as f64).sqrt())?;
                let tt = TensorType::new(DType::I32, [b, nh, t, t]);
                let (qi, ki) = (g.iota(tt.clone(), 2)?, g.iota(tt, 3)?);
                let causal = g.ge(qi, ki)?;
                let neg = g.full_like(s, -1e9)?;
                let s = g.select(causal, s, neg)?;
                let pr = g.softmax(s, 3)?;
                let att = g.matmul(pr, v)?; // (B, H, T, D)
                let att = g.transpose(att, &[0, 2, 1, 3])?;
                let att = g.reshape(att, [b, t, c])?;
                let o = g.dot(att, wo)?;
                let h = g.add(h, o)?;
                // MLP.
                let n2 = g.layer_norm(h, ones, zeros, 1e-5)?;
                let u = g.dot(n2, w1)?; // (B, T, 4C)
                let u = g.gelu(u)?;
                let y = g.dot(u, w2)?;
                g.add(h, y)
            })
            .unwrap();
    }
    let head = param(&mut g, &mut args, "head", &[c, d.vocab]);
    let labels = g
        .input("labels", TensorType::new(DType::I32, [b, t]))
        .unwrap();
    let ids: Vec<i32> = (0..(b * t) as i32)
        .map(|i| (i * 7) % d.vocab as i32)
        .collect();
    args.push(HostTensor::i32(&[b, t], &ids).unwrap());
    let logits = g.dot(h, head).unwrap();
    let loss = g.cross_entropy(logits, labels).unwrap();
    let (mut g, grads) = graph::autodiff::grad(&g, loss, &params).unwrap();
    let mut outs = vec![loss];
    outs.extend(grads);
    g.set_outputs(&outs).unwrap();
    verify(&g).unwrap();
    (g, args)
}

struct Compiled {
    mlir: String,
    exe: Executable,
}

fn compile(client: &runtime::Client, g: &Graph) -> Compiled {
    verify(g).unwrap();
    let opts = LowerOptions {
        no_locations: true,
        ..Default::default()
    };
    let mlir = lower::lower(g, &opts).unwrap();
    let exe = client
        .compile(&mlir, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("compiling {}: {e}", g.name));
    Compiled { mlir, exe }
}

fn run(client: &runtime::Client, c: &Compiled, args: &[HostTensor]) -> Vec<HostTensor> {
    let bufs: Vec<Buffer> = args
        .iter()
        .map(|a| train::exec::to_device(client, a, 0).unwrap())
        .collect();
    let refs: Vec<&Buffer> = bufs.iter().collect();
    c.exe
        .execute1(&refs)
        .unwrap()
        .iter()
        .map(|b| train::exec::to_host(b).unwrap())
        .collect()
}

/// Largest difference of each output relative to its largest magnitude.
fn max_rel_diff(a: &[HostTensor], b: &[HostTensor]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert_eq!(x.ty, y.ty);
            let scale = x.data.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
            let diff = x
                .data
                .iter()
                .zip(&y.data)
                .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
            diff / scale
        })
        .fold(0.0, f64::max)
}

/// Operand types of every `stablehlo.dot_general` in the text.
fn dot_operand_types(mlir: &str) -> Vec<String> {
    mlir.lines()
        .filter(|l| l.contains("\"stablehlo.dot_general\""))
        .map(|l| {
            let sig = &l[l.rfind(" : (").expect("signature") + 4..];
            sig[..sig.find(") -> ").expect("result")].to_string()
        })
        .collect()
}

#[test]
fn remat_keeps_results_and_cuts_temp_memory() {
    let dims = Dims {
        blocks: 8,
        batch: 4,
        seq: 64,
        model: 64,
        heads: 4,
        vocab: 32,
    };
    let (g, args) = transformer_step(&dims);
    let client = runtime::provision::cpu_client(1).unwrap();

    let base = compile(&client, &g);
    let want = run(&client, &base, &args);
    let none_temp = base.exe.memory_stats().unwrap().temp_bytes;

    let (full, report) = remat(&g, &RematPolicy::Full).unwrap();
    verify(&full).unwrap();
    assert_eq!(report.rematerialized().len(), dims.blocks, "{report}");
    assert!(residuals(&full).len() < residuals(&g).len());
    let full_c = compile(&client, &full);
    let got = run(&client, &full_c, &args);
    let d = max_rel_diff(&want, &got);
    assert!(d <= 1e-6, "remat Full changed the results: {d:e}");
    let full_temp = full_c.exe.memory_stats().unwrap().temp_bytes;

    let (dots, _) = remat(&g, &RematPolicy::SaveDots).unwrap();
    let dots_c = compile(&client, &dots);
    let d = max_rel_diff(&want, &run(&client, &dots_c, &args));
    assert!(d <= 1e-6, "remat SaveDots changed the results: {d:e}");
    let dots_temp = dots_c.exe.memory_stats().unwrap().temp_bytes;

    let est = estimate(&g).unwrap();
    let sum = |f: fn(&graph::passes::RegionEstimate) -> u64| -> u64 {
        est.regions.iter().map(f).sum::<u64>() + est.outside
    };
    eprintln!(
        "temp bytes: none {none_temp}, save_dots {dots_temp}, full {full_temp}; \
         static estimate: none {}, save_dots {}, full {}; {} nodes cloned",
        sum(|r| r.none),
        sum(|r| r.save_dots),
        sum(|r| r.full),
        report.cloned_nodes
    );
    assert!(
        full_temp * 2 < none_temp,
        "Full remat should at least halve temp memory: none {none_temp}, full {full_temp}"
    );
    assert!(
        dots_temp < none_temp,
        "SaveDots should cut temp memory: none {none_temp}, save_dots {dots_temp}"
    );

    // The trainer's budget search: compiled temp bytes as the measure.
    let budget = ((none_temp + full_temp) / 2) as u64;
    let mut compiles = 0;
    let (fit, report, bytes) = remat_within(&g, budget, |r: &Graph| -> graph::Result<u64> {
        compiles += 1;
        Ok(compile(&client, r).exe.memory_stats().unwrap().temp_bytes as u64)
    })
    .unwrap();
    eprintln!(
        "budget {budget}: {bytes} bytes after {compiles} compiles, regions {:?}",
        report
            .regions
            .iter()
            .map(|r| format!("{}={:?}", r.name, r.policy))
            .collect::<Vec<_>>()
    );
    assert!(bytes <= budget, "{bytes} > {budget}");
    assert!(!report.rematerialized().is_empty());
    let d = max_rel_diff(&want, &run(&client, &compile(&client, &fit), &args));
    assert!(d <= 1e-6, "budgeted remat changed the results: {d:e}");
}

#[test]
fn bf16_runs_dots_on_bf16_operands_where_xla_cpu_can() {
    let dims = Dims {
        blocks: 2,
        batch: 2,
        seq: 16,
        model: 32,
        heads: 2,
        vocab: 16,
    };
    let (g, args) = transformer_step(&dims);
    let client = runtime::provision::cpu_client(1).unwrap();
    let want = run(&client, &compile(&client, &g), &args);

    let (m, report) = mixed_precision(&g, &PrecisionPolicy::bf16()).unwrap();
    verify(&m).unwrap();
    // 8 dots per block and the head, each with two backward dots. Weight-gradient dots
    // (lhs contracted over leading dims) stay f32: XLA CPU has no bf16 kernel for them.
    assert_eq!(
        report.dots + report.kept_wide,
        3 * (8 * dims.blocks + 1),
        "{report:?}"
    );
    assert!(report.dots > report.kept_wide, "{report:?}");
    let mc = compile(&client, &m);
    let types = dot_operand_types(&mc.mlir);
    assert_eq!(types.len(), report.dots + report.kept_wide);
    let narrow = types
        .iter()
        .filter(|t| t.matches("bf16>").count() == 2 && !t.contains("f32"))
        .count();
    assert_eq!(narrow, report.dots, "{types:?}");
    let got = run(&client, &mc, &args);
    let loss_rel = (got[0].data[0] - want[0].data[0]).abs() / want[0].data[0].abs();
    let d = max_rel_diff(&want, &got);
    eprintln!("bf16 vs f32: loss rel {loss_rel:e}, max gradient rel {d:e}");
    assert!(
        loss_rel < 1e-2,
        "loss {:?} vs {:?}",
        got[0].data,
        want[0].data
    );
    assert!(d < 3e-2, "gradients differ by {d:e} relative");

    // Remat on top of mixed precision recomputes the same bf16 values.
    let (mr, rr) = remat(&m, &RematPolicy::Full).unwrap();
    assert!(rr.cloned_nodes > 0);
    let mrc = compile(&client, &mr);
    let narrow_after = dot_operand_types(&mrc.mlir)
        .iter()
        .filter(|t| t.matches("bf16>").count() == 2 && !t.contains("f32"))
        .count();
    assert!(narrow_after >= narrow, "remat clones keep bf16 operands");
    let d = max_rel_diff(&got, &run(&client, &mrc, &args));
    assert!(d <= 1e-6, "remat changed the bf16 results: {d:e}");
}

#[test]
fn bf16_convolutions_run_forward_and_backward() {
    let mut g = Graph::new("cnn_step");
    let mut rng = Lcg::new(2);
    let mut args = Vec::new();
    let mut arg = |g: &mut Graph, name: &str, dims: &[i64], param: bool| {
        let ty = TensorType::f32(dims.to_vec());
        let n = ty.shape.num_elements() as usize;
        args.push(
            HostTensor::new(ty.clone(), (0..n).map(|_| rng.next(-0.5, 0.5)).collect()).unwrap(),
        );
        if param {
            g.parameter(name, ty).unwrap()
        } else {
            g.input(name, ty).unwrap()
        }
    };
    let x = arg(&mut g, "x", &[2, 12, 12, 3], false);
    let k1 = arg(&mut g, "k1", &[3, 3, 3, 8], true);
    let k2 = arg(&mut g, "k2", &[3, 3, 8, 4], true);
    let h = g
        .region("conv", |g| -> graph::Result<NodeId> {
            let h = g.conv2d(x, k1, [1, 1], graph::Padding::Same, [1, 1])?;
            let h = g.relu(h)?;
            let h = g.conv2d(h, k2, [2, 2], graph::Padding::Valid, [1, 1])?;
            g.tanh(h)
        })
        .unwrap();
    let sq = g.mul(h, h).unwrap();
    let loss = g.mean_all(sq).unwrap();
    let (mut g, grads) = graph::autodiff::grad(&g, loss, &[k1, k2]).unwrap();
    g.set_outputs(&[loss, grads[0], grads[1]]).unwrap();
    let client = runtime::provision::cpu_client(1).unwrap();
    let want = run(&client, &compile(&client, &g), &args);

    let (m, report) = mixed_precision(&g, &PrecisionPolicy::bf16()).unwrap();
    // Two forward convolutions, two backward ones each.
    assert_eq!(report.convs, 6, "{} convs", report.convs);
    let mc = compile(&client, &m);
    for l in mc
        .mlir
        .lines()
        .filter(|l| l.contains("\"stablehlo.convolution\""))
    {
        let sig = &l[l.rfind(" : (").unwrap() + 4..];
        assert!(!sig[..sig.find(") -> ").unwrap()].contains("f32"), "{l}");
    }
    let got = run(&client, &mc, &args);
    let loss_rel = max_rel_diff(&want[..1], &got[..1]);
    let d = max_rel_diff(&want, &got);
    eprintln!("bf16 convolutions vs f32: loss rel {loss_rel:e}, max gradient rel {d:e}");
    assert!(loss_rel < 1e-2, "loss differs by {loss_rel:e}");
    // The kernel gradient sums 288 bf16 products with cancellation.
    assert!(d < 5e-2, "bf16 convolutions differ by {d:e}");
    let (r, _) = remat(&m, &RematPolicy::Full).unwrap();
    let d = max_rel_diff(&got, &run(&client, &compile(&client, &r), &args));
    assert!(d <= 1e-6, "remat changed the results: {d:e}");
}
