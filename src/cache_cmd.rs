//! `rxla cache ls|clear`: the persistent compile cache (`<cache dir>/compile`).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use runtime::cache::CompileCache;

#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
}

#[derive(Subcommand, Debug, Clone)]
pub enum CacheAction {
    /// One line per compiled program: key, size, last use (most recent first), then the total.
    Ls,
    /// Remove every compiled program.
    Clear,
}

pub fn run(args: &CacheArgs) -> Result<()> {
    let cache = CompileCache::from_env()?;
    match args.action {
        CacheAction::Ls => {
            let entries = cache
                .list()
                .with_context(|| format!("listing {}", cache.dir.display()))?;
            let total: u64 = entries.iter().map(|e| e.bytes).sum();
            let now = std::time::SystemTime::now();
            for e in &entries {
                let ago = now
                    .duration_since(e.last_used)
                    .unwrap_or_default()
                    .as_secs();
                println!(
                    "{}  {:>10.1} KB  used {} ago",
                    e.key,
                    e.bytes as f64 / 1024.0,
                    human_secs(ago)
                );
            }
            println!(
                "{} entries, {:.1} MB of {:.0} MB in {}{}",
                entries.len(),
                total as f64 / (1 << 20) as f64,
                cache.max_bytes as f64 / (1 << 20) as f64,
                cache.dir.display(),
                if runtime::cache::enabled() {
                    ""
                } else {
                    " (off: RXLA_COMPILE_CACHE=0)"
                }
            );
        }
        CacheAction::Clear => {
            let (n, bytes) = cache
                .clear()
                .with_context(|| format!("clearing {}", cache.dir.display()))?;
            println!(
                "removed {n} entries ({:.1} MB) from {}",
                bytes as f64 / (1 << 20) as f64,
                cache.dir.display()
            );
        }
    }
    Ok(())
}

fn human_secs(s: u64) -> String {
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}
