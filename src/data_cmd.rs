//! `rxla data <stage>`: the document pipeline's stages, one shard at a time, and `rxla data
//! run` chaining them as N local processes per stage. The shard index defaults to the
//! scheduler's array index (`SLURM_ARRAY_TASK_ID`, Kubernetes' `JOB_COMPLETION_INDEX`).

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use data::pipeline::shard::Shard;
use data::pipeline::stages::{merged_report, run_stage, PipelineConfig, STAGES};

/// `rxla data <stage> ..` (beside `rxla data crawl`, whose arguments differ).
#[derive(clap::Parser, Debug)]
#[command(name = "rxla data")]
struct StageCli {
    #[command(flatten)]
    args: DataArgs,
}

/// Runs the stage `argv` names (`argv[0]` is the stage).
pub fn stage_cmd(argv: Vec<OsString>) -> Result<()> {
    use clap::Parser;
    let argv = std::iter::once(OsString::from("rxla data")).chain(argv);
    data_cmd(&StageCli::parse_from(argv).args)
}

#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// A stage (extract, filter, dedup-signatures, dedup-buckets, dedup-clusters,
    /// dedup-filter, tokenize-train, tokenize-encode), a group (dedup, tokenize: their
    /// passes in order, one shard only), or `run` (every stage).
    pub stage: String,
    /// The pipeline config (`configs/data-*.toml`).
    #[arg(long)]
    pub config: PathBuf,
    /// This process's shard (default: $SLURM_ARRAY_TASK_ID or $JOB_COMPLETION_INDEX or 0).
    #[arg(long)]
    pub shard: Option<usize>,
    /// How many shards the stage is split into (default: $RXLA_NUM_SHARDS or 1).
    #[arg(long)]
    pub num_shards: Option<usize>,
    /// `run` only: local worker processes per stage.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}

fn env_usize(names: &[&str]) -> Result<Option<usize>> {
    for n in names {
        if let Ok(v) = std::env::var(n) {
            return v
                .trim()
                .parse()
                .map(Some)
                .with_context(|| format!("${n} is {v:?}, not a shard index"));
        }
    }
    Ok(None)
}

pub fn data_cmd(args: &DataArgs) -> Result<()> {
    let cfg = PipelineConfig::load(&args.config)?;
    if args.stage == "run" {
        return run_all(args, &cfg);
    }
    let index = match args.shard {
        Some(i) => i,
        None => env_usize(&["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"])?.unwrap_or(0),
    };
    let count = match args.num_shards {
        Some(n) => n,
        None => env_usize(&["RXLA_NUM_SHARDS"])?.unwrap_or(1),
    };
    let shard = Shard::new(index, count)?;
    let stages: Vec<&str> = match args.stage.as_str() {
        "extract" | "filter" => vec![args.stage.as_str()],
        "dedup" | "tokenize" => {
            if count > 1 {
                bail!(
                    "`{}` runs all its passes; across shards run each pass on every shard in \
                     turn (e.g. `{}-signatures`), or use `rxla data run --workers N`",
                    args.stage,
                    args.stage
                );
            }
            STAGES
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| s.starts_with(&format!("{}-", args.stage)))
                .collect()
        }
        s => vec![s],
    };
    for stage in stages {
        let r = run_stage(&cfg, stage, shard)?;
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(())
}

/// Every stage in order, each as `workers` child processes (one for single-task stages);
/// a stage starts when every shard of the one before it has finished.
fn run_all(args: &DataArgs, cfg: &PipelineConfig) -> Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let exe = std::env::current_exe().context("finding the rxla binary")?;
    for (stage, single) in STAGES {
        let n = if *single { 1 } else { args.workers };
        let start = std::time::Instant::now();
        let mut children = Vec::new();
        for i in 0..n {
            let child = std::process::Command::new(&exe)
                .args(["data", stage, "--config"])
                .arg(&args.config)
                .args(["--shard", &i.to_string(), "--num-shards", &n.to_string()])
                .stdout(std::process::Stdio::null())
                .spawn()
                .with_context(|| format!("starting worker {i} of {stage}"))?;
            children.push(child);
        }
        let mut failed = Vec::new();
        for (i, mut c) in children.into_iter().enumerate() {
            if !c.wait().map(|s| s.success()).unwrap_or(false) {
                failed.push(i);
            }
        }
        if !failed.is_empty() {
            bail!(
                "stage {stage}: shards {failed:?} of {n} failed (see their errors above); \
                 re-run to redo only the unfinished outputs"
            );
        }
        let r = merged_report(cfg, stage, n)?;
        eprintln!(
            "rxla data: {stage:<17} {n} worker(s) {:>7.2}s  docs {} → {}  rejects {}  \
             duplicates {}",
            start.elapsed().as_secs_f64(),
            r.docs_in,
            r.docs_out,
            r.rejects.values().sum::<u64>(),
            r.duplicates_removed
        );
    }
    println!("{}", cfg.dir("tokens").display());
    Ok(())
}
