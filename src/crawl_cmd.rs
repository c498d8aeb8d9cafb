//! `rxla data crawl`: the `[crawl]` section of a config, `--set` overrides, one JSON report.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use data::pipeline::crawl::{self, CrawlConfig};

pub const DEFAULT_CRAWL_CONFIG: &str = "configs/data-crawl.toml";

#[derive(Args, Debug, Clone)]
pub struct CrawlArgs {
    /// TOML config with a `[crawl]` section.
    #[arg(long, default_value = DEFAULT_CRAWL_CONFIG)]
    pub config: PathBuf,
    /// Override a key: `--set crawl.max_pages=50` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output directory: WARC files, `crawl-state.json`, `crawl-report.json`.
    #[arg(long, default_value = "runs/crawl")]
    pub out: PathBuf,
    /// Go on from the state file in `--out` (the frontier and seen-set of an earlier run).
    #[arg(long)]
    pub resume: bool,
}

/// Reads the `[crawl]` section (unknown keys and wrong types name the key).
pub fn load(path: &std::path::Path, sets: &[String]) -> Result<CrawlConfig> {
    let mut table = crate::config::load_table(path, sets)?;
    if let Some(other) = table.keys().find(|k| *k != "crawl") {
        anyhow::bail!(
            "config key `{other}`: unknown section in {} (a crawl config has only [crawl])",
            path.display()
        );
    }
    let section = table
        .remove("crawl")
        .unwrap_or_else(|| toml::Value::Table(Default::default()));
    crate::config::parse_section(section, "crawl")
}

pub fn run(args: &CrawlArgs) -> Result<()> {
    let cfg = load(&args.config, &args.sets)?;
    let report = crawl::run(&cfg, &args.out, args.resume)
        .with_context(|| format!("crawling into {}", args.out.display()))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_bad_keys_are_named() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = load(&root.join(DEFAULT_CRAWL_CONFIG), &[]).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.delay_ms, 1000);
        let cfg = load(
            &root.join(DEFAULT_CRAWL_CONFIG),
            &["crawl.max_pages=7".into()],
        )
        .unwrap();
        assert_eq!(cfg.max_pages, 7);
        let err = load(&root.join(DEFAULT_CRAWL_CONFIG), &["crawl.bogus=1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("crawl") && err.contains("bogus"), "{err}");
        let err = load(
            &root.join(DEFAULT_CRAWL_CONFIG),
            &["crawl.max_pages=\"many\"".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("crawl.max_pages"), "{err}");
        let mut empty = cfg.clone();
        empty.seeds.clear();
        assert!(empty
            .validate()
            .unwrap_err()
            .to_string()
            .contains("crawl.seeds"));
    }
}
