//! Runtime benchmarks (numbers go in notes, never asserted): host<->device bandwidth,
//! per-call execute overhead, compile time. `cargo bench --bench runtime`.

use std::time::Instant;

use runtime::provision::cpu_client;
use runtime::CompileOptions;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), runtime::Error> {
    let c = cpu_client(1)?;

    // 64 MB f32 host -> device -> host.
    let n = 16 << 20;
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut h2d = Vec::new();
    let mut d2h = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let b = c.buffer_from_host(&data, &[n as i64], 0)?;
        b.block_until_ready()?;
        h2d.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = b.to_host::<f32>()?;
        d2h.push(t.elapsed().as_secs_f64());
        assert_eq!(back.len(), n);
    }
    let gb = (n * 4) as f64 / 1e9;
    println!(
        "{{\"bench\":\"transfer_64MB\",\"h2d_GBps\":{:.2},\"d2h_GBps\":{:.2}}}",
        gb / median(h2d),
        gb / median(d2h)
    );

    // Per-call host overhead of a trivial program.
    let prog = r#"module @trivial { func.func public @main(%a: tensor<f32>) -> tensor<f32> {
    %0 = stablehlo.add %a, %a : tensor<f32>
    return %0 : tensor<f32> } }"#;
    let exe = c.compile(prog, &CompileOptions::default())?;
    let a = c.buffer_from_host(&[1.0f32], &[], 0)?;
    for _ in 0..200 {
        exe.execute1(&[&a])?;
    }
    let mut per_call = Vec::new();
    for _ in 0..20 {
        let calls = 500;
        let t = Instant::now();
        for _ in 0..calls {
            let out = exe.execute1(&[&a])?;
            drop(out);
        }
        per_call.push(t.elapsed().as_secs_f64() / calls as f64);
    }
    println!(
        "{{\"bench\":\"execute_overhead\",\"us_per_call_median\":{:.1}}}",
        median(per_call) * 1e6
    );

    // Compile time of a chain of 50 matmuls.
    let mut body = String::new();
    let mut prev = "%x".to_string();
    for i in 0..50 {
        body.push_str(&format!(
            "    %m{i} = stablehlo.dot_general {prev}, %w, contracting_dims = [1] x [0] : (tensor<128x128xf32>, tensor<128x128xf32>) -> tensor<128x128xf32>\n    %t{i} = stablehlo.tanh %m{i} : tensor<128x128xf32>\n"
        ));
        prev = format!("%t{i}");
    }
    let prog = format!(
        "module @chain {{ func.func public @main(%x: tensor<128x128xf32>, %w: tensor<128x128xf32>) -> tensor<128x128xf32> {{\n{body}    return {prev} : tensor<128x128xf32> }} }}"
    );
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let exe = c.compile(&prog, &CompileOptions::default())?;
        times.push(t.elapsed().as_secs_f64());
        drop(exe);
    }
    println!(
        "{{\"bench\":\"compile_50_matmuls\",\"seconds_median\":{:.3}}}",
        median(times)
    );
    Ok(())
}
