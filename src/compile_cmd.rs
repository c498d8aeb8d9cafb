//! `rxla compile`: ahead-of-time compilation of a config's train and eval step programs for a
//! target (a Cloud TPU topology this machine does not have, or this CPU), with per-device
//! memory against capacity; and `rxla train --compiled DIR`, which loads those executables
//! when the manifest matches the client.
//!
//! For TPU the compiler is libtpu used as a compile-only PJRT plugin: a topology description
//! (`v5e:4x4`) stands in for the devices and `PJRT_Compile` runs without a client.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use runtime::{Client, CompileOptions, CreateOptions, MemoryStats, Topology};
use serde_json::{json, Value};

use crate::config::TrainConfig;
use train::step::StepProgram;

pub const MANIFEST: &str = "manifest.json";
const FORMAT: u64 = 1;

#[derive(Args, Debug, Clone)]
pub struct CompileArgs {
    /// TOML config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config key: `--set parallel.fsdp=true` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// `tpu:v5e-16` (MaxText accelerator name), `tpu:v5e:4x4` (topology), `tpu:v5p:2x2x2`,
    /// `cpu` or `cpu:N` (N virtual devices of this machine's CPU plugin).
    #[arg(long)]
    pub target: String,
    /// Directory for the serialized executables and `manifest.json`.
    #[arg(long)]
    pub out: PathBuf,
}

/// Where the programs will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This machine's CPU plugin with this many virtual devices (`None`: what the mesh needs).
    Cpu(Option<usize>),
    /// A TPU topology name as libtpu spells it (`v5e:4x4`).
    Tpu(String),
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Target> {
        let s = s.trim();
        if s == "cpu" {
            return Ok(Target::Cpu(None));
        }
        if let Some(n) = s.strip_prefix("cpu:") {
            let n: usize = n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| anyhow!("target `{s}`: after `cpu:` give a device count ≥ 1"))?;
            return Ok(Target::Cpu(Some(n)));
        }
        if let Some(t) = s.strip_prefix("tpu:") {
            return Ok(Target::Tpu(tpu_topology_name(t)?));
        }
        bail!("unknown target `{s}`: use tpu:v5e-16, tpu:v5e:4x4, tpu:v5p:2x2x2, cpu or cpu:N")
    }
}

/// A MaxText accelerator name (`v5e-16`: 16 chips; `v5p-16`, `v4-8`: TensorCores, 2 per
/// chip) as a topology name (`v5e:4x4`, `v5p:2x2x2`, `v4:2x2x1`); a topology name as is.
pub fn tpu_topology_name(s: &str) -> Result<String> {
    if s.contains(':') {
        return Ok(s.to_string());
    }
    let (gen, n) = s
        .split_once('-')
        .ok_or_else(|| anyhow!("TPU `{s}`: give a topology (v5e:2x2) or an accelerator (v5e-4)"))?;
    let n: usize = n
        .parse()
        .map_err(|_| anyhow!("TPU `{s}`: `{n}` is not a number"))?;
    let two_d = |chips: usize| -> Option<String> {
        let shape = match chips {
            1 => "1x1",
            4 => "2x2",
            8 => "2x4",
            16 => "4x4",
            32 => "4x8",
            64 => "8x8",
            128 => "8x16",
            256 => "16x16",
            _ => return None,
        };
        Some(shape.to_string())
    };
    let three_d = |chips: usize| -> Option<String> {
        let shape = match chips {
            4 => "2x2x1",
            8 => "2x2x2",
            16 => "2x2x4",
            32 => "2x4x4",
            64 => "4x4x4",
            128 => "4x4x8",
            256 => "4x8x8",
            _ => return None,
        };
        Some(shape.to_string())
    };
    let shape = match gen {
        "v5e" | "v5litepod" | "v6e" => two_d(n),
        "v5p" | "v4" if n.is_multiple_of(2) => three_d(n / 2),
        _ => None,
    };
    let gen = if gen == "v5litepod" { "v5e" } else { gen };
    shape.map(|sh| format!("{gen}:{sh}")).ok_or_else(|| {
        anyhow!(
            "TPU `{s}`: no known slice of that size (v5e/v6e-N: N chips in 1, 4, 8, .., 256; \
             v5p/v4-N: N TensorCores, 2 per chip, in 8, 16, .., 512); give the topology \
             instead, e.g. tpu:v5e:4x4"
        )
    })
}

/// HBM per chip by PJRT device kind (public Cloud TPU specs), for the fits column.
fn tpu_capacity_bytes(kind: &str) -> Option<u64> {
    let gib = |g: u64| g << 30;
    let k = kind.to_ascii_lowercase();
    Some(if k.contains("v5 lite") || k.contains("v5e") {
        gib(16)
    } else if k.contains("v6 lite") || k.contains("v6e") {
        gib(32)
    } else if k.contains("v5") {
        gib(95)
    } else if k.contains("v4") {
        gib(32)
    } else if k.contains("v3") {
        gib(16)
    } else {
        return None;
    })
}

fn host_memory_bytes() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The programs `rxla train` would build for `cfg`: (name, program). Same functions and
/// arguments as `train::learner::train`, so the fingerprints match.
pub fn step_programs(
    cfg: &TrainConfig,
    client: Option<&Client>,
) -> Result<Vec<(String, StepProgram)>> {
    let model = crate::registry::model(cfg)?;
    let steps = cfg.train.steps.unwrap_or(1).max(1);
    let opt = train::optim::Optimizer {
        opt: cfg.optimizer.clone(),
        schedule: cfg.schedule.clone(),
        total_steps: cfg.schedule.decay_steps.unwrap_or(steps),
    };
    opt.validate()?;
    let passes = cfg.passes()?;
    let batch = cfg.train.batch_size;
    if batch == 0 {
        bail!("config key `train.batch_size` must be at least 1");
    }
    let (train_prog, _) = match client {
        Some(c) => train::state::build_train_step(c, model.as_ref(), &opt, batch, &passes)?,
        None => {
            if matches!(passes.remat, train::step::Remat::Budget(_)) {
                bail!(
                    "train.remat = \"budget:..\" searches by compiling on a client; for a TPU \
                     target choose \"full\" or \"save_dots\""
                );
            }
            train::step::train_step(model.as_ref(), &opt, batch, &passes, None)?
        }
    };
    let eval_batch = cfg.train.eval_batch_size.unwrap_or(batch);
    let eval_prog = train::step::eval_step(model.as_ref(), eval_batch, passes.parallel.as_ref())?;
    Ok(vec![
        ("train".into(), train_prog),
        ("eval".into(), eval_prog),
    ])
}

fn lowered(prog: &StepProgram) -> Result<(String, CompileOptions, String)> {
    lowered_on(prog, None)
}

/// As [`lowered`], with the program's partitions placed on `devices` (in mesh order).
fn lowered_on(
    prog: &StepProgram,
    devices: Option<&[i64]>,
) -> Result<(String, CompileOptions, String)> {
    let mlir = lower::lower(&prog.graph, &prog.lower_options())
        .with_context(|| format!("lowering `{}`", prog.graph.name))?;
    let mut opts = CompileOptions::spmd(prog.num_devices());
    // The fingerprint leaves the placement out: a TPU VM's client places the same program.
    let fp = runtime::cache::program_fingerprint(&mlir, &opts.to_proto_bytes()?);
    if let Some(d) = devices {
        if d.len() != prog.num_devices() {
            bail!(
                "the target has {} devices but `{}` is partitioned over {}",
                d.len(),
                prog.graph.name,
                prog.num_devices()
            );
        }
        opts.device_assignment = Some(vec![d.to_vec()]);
    }
    Ok((mlir, opts, fp))
}

/// Fills in `parallel.data` for a target of `n` devices when the config asks for one device.
fn fit_mesh_to(cfg: &mut TrainConfig, n: usize) -> Result<()> {
    let p = &cfg.parallel;
    let have = p.data * p.tensor * p.pipeline;
    if have == 1 && n > 1 {
        cfg.parallel.data = n;
        eprintln!("rxla: [parallel] asks for 1 device; using data={n} for the target's {n}");
    } else if have != n {
        bail!(
            "the `[parallel]` mesh (data={} x tensor={} x pipeline={}) uses {have} devices but \
             the target has {n}: make their product {n} (e.g. --set parallel.data={})",
            p.data,
            p.tensor,
            p.pipeline,
            n / (p.tensor * p.pipeline).max(1)
        );
    }
    Ok(())
}

/// GiB, as libtpu counts HBM ("15.75G").
fn gb(b: f64) -> String {
    format!("{:.2} GiB", b / (1u64 << 30) as f64)
}

fn memory_json(m: &MemoryStats) -> Value {
    json!({
        "argument_bytes": m.argument_bytes,
        "output_bytes": m.output_bytes,
        "alias_bytes": m.alias_bytes,
        "temp_bytes": m.temp_bytes,
        "generated_code_bytes": m.generated_code_bytes,
        "total_bytes": total_bytes(m),
    })
}

/// What a program holds on a device at its peak: inputs, outputs not aliased to inputs,
/// temporaries and code.
fn total_bytes(m: &MemoryStats) -> i64 {
    m.argument_bytes + m.output_bytes - m.alias_bytes + m.temp_bytes + m.generated_code_bytes
}

/// `XXG` numbers of libtpu's out-of-memory message: (used, capacity) in bytes.
fn parse_hbm_overflow(msg: &str) -> (Option<f64>, Option<f64>) {
    let num_g = |s: &str| -> Option<f64> {
        let s = s.trim_start();
        let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let v: f64 = s[..end].parse().ok()?;
        let unit = s[end..].chars().next()?;
        let mult = match unit {
            'G' => 1u64 << 30,
            'M' => 1 << 20,
            'K' => 1 << 10,
            _ => return None,
        };
        Some(v * mult as f64)
    };
    let at = msg.find("Used ");
    // Or: "the total memory required for HLO temporaries (61.05G) exceeds available HBM".
    let required = || {
        let i = msg.find("memory required for")?;
        let j = msg[i..].find('(')? + i;
        num_g(&msg[j + 1..])
    };
    let used = at.and_then(|i| num_g(&msg[i + 5..])).or_else(required);
    // "Used 20.50G of 15.75G hbm": the " of " after "Used ".
    let cap = at
        .and_then(|i| msg[i..].find(" of ").map(|j| i + j))
        .and_then(|i| num_g(&msg[i + 4..]))
        .or_else(|| {
            msg.find("available HBM (")
                .and_then(|i| num_g(&msg[i + 15..]))
        });
    (used, cap)
}

struct Compiled1 {
    name: String,
    fingerprint: String,
    compile_s: f64,
    result: std::result::Result<(MemoryStats, Option<f64>, Vec<u8>), String>,
}

/// Devices of a topology name (`v5e:4x4` -> 16; one PJRT device per chip), if it says.
fn topology_devices(name: &str) -> Option<usize> {
    let dims = name.split_once(':')?.1;
    dims.split('x')
        .map(|d| d.parse::<usize>().ok())
        .product::<Option<usize>>()
}

/// The config; a `[parallel]` section that is only valid with the target's device count
/// (`fsdp` without `data`) gets `parallel.data` set to it.
fn load_for(args: &CompileArgs, target: &Target) -> Result<TrainConfig> {
    let first = TrainConfig::load(&args.config, &args.sets);
    let n = match target {
        Target::Cpu(n) => *n,
        Target::Tpu(name) => topology_devices(name),
    };
    match (first, n) {
        (Err(e), Some(n)) if format!("{e:#}").contains("parallel.") => {
            let mut sets = args.sets.clone();
            sets.push(format!("parallel.data={n}"));
            TrainConfig::load(&args.config, &sets).map_err(|_| e)
        }
        (r, _) => r,
    }
}

pub fn run(args: &CompileArgs) -> Result<()> {
    let target: Target = args.target.parse()?;
    let mut cfg = load_for(args, &target)?;
    let wall = Instant::now();
    let (mut compiled, plugin_json, topo_json, capacity, kind) = match &target {
        Target::Tpu(name) => {
            let path = runtime::provision::tpu_plugin_path()?;
            let plugin = runtime::provision::load_plugin(&path)
                .with_context(|| format!("loading libtpu from {}", path.display()))?;
            let topo = Topology::create(&plugin, name, &CreateOptions::new())
                .with_context(|| format!("creating the TPU topology `{name}`"))?;
            let n = topo.devices().len();
            fit_mesh_to(&mut cfg, n)?;
            let programs = step_programs(&cfg, None)?;
            let kind = topo
                .devices()
                .first()
                .map(|d| d.kind.clone())
                .unwrap_or_default();
            let mut out = Vec::new();
            // An explicit assignment of the topology's devices: without one, libtpu's v5p
            // all-reduce combiner dereferences a null assignment (SIGSEGV). The job's mesh
            // order (process-major), as `rxla train` on the slice compiles it.
            let mesh = runtime::GlobalDevices::from_topology(&topo, 0, n)?;
            let assignment: Vec<i64> = mesh.devices().iter().map(|d| d.id).collect();
            // Each host process feeds the devices it can address: these.
            let process_devices: Vec<Vec<i64>> = mesh
                .processes()
                .into_iter()
                .map(|p| mesh.process_device_ids(p))
                .collect();
            for (name, prog) in &programs {
                let (mlir, opts, fp) = lowered_on(prog, Some(&assignment))?;
                let t = Instant::now();
                let result = topo
                    .compile(&mlir, &opts)
                    .and_then(|c| Ok((c.memory_stats()?, c.flops(), c.serialize()?)))
                    .map_err(|e| e.to_string());
                out.push(Compiled1 {
                    name: name.clone(),
                    fingerprint: fp,
                    compile_s: t.elapsed().as_secs_f64(),
                    result,
                });
            }
            let topo_json = json!({
                "name": topo.name(),
                "platform": topo.platform_name(),
                "platform_version": topo.platform_version(),
                "devices": n,
                "processes": topo.num_processes(),
                "device_kind": kind,
                "process_index_of_device": topo.devices().iter().map(|d| d.process_index).collect::<Vec<_>>(),
                "device_ids": topo.devices().iter().map(|d| d.id).collect::<Vec<_>>(),
                "process_devices": process_devices,
                "mesh_device_ids": assignment,
            });
            (
                out,
                plugin_identity(&plugin)?,
                topo_json,
                tpu_capacity_bytes(&kind),
                kind,
            )
        }
        Target::Cpu(n) => {
            let n = match n {
                Some(n) => {
                    fit_mesh_to(&mut cfg, *n)?;
                    *n
                }
                None => train::parallel::Plan::from_config(&cfg.parallel)?
                    .map_or(1, |p| p.num_devices()),
            };
            let client = runtime::provision::cpu_client(n).context("starting the CPU client")?;
            let programs = step_programs(&cfg, Some(&client))?;
            let mut out = Vec::new();
            for (name, prog) in &programs {
                let (mlir, opts, fp) = lowered(prog)?;
                let t = Instant::now();
                let result = client
                    .compile(&mlir, &opts)
                    .and_then(|e| Ok((e.memory_stats()?, e.flops(), e.serialize()?)))
                    .map_err(|e| e.to_string());
                out.push(Compiled1 {
                    name: name.clone(),
                    fingerprint: fp,
                    compile_s: t.elapsed().as_secs_f64(),
                    result,
                });
            }
            let kind = client
                .devices()
                .first()
                .map(|d| d.kind.clone())
                .unwrap_or_default();
            let topo_json = json!({
                "name": format!("cpu:{n}"),
                "platform": client.platform_name(),
                "platform_version": client.platform_version(),
                "devices": n,
                "processes": 1,
                "device_kind": kind,
            });
            (
                out,
                plugin_identity(client.plugin())?,
                topo_json,
                host_memory_bytes(),
                kind,
            )
        }
    };
    let plan = train::parallel::Plan::from_config(&cfg.parallel)?;
    let mesh = plan
        .as_ref()
        .map_or("1 device".to_string(), |p| p.describe());
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut programs_json = Vec::new();
    let mut any_over = false;
    println!(
        "target {} ({} x {kind}), mesh {mesh}{}",
        args.target,
        topo_json["devices"],
        if cfg.parallel.fsdp { " (fsdp)" } else { "" }
    );
    println!(
        "{:<6} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}  {:>9}  verdict",
        "prog", "argument", "output", "temp", "code", "total", "capacity", "compile"
    );
    for c in compiled.iter_mut() {
        let cap = capacity.map(|b| b as f64);
        let mut entry = json!({
            "name": c.name,
            "fingerprint": c.fingerprint,
            "compile_s": c.compile_s,
            "capacity_bytes": capacity,
        });
        match &c.result {
            Ok((m, flops, bytes)) => {
                let total = total_bytes(m) as f64;
                let over = cap.map(|cap| total - cap).filter(|d| *d > 0.0);
                let file = format!("{}.exe", c.name);
                files::write_atomic(&args.out.join(&file), bytes)?;
                entry["file"] = json!(file);
                entry["sha256"] = json!(runtime::cache::sha256_hex(bytes));
                entry["memory"] = memory_json(m);
                entry["flops"] = json!(flops);
                entry["fits"] = json!(over.is_none());
                let verdict = match over {
                    None => "fits".to_string(),
                    Some(d) => {
                        any_over = true;
                        format!("does not fit by {}", gb(d))
                    }
                };
                println!(
                    "{:<6} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}  {:>8.1}s  {verdict}",
                    c.name,
                    gb(m.argument_bytes as f64),
                    gb(m.output_bytes as f64),
                    gb(m.temp_bytes as f64),
                    gb(m.generated_code_bytes as f64),
                    gb(total),
                    cap.map_or("?".into(), gb),
                    c.compile_s
                );
            }
            Err(msg) => {
                let oom = msg.contains("RESOURCE_EXHAUSTED") || msg.contains("Ran out of memory");
                if !oom {
                    bail!("compiling the {} step for {}: {msg}", c.name, args.target);
                }
                any_over = true;
                let (used, cap_msg) = parse_hbm_overflow(msg);
                let cap = cap_msg.or(cap);
                entry["fits"] = json!(false);
                entry["error"] = json!(msg);
                entry["used_bytes"] = json!(used);
                let verdict = match (used, cap) {
                    (Some(u), Some(k)) => format!("does not fit by {}", gb(u - k)),
                    _ => "does not fit".to_string(),
                };
                println!(
                    "{:<6} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}  {:>8.1}s  {verdict}",
                    c.name,
                    "-",
                    "-",
                    "-",
                    "-",
                    used.map_or("?".into(), gb),
                    cap.map_or("?".into(), gb),
                    c.compile_s
                );
                let first = msg.lines().next().unwrap_or(msg);
                println!("       {first}");
            }
        }
        programs_json.push(entry);
    }
    let manifest = json!({
        "format": FORMAT,
        "rxla_version": env!("CARGO_PKG_VERSION"),
        "target": args.target,
        "topology": topo_json,
        "plugin": plugin_json,
        "mesh": mesh,
        "parallel": serde_json::to_value(&cfg.parallel)?,
        "config": serde_json::to_value(&cfg)?,
        "programs": programs_json,
        "seconds": wall.elapsed().as_secs_f64(),
    });
    files::write_json_atomic(&args.out.join(MANIFEST), &manifest)?;
    println!("wrote {}", args.out.join(MANIFEST).display());
    if any_over {
        let advice = advice(&cfg);
        bail!("the programs do not fit on {}: {advice}", args.target);
    }
    Ok(())
}

/// What to change when a program does not fit, given what the config already does.
fn advice(cfg: &TrainConfig) -> String {
    let mut tips = Vec::new();
    if !cfg.parallel.fsdp && cfg.parallel.data > 1 {
        tips.push(format!(
            "split parameters and optimizer state {} ways with --set parallel.fsdp=true",
            cfg.parallel.data
        ));
    }
    if cfg.train.remat != "full" {
        tips.push(
            "recompute activations in the backward pass with --set train.remat=full".to_string(),
        );
    }
    if cfg.train.batch_size > 1 {
        tips.push(format!(
            "halve the batch with --set train.batch_size={} (or keep it with train.grad_accum=2)",
            cfg.train.batch_size / 2
        ));
    }
    if tips.is_empty() {
        tips.push("use a larger slice or a smaller model".into());
    }
    tips.join("; or ")
}

fn plugin_identity(plugin: &runtime::Plugin) -> Result<Value> {
    let (major, minor) = plugin.api_version();
    let attrs: serde_json::Map<String, Value> = plugin
        .attributes()
        .iter()
        .map(|(k, v)| (k.clone(), json!(v.to_string())))
        .collect();
    Ok(json!({
        "path": plugin.path().display().to_string(),
        "build": runtime::cache::plugin_build(plugin)?,
        "pjrt_api": format!("{major}.{minor}"),
        "attributes": attrs,
    }))
}

/// `rxla train --compiled DIR`: checks DIR's manifest against `client` and the programs the
/// config builds, then provides the executables so that the run compiles nothing. Any
/// difference is an error naming it.
pub fn use_compiled(
    dir: &Path,
    cfg: &TrainConfig,
    client: &Client,
    config_file: &Path,
) -> Result<()> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (make it with `rxla compile --config {} --target cpu --out {}`)",
            path.display(),
            config_file.display(),
            dir.display()
        )
    })?;
    let m: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let recompile = format!(
        "recompile with `rxla compile --config {} [--set ..] --target cpu:{} --out {}` on this \
         machine, or train without --compiled",
        config_file.display(),
        train::parallel::Plan::from_config(&cfg.parallel)?.map_or(1, |p| p.num_devices()),
        dir.display()
    );
    if m["format"].as_u64() != Some(FORMAT) {
        bail!(
            "{} has format {} but this rxla reads {FORMAT}; {recompile}",
            path.display(),
            m["format"]
        );
    }
    let mine = plugin_identity(client.plugin())?;
    let theirs = &m["plugin"];
    if theirs["build"] != mine["build"] {
        bail!(
            "{} was compiled by another plugin build ({} at {}, PJRT {}) than this client's ({} \
             at {}, PJRT {}): executables load only into the build that made them; {recompile}",
            dir.display(),
            short(&theirs["build"]),
            theirs["path"].as_str().unwrap_or("?"),
            theirs["pjrt_api"].as_str().unwrap_or("?"),
            short(&mine["build"]),
            mine["path"].as_str().unwrap_or("?"),
            mine["pjrt_api"].as_str().unwrap_or("?"),
        );
    }
    let want_devices = m["topology"]["devices"].as_u64().unwrap_or(0) as usize;
    let have_devices = client.addressable_devices().len();
    let kind = client
        .devices()
        .first()
        .map(|d| d.kind.clone())
        .unwrap_or_default();
    let needed = train::parallel::Plan::from_config(&cfg.parallel)?.map_or(1, |p| p.num_devices());
    if want_devices != needed
        || have_devices < needed
        || m["topology"]["device_kind"].as_str() != Some(kind.as_str())
    {
        bail!(
            "{} was compiled for {} x {} but this run uses {needed} of this client's \
             {have_devices} x {kind}; {recompile}",
            dir.display(),
            want_devices,
            m["topology"]["device_kind"].as_str().unwrap_or("?"),
        );
    }
    let programs = step_programs(cfg, Some(client))?;
    for (name, prog) in &programs {
        let (_, _, fp) = lowered(prog)?;
        let entry = m["programs"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name.as_str()))
            .ok_or_else(|| anyhow!("{} has no {name} program; {recompile}", path.display()))?;
        if entry["fingerprint"].as_str() != Some(fp.as_str()) {
            let diff = config_diff(&m["config"], &serde_json::to_value(cfg)?);
            bail!(
                "the {name} step this config builds differs from the one in {} (program \
                 fingerprint {} vs {}){}; {recompile}",
                dir.display(),
                &fp[..12],
                short(&entry["fingerprint"]),
                if diff.is_empty() {
                    String::new()
                } else {
                    format!(": config keys differ: {}", diff.join(", "))
                }
            );
        }
        let file = entry["file"].as_str().ok_or_else(|| {
            anyhow!(
                "the {name} step in {} did not compile (it does not fit); {recompile}",
                path.display()
            )
        })?;
        let bytes = std::fs::read(dir.join(file))
            .with_context(|| format!("reading {}", dir.join(file).display()))?;
        if entry["sha256"].as_str() != Some(runtime::cache::sha256_hex(&bytes).as_str()) {
            bail!(
                "{} is damaged (sha256 differs from the manifest); {recompile}",
                dir.join(file).display()
            );
        }
        runtime::cache::provide(fp, bytes);
    }
    eprintln!(
        "rxla: using the executables in {} (compiled for {}, {})",
        dir.display(),
        m["target"].as_str().unwrap_or("?"),
        m["mesh"].as_str().unwrap_or("?")
    );
    Ok(())
}

fn short(v: &Value) -> String {
    v.as_str()
        .map_or("?".into(), |s| s.chars().take(12).collect())
}

/// Dotted keys whose values differ between two config JSONs.
fn config_diff(a: &Value, b: &Value) -> Vec<String> {
    fn walk(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{prefix} ({a} vs {b})")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", a, b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxtext_names_map_to_topologies() {
        let t = |s: &str| tpu_topology_name(s).unwrap();
        assert_eq!(t("v5e-16"), "v5e:4x4");
        assert_eq!(t("v5e-4"), "v5e:2x2");
        assert_eq!(t("v5p-16"), "v5p:2x2x2");
        assert_eq!(t("v4-8"), "v4:2x2x1");
        assert_eq!(t("v5e:4x4"), "v5e:4x4");
        assert!(tpu_topology_name("v5e-3").is_err());
        assert_eq!("cpu:4".parse::<Target>().unwrap(), Target::Cpu(Some(4)));
        assert_eq!(
            "tpu:v5e-16".parse::<Target>().unwrap(),
            Target::Tpu("v5e:4x4".into())
        );
        assert!("gpu".parse::<Target>().is_err());
        assert_eq!(topology_devices("v5e:4x4"), Some(16));
        assert_eq!(topology_devices("v5p:2x2x2"), Some(8));
    }

    #[test]
    fn libtpu_oom_numbers_are_read() {
        let msg = "RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in \
                   memory space hbm. Used 20.50G of 15.75G hbm. Exceeded hbm capacity by 4.75G.";
        let (u, c) = parse_hbm_overflow(msg);
        assert_eq!(u, Some(20.5 * (1u64 << 30) as f64));
        assert_eq!(c, Some(15.75 * (1u64 << 30) as f64));
        let msg = "PJRT_Compile failed (RESOURCEEXHAUSTED): Ran out of memory on HBM, the total \
                   memory required for HLO temporaries (61.05G) exceeds available HBM (15.75G).";
        let (u, c) = parse_hbm_overflow(msg);
        assert_eq!(u, Some(61.05 * (1u64 << 30) as f64));
        assert_eq!(c, Some(15.75 * (1u64 << 30) as f64));
    }
}
