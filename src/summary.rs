//! `rxla summary`: parameters (Keras-like table), FLOPs per step, memory (estimated and as
//! compiled by XLA).

use anyhow::Result;
use runtime::Client;
use serde_json::json;

use train::step::StepProgram;

/// The summary of a train step program; compiled memory when a client is given.
pub fn summarize(prog: &StepProgram, client: Option<&Client>) -> Result<serde_json::Value> {
    let params: Vec<serde_json::Value> = prog
        .params
        .iter()
        .map(|p| json!({"name": p.name, "shape": p.ty.dims(), "dtype": p.ty.dtype.to_string(), "count": p.count()}))
        .collect();
    let total: usize = prog.params.iter().map(|p| p.count()).sum();
    let param_bytes: usize = prog
        .params
        .iter()
        .map(|p| p.count() * p.ty.dtype.size_bytes())
        .sum();
    let state_bytes = param_bytes * prog.slots.len();
    let mut out = json!({
        "parameters": params,
        "total_parameters": total,
        "flops_per_step": train::flops::matmul_flops(&prog.graph),
        "estimated_memory": {
            "parameter_bytes": param_bytes,
            "optimizer_state_bytes": state_bytes,
            "gradient_bytes": param_bytes,
        },
    });
    if let Some(sh) = &prog.sharding {
        out["sharding"] = sharding_plan(prog, sh);
    }
    if let Some(c) = client {
        let compiled = train::state::compile_program(c, prog.clone())?;
        let m = compiled.exe.memory_stats()?;
        out["compiled_memory"] = json!({
            "argument_bytes": m.argument_bytes,
            "output_bytes": m.output_bytes,
            "alias_bytes": m.alias_bytes,
            "temp_bytes": m.temp_bytes,
        });
        out["compile_s"] = json!(compiled.compile_s);
    }
    Ok(out)
}

/// Each parameter's logical axes, mesh axes, per-device shape and bytes.
fn sharding_plan(prog: &StepProgram, sh: &train::parallel::ProgramSharding) -> serde_json::Value {
    let axes =
        |v: &[Option<String>]| -> Vec<serde_json::Value> { v.iter().map(|a| json!(a)).collect() };
    let mut total = 0usize;
    let params: Vec<serde_json::Value> = prog
        .params
        .iter()
        .map(|p| {
            let mesh_axes = sh.plan.param_axes(p);
            let shard = sh.plan.layout(&mesh_axes, p.ty.dims()).shard_dims();
            let bytes = shard.iter().product::<i64>() as usize * p.ty.dtype.size_bytes();
            total += bytes;
            json!({
                "name": p.name,
                "logical_axes": axes(&p.axes),
                "mesh_axes": axes(&mesh_axes),
                "per_device_shape": shard,
                "per_device_bytes": bytes,
            })
        })
        .collect();
    let mut out = json!({
        "mesh": sh.plan.describe(),
        "devices": sh.plan.num_devices(),
        "rules": sh.plan.rules,
        "parameters": params,
        "parameter_bytes_per_device": total,
        "optimizer_state_bytes_per_device": total * prog.slots.len(),
    });
    if let Some(p) = prog.pipeline_json() {
        out["pipeline"] = p;
    }
    out
}

fn axes_text(v: &serde_json::Value) -> String {
    list_text(v, |a| a.as_str().unwrap_or("-").to_string())
}

/// A JSON array of dims as `(a, b, ..)`.
fn shape_text(v: &serde_json::Value) -> String {
    list_text(v, |d| d.to_string())
}

fn list_text(v: &serde_json::Value, item: impl Fn(&serde_json::Value) -> String) -> String {
    let items: Vec<String> = v.as_array().into_iter().flatten().map(item).collect();
    format!("({})", items.join(", "))
}

fn human(bytes: f64) -> String {
    let units = ["B", "KB", "MB", "GB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

/// The summary as a table.
pub fn render(s: &serde_json::Value) -> String {
    let mut out = String::new();
    let rule = format!("{}\n", "─".repeat(72));
    out.push_str(&format!(
        "{:<40} {:<20} {:>10}\n",
        "Parameter", "Shape", "Count"
    ));
    out.push_str(&rule);
    for p in s["parameters"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<40} {:<20} {:>10}\n",
            p["name"].as_str().unwrap_or(""),
            shape_text(&p["shape"]),
            p["count"].as_u64().unwrap_or(0)
        ));
    }
    out.push_str(&rule);
    out.push_str(&format!("Total parameters: {}\n", s["total_parameters"]));
    let f = s["flops_per_step"].as_f64().unwrap_or(0.0);
    out.push_str(&format!("Matmul FLOPs per train step: {:.3e}\n", f));
    let e = &s["estimated_memory"];
    out.push_str(&format!(
        "Estimated memory: parameters {}, optimizer state {}, gradients {}\n",
        human(e["parameter_bytes"].as_f64().unwrap_or(0.0)),
        human(e["optimizer_state_bytes"].as_f64().unwrap_or(0.0)),
        human(e["gradient_bytes"].as_f64().unwrap_or(0.0)),
    ));
    if let Some(sh) = s.get("sharding") {
        out.push_str(&format!(
            "\nSharding plan: mesh {} ({} devices), rules {}\n",
            sh["mesh"].as_str().unwrap_or(""),
            sh["devices"],
            sh["rules"]
        ));
        out.push_str(&format!(
            "{:<24} {:<24} {:<22} {:<16} {:>10}\n",
            "Parameter", "Logical axes", "Mesh axes", "Per device", "Bytes"
        ));
        out.push_str(&rule);
        for p in sh["parameters"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{:<24} {:<24} {:<22} {:<16} {:>10}\n",
                p["name"].as_str().unwrap_or(""),
                axes_text(&p["logical_axes"]),
                axes_text(&p["mesh_axes"]),
                shape_text(&p["per_device_shape"]),
                p["per_device_bytes"]
            ));
        }
        out.push_str(&rule);
        if let Some(p) = sh.get("pipeline") {
            out.push_str(&train::step::pipeline_text(p));
        }
        out.push_str(&format!(
            "Per device: parameters {}, optimizer state {}\n",
            human(sh["parameter_bytes_per_device"].as_f64().unwrap_or(0.0)),
            human(
                sh["optimizer_state_bytes_per_device"]
                    .as_f64()
                    .unwrap_or(0.0)
            ),
        ));
    }
    if let Some(p) = s.get("passes") {
        out.push_str(&format!("Passes: {p}\n"));
    }
    if let Some(m) = s.get("compiled_memory") {
        out.push_str(&format!(
            "Compiled train step: arguments {}, outputs {}, temp {}\n",
            human(m["argument_bytes"].as_f64().unwrap_or(0.0)),
            human(m["output_bytes"].as_f64().unwrap_or(0.0)),
            human(m["temp_bytes"].as_f64().unwrap_or(0.0)),
        ));
    }
    out
}
