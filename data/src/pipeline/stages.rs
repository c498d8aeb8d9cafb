//! The pipeline config (`configs/data-*.toml`) and one entry point per stage: plan the work
//! from the previous stage's finished outputs and run this shard's part of it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::dedup::{self, DedupConfig};
use super::filter::{self, FilterConfig, Lists};
use super::shard::{doc_sources, plan, run_tasks, stage_report, Report, Shard, Source};
use super::tokenize::{self, TokenizeConfig};
use crate::tokenizer::{Tokenizer, TOKENIZER_FILE};

/// Config `[extract]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// Paths (files or directories) or `package:NAME` (see `pipeline::packages`).
    pub inputs: Vec<String>,
    pub max_page_bytes: usize,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            inputs: Vec::new(),
            max_page_bytes: super::sources::MAX_PAGE_BYTES,
        }
    }
}

/// A whole pipeline: every stage writes under `work_dir/<stage>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    pub work_dir: PathBuf,
    pub extract: ExtractConfig,
    pub filter: FilterConfig,
    pub dedup: DedupConfig,
    pub tokenize: TokenizeConfig,
}

impl PipelineConfig {
    pub fn load(path: &Path) -> Result<PipelineConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pipeline config {}", path.display()))?;
        let cfg: PipelineConfig = toml::from_str(&text)
            .with_context(|| format!("parsing pipeline config {}", path.display()))?;
        if cfg.work_dir.as_os_str().is_empty() {
            bail!("{}: set `work_dir`", path.display());
        }
        Ok(cfg)
    }

    pub fn dir(&self, stage: &str) -> PathBuf {
        self.work_dir.join(stage)
    }
}

/// Every stage, in pipeline order, and whether it is one task (not shardable).
pub const STAGES: &[(&str, bool)] = &[
    ("extract", false),
    ("filter", false),
    ("dedup-signatures", false),
    ("dedup-buckets", false),
    ("dedup-clusters", true),
    ("dedup-filter", false),
    ("tokenize-train", true),
    ("tokenize-encode", false),
];

const DOCS: &str = ".jsonl.zst";

/// Runs shard `shard` of `stage`; returns the shard's report. A single-task stage does its
/// work on shard 0 only.
pub fn run_stage(cfg: &PipelineConfig, stage: &str, shard: Shard) -> Result<Report> {
    let single = STAGES
        .iter()
        .find(|(s, _)| *s == stage)
        .map(|(_, one)| *one)
        .ok_or_else(|| {
            let known: Vec<&str> = STAGES.iter().map(|(s, _)| *s).collect();
            anyhow::anyhow!("unknown stage `{stage}`; stages: {}", known.join(", "))
        })?;
    if single && shard.index != 0 {
        return Ok(Report::new(stage));
    }
    let n = if single { 1 } else { shard.count };
    let shard = if single { Shard::single() } else { shard };
    let (all, out, ext) = stage_plan(cfg, stage, n)?;
    match stage {
        "extract" => run_tasks(stage, &all, &out, shard, ext, |t, r| {
            super::extract::run(t, r, cfg.extract.max_page_bytes)
        }),
        "filter" => {
            let lists = Lists::fetch()?;
            run_tasks(stage, &all, &out, shard, ext, |t, r| {
                filter::run(t, r, &cfg.filter, &lists)
            })
        }
        "dedup-signatures" => run_tasks(stage, &all, &out, shard, ext, |t, r| {
            dedup::signatures(t, r, &cfg.dedup)
        }),
        "dedup-buckets" => run_tasks(stage, &all, &out, shard, ext, |t, r| {
            dedup::buckets(t, r, &cfg.dedup)
        }),
        "dedup-clusters" => run_tasks(stage, &all, &out, shard, ext, dedup::cluster_task),
        "dedup-filter" => {
            let removed = dedup::read_removed(&cfg.dir("dedup-clusters").join("removed.txt"))?;
            run_tasks(stage, &all, &out, shard, ext, |t, r| {
                dedup::filter(t, r, &removed)
            })
        }
        "tokenize-train" => run_tasks(stage, &all, &out, shard, ext, |t, r| {
            tokenize::train(t, r, &cfg.tokenize)
        }),
        "tokenize-encode" => {
            let tok = Tokenizer::load(&cfg.dir("tokens").join(TOKENIZER_FILE))?;
            run_tasks(stage, &all, &out, shard, ext, |t, r| {
                tokenize::encode(t, r, &tok)
            })
        }
        _ => unreachable!(),
    }
}

/// Every shard's tasks, the output directory and the output extension.
type StagePlan = (Vec<(usize, super::shard::Task)>, PathBuf, &'static str);

/// The whole plan of a stage, its output directory and output extension.
fn stage_plan(cfg: &PipelineConfig, stage: &str, n: usize) -> Result<StagePlan> {
    let (sources, out, ext): (Vec<Source>, PathBuf, &str) = match stage {
        "extract" => {
            let inputs: Vec<PathBuf> = cfg
                .extract
                .inputs
                .iter()
                .map(|i| super::packages::resolve(i))
                .collect::<Result<_>>()?;
            (
                super::sources::sources_from_inputs(&inputs)?,
                cfg.dir("extract"),
                DOCS,
            )
        }
        "filter" => (doc_sources(&cfg.dir("extract"))?, cfg.dir("filter"), DOCS),
        "dedup-signatures" => (
            doc_sources(&cfg.dir("filter"))?,
            cfg.dir("dedup-signatures"),
            ".sig",
        ),
        "dedup-buckets" => {
            let sigs = finished_files(&cfg.dir("dedup-signatures"), ".sig")?;
            let units = dedup::bucket_units(&cfg.dedup)
                .into_iter()
                .map(|u| Source {
                    name: format!("unit-{u:03}"),
                    files: sigs.clone(),
                })
                .collect();
            (units, cfg.dir("dedup-buckets"), ".pairs")
        }
        "dedup-clusters" => {
            let pairs = finished_files(&cfg.dir("dedup-buckets"), ".pairs")?;
            (
                vec![Source {
                    name: "removed".into(),
                    files: pairs,
                }],
                cfg.dir("dedup-clusters"),
                ".txt",
            )
        }
        "dedup-filter" => (doc_sources(&cfg.dir("filter"))?, cfg.dir("dedup"), DOCS),
        "tokenize-train" => {
            let files = doc_sources(&cfg.dir("dedup"))?
                .into_iter()
                .flat_map(|s| s.files)
                .collect();
            (
                vec![Source {
                    name: "tokenizer".into(),
                    files,
                }],
                cfg.dir("tokens"),
                ".json",
            )
        }
        "tokenize-encode" => {
            let ext = tokenize::token_ext(cfg.tokenize.vocab_size);
            (doc_sources(&cfg.dir("dedup"))?, cfg.dir("tokens"), ext)
        }
        _ => unreachable!(),
    };
    // Band units keep their names; with fewer units than shards they still go one per shard.
    let all = if stage == "dedup-buckets" {
        sources
            .into_iter()
            .enumerate()
            .map(|(k, s)| {
                let output = out.join(format!("{}{ext}", s.name));
                (
                    k % n,
                    super::shard::Task {
                        source: s,
                        part: None,
                        output,
                    },
                )
            })
            .collect()
    } else {
        plan(&sources, &out, n, ext)
    };
    Ok((all, out, ext))
}

fn finished_files(dir: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !name.starts_with('.') && name.ends_with(ext) && super::shard::finished(&p).is_some()
            {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        bail!(
            "{} holds no finished *{ext} outputs; run the previous stage first",
            dir.display()
        );
    }
    Ok(out)
}

/// The merged report of a stage over all shards (after every shard finished).
pub fn merged_report(cfg: &PipelineConfig, stage: &str, n: usize) -> Result<Report> {
    let single = STAGES.iter().any(|(s, one)| *s == stage && *one);
    let (all, out, _) = stage_plan(cfg, stage, if single { 1 } else { n })?;
    let r = stage_report(stage, &all);
    files::write_json_atomic(
        &out.join("_reports").join(format!("{stage}.json")),
        &serde_json::to_value(&r)?,
    )?;
    Ok(r)
}
