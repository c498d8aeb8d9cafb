//! `rxla bench`: times the compiled train step on synthetic batches. Every speed claim in
//! this project is made with this command.

use std::time::Instant;

use anyhow::Result;
use graph::DType;
use runtime::Client;
use serde_json::json;
use train::flops::{cpu_has_native_bf16, matmul_flops_per_s, measured_peak_flops};

use data::HostArray;
use train::optim::Optimizer;
use train::state::{compile_program, run_train_step, TrainState};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Synthetic data of the model's input types: uniform floats, zero ids (valid for any
/// vocabulary or class count).
fn synthetic(types: &[graph::TensorType], seed: u64) -> Vec<HostArray> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    types
        .iter()
        .map(|t| {
            let n = t.dims().iter().product::<i64>() as usize;
            let dims = t.dims().to_vec();
            if t.dtype.is_float() {
                let data = (0..n)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (s >> 40) as f32 / (1u64 << 24) as f32
                    })
                    .collect();
                HostArray::F32 { data, dims }
            } else {
                HostArray::I32 {
                    data: vec![0; n],
                    dims,
                }
            }
        })
        .collect()
}

pub struct BenchSpec<'a> {
    pub model: &'a dyn models::Model,
    pub optimizer: Optimizer,
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
    pub peak_flops: Option<f64>,
    pub passes: train::step::Passes,
}

pub fn bench(client: &Client, spec: &BenchSpec) -> Result<serde_json::Value> {
    let t = Instant::now();
    let (prog, report) = train::state::build_train_step(
        client,
        spec.model,
        &spec.optimizer,
        spec.batch,
        &spec.passes,
    )?;
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let _ = lower::lower(&prog.graph, &prog.lower_options())?;
    let lower_ms = t.elapsed().as_secs_f64() * 1e3;
    let flops = train::flops::matmul_flops(&prog.graph);
    let types = prog.data_types.clone();
    let c = compile_program(client, prog)?;
    let mem = c.exe.memory_stats()?;
    let mut st = TrainState::init(client, &c.prog, 0)?;
    let batches: Vec<Vec<HostArray>> = (0..4).map(|i| synthetic(&types, i)).collect();
    for i in 0..spec.warmup {
        run_train_step(client, &c, &mut st, &batches[i % 4])?;
    }
    let mut times = Vec::with_capacity(spec.steps);
    for i in 0..spec.steps.max(1) {
        let t = Instant::now();
        run_train_step(client, &c, &mut st, &batches[i % 4])?;
        times.push(t.elapsed().as_secs_f64());
    }
    let (min, max) = (
        times.iter().cloned().fold(f64::INFINITY, f64::min),
        times.iter().cloned().fold(0.0, f64::max),
    );
    let med = median(&mut times);
    let peak = match spec.peak_flops {
        Some(p) => p,
        None => measured_peak_flops(client)?,
    };
    let mut out = json!({
        "compile_s": c.compile_s,
        "build_ms": build_ms,
        "lower_ms": lower_ms,
        "step_ms_median": med * 1e3,
        "step_ms_min": min * 1e3,
        "step_ms_max": max * 1e3,
        "examples_per_s": spec.batch as f64 / med,
        "flops_per_step": flops,
        "peak_flops": peak,
        "mfu": flops / med / peak,
        "matmul_bf16_flops": matmul_flops_per_s(client, DType::BF16)?,
        "cpu_native_bf16": cpu_has_native_bf16(),
        "temp_bytes": mem.temp_bytes,
        "argument_bytes": mem.argument_bytes,
        "output_bytes": mem.output_bytes,
        "passes": report.to_json(),
        "devices": c.prog.num_devices(),
        "parameter_bytes_per_device": st.param_bytes_per_device(),
    });
    if let Some(p) = c.prog.pipeline_json() {
        out["pipeline"] = p;
    }
    // Token models: the first input is [batch, seq] ids.
    if let Some(t) = types.first() {
        if !t.dtype.is_float() && t.rank() == 2 {
            out["tokens_per_s"] = json!((t.dims()[0] * t.dims()[1]) as f64 / med);
        }
    }
    Ok(out)
}
