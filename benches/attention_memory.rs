//! Compiled temp memory of a GPT train step (d 128, 2 layers, 4 heads, batch 1, AdamW) per
//! attention kernel at T = 1k .. 16k, and of reversible vs plain stacks at 2 .. 16 layers
//! (T = 4k). The numbers are XLA's buffer assignment for the compiled step (PJRT's
//! compiled memory stats: no step is run), so they do not depend on machine load.
//! `cargo bench --bench attention_memory [-- MAX_T] [depth]` (`depth`: only the depth
//! table); numbers go in notes, never asserted.

use models::gpt::{Gpt, GptConfig};
use nn::AttentionConfig;
use rxla::config::{OptimizerConfig, OptimizerKind, ScheduleConfig};
use train::optim::Optimizer;
use train::state::{build_train_step, compile_program};
use train::step::Passes;

fn gpt(t: usize, layers: usize, attention: AttentionConfig, reversible: bool) -> Gpt {
    Gpt(GptConfig {
        vocab_size: 256,
        seq_len: t,
        d_model: 128,
        n_layers: layers,
        n_heads: 4,
        dropout: 0.0,
        tied_head: true,
        attention,
        reversible,
        ff_chunks: 1,
    })
}

/// `(temp bytes, compile seconds)` of the train step.
fn temp_bytes(client: &runtime::Client, model: &Gpt) -> anyhow::Result<(i64, f64)> {
    let opt = Optimizer {
        opt: OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 1e-3,
            ..Default::default()
        },
        schedule: ScheduleConfig::default(),
        total_steps: 100,
    };
    let t = std::time::Instant::now();
    let (prog, _) = build_train_step(client, model, &opt, 1, &Passes::default())?;
    let c = compile_program(client, prog)?;
    Ok((c.exe.memory_stats()?.temp_bytes, t.elapsed().as_secs_f64()))
}

fn mib(b: i64) -> String {
    format!("{:.1}", b as f64 / (1u64 << 20) as f64)
}

/// The kernels at length `t` (sizes that divide every T of the table).
fn kernels(t: usize) -> Vec<(&'static str, AttentionConfig)> {
    let mut r = 1usize << ((t.trailing_zeros() / 2) as usize);
    if r * r != t {
        r *= 2;
    }
    vec![
        ("dense", AttentionConfig::Dense),
        ("chunked 512", AttentionConfig::Chunked { chunk: 512 }),
        ("local 256", AttentionConfig::Local { window: 256 }),
        (
            "block_sparse 64/64/3",
            AttentionConfig::BlockSparse {
                block: 64,
                global: 64,
                random: 3,
                seed: 0,
            },
        ),
        ("axial", AttentionConfig::Axial { shape: [r, t / r] }),
        (
            "lsh 64 x2",
            AttentionConfig::Lsh {
                bucket_size: 64,
                n_hashes: 2,
            },
        ),
    ]
}

fn main() -> anyhow::Result<()> {
    let max_t: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(16384);
    let depth_only = std::env::args().any(|a| a == "depth");
    let client = runtime::provision::cpu_client(1)?;
    let ts: Vec<usize> = [1024, 2048, 4096, 8192, 16384]
        .into_iter()
        .filter(|&t| t <= max_t && !depth_only)
        .collect();
    println!("compiled temp MiB of the GPT train step (d 128, 2 layers, batch 1)");
    print!("| kernel |");
    for t in &ts {
        print!(" T={t} |");
    }
    println!(" growth per doubling (last) |");
    println!("|---|{}---|", "---|".repeat(ts.len()));
    for k in 0..kernels(1024).len() * usize::from(!depth_only) {
        let name = kernels(1024)[k].0;
        print!("| {name} |");
        let mut last = Vec::new();
        for &t in &ts {
            let (_, cfg) = kernels(t)[k];
            match temp_bytes(&client, &gpt(t, 2, cfg, false)) {
                Ok((b, s)) => {
                    print!(" {} ({s:.0} s) |", mib(b));
                    last.push(b);
                }
                Err(e) => print!(" error: {e} |"),
            }
            use std::io::Write;
            std::io::stdout().flush()?;
        }
        let n = last.len();
        if n >= 2 {
            println!(" {:.2}x |", last[n - 1] as f64 / last[n - 2] as f64);
        } else {
            println!(" |");
        }
    }
    let t = 4096.min(max_t);
    println!("\ncompiled temp MiB at T={t} by depth, plain vs reversible");
    println!("| kernel | layers | plain | reversible |");
    println!("|---|---|---|---|");
    for (name, cfg) in [
        ("chunked 512", AttentionConfig::Chunked { chunk: 512 }),
        ("dense", AttentionConfig::Dense),
    ] {
        for layers in [2, 4, 8, 16] {
            let p = temp_bytes(&client, &gpt(t, layers, cfg, false))?.0;
            let r = temp_bytes(&client, &gpt(t, layers, cfg, true))?.0;
            println!("| {name} | {layers} | {} | {} |", mib(p), mib(r));
        }
    }
    Ok(())
}
