//! The executor every stage runs on: shard `i` of `n` takes its share of the work, writes
//! each output through a temp file renamed into place, then a `<output>.report.json`
//! sidecar. An output counts as finished only when its sidecar exists, so a re-run skips
//! finished outputs and redoes anything a killed worker left behind. No central service:
//! each worker computes the whole plan from the inputs and `n` alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Which part of the work this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index >= count {
            bail!("--shard {index} --num-shards {count}: need 0 <= shard < num-shards");
        }
        Ok(Shard { index, count })
    }

    pub fn single() -> Shard {
        Shard { index: 0, count: 1 }
    }

    /// Whether work item `k` belongs to this shard.
    pub fn owns(&self, k: usize) -> bool {
        k % self.count == self.index
    }
}

/// An input to a stage: one container file (a dump, a WARC, a document shard) or a group of
/// loose files (HTML pages) that together make one stream of documents.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub files: Vec<PathBuf>,
}

/// One unit of work: a source (or, with fewer sources than shards, every `parts.1`-th
/// document of it starting at `parts.0`) and the output it produces.
#[derive(Debug, Clone)]
pub struct Task {
    pub source: Source,
    pub part: Option<(usize, usize)>,
    pub output: PathBuf,
}

impl Task {
    /// Whether this task handles the `k`-th document of its source.
    pub fn keeps(&self, k: usize) -> bool {
        self.part.is_none_or(|(i, n)| k % n == i)
    }
}

/// The whole plan (every shard's tasks, in order): with at least as many sources as shards,
/// whole sources go round-robin to shards; otherwise every shard reads every source and
/// keeps every n-th document, so one big dump still spreads over n workers.
pub fn plan(sources: &[Source], out_dir: &Path, n: usize, ext: &str) -> Vec<(usize, Task)> {
    let mut tasks = Vec::new();
    if sources.len() >= n {
        for (k, s) in sources.iter().enumerate() {
            tasks.push((
                k % n,
                Task {
                    source: s.clone(),
                    part: None,
                    output: out_dir.join(format!("{}{ext}", s.name)),
                },
            ));
        }
    } else {
        for s in sources {
            for i in 0..n {
                tasks.push((
                    i,
                    Task {
                        source: s.clone(),
                        part: Some((i, n)),
                        output: out_dir.join(format!("{}.p{i}of{n}{ext}", s.name)),
                    },
                ));
            }
        }
    }
    tasks
}

/// Counters of one stage on one shard (or merged over shards).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub stage: String,
    pub docs_in: u64,
    pub docs_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Documents (or inputs) dropped, by rule or reason.
    pub rejects: BTreeMap<String, u64>,
    pub duplicates_removed: u64,
    /// Tasks done by this run, and finished ones found from an earlier run.
    pub tasks_run: u64,
    pub tasks_skipped: u64,
    pub seconds: f64,
    /// Input megabytes per second of the tasks this run did.
    pub mb_per_s: f64,
    /// Stage-specific numbers (PII masks, tokens, candidate pairs, …).
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
}

impl Report {
    pub fn new(stage: &str) -> Report {
        Report {
            stage: stage.to_string(),
            ..Default::default()
        }
    }

    pub fn reject(&mut self, rule: &str) {
        *self.rejects.entry(rule.to_string()).or_default() += 1;
    }

    pub fn count(&mut self, key: &str, n: u64) {
        *self.counts.entry(key.to_string()).or_default() += n;
    }

    pub fn merge(&mut self, o: &Report) {
        self.docs_in += o.docs_in;
        self.docs_out += o.docs_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.duplicates_removed += o.duplicates_removed;
        self.tasks_run += o.tasks_run;
        self.tasks_skipped += o.tasks_skipped;
        self.seconds += o.seconds;
        for (k, v) in &o.rejects {
            *self.rejects.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.counts {
            *self.counts.entry(k.clone()).or_default() += v;
        }
        self.mb_per_s = if self.seconds > 0.0 {
            self.bytes_in as f64 / 1e6 / self.seconds
        } else {
            0.0
        };
    }
}

fn sidecar(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(".report.json");
    PathBuf::from(s)
}

/// The report of a finished output, if it is finished.
pub fn finished(output: &Path) -> Option<Report> {
    if !output.exists() {
        return None;
    }
    let text = std::fs::read_to_string(sidecar(output)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Runs this shard's tasks of `all` (from [`plan`]) with `work`, which must write
/// `task.output` atomically; skips finished outputs; removes finished outputs in `out_dir`
/// that the plan no longer has (a run with another shard count). Writes the shard's report
/// to `out_dir/_reports/<stage>.shard-I-of-N.json` and returns it.
pub fn run_tasks(
    stage: &str,
    all: &[(usize, Task)],
    out_dir: &Path,
    shard: Shard,
    ext: &str,
    work: impl Fn(&Task, &mut Report) -> Result<()>,
) -> Result<Report> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    remove_stale(out_dir, all, ext)?;
    let mut total = Report::new(stage);
    let bar = progress(stage, all, shard);
    for (owner, task) in all {
        if *owner != shard.index {
            continue;
        }
        bar.set_message(task.source.name.clone());
        let task_bytes = input_bytes(task);
        if let Some(done) = finished(&task.output) {
            bar.inc(task_bytes);
            total.merge(&Report {
                tasks_run: 0,
                tasks_skipped: 1,
                seconds: 0.0,
                ..done
            });
            continue;
        }
        let start = Instant::now();
        let mut r = Report::new(stage);
        work(task, &mut r).with_context(|| {
            format!("{stage}: {} → {}", task.source.name, task.output.display())
        })?;
        r.tasks_run = 1;
        r.seconds = start.elapsed().as_secs_f64();
        r.merge(&Report::new(stage));
        let json = serde_json::to_value(&r)?;
        files::write_json_atomic(&sidecar(&task.output), &json)?;
        total.merge(&r);
        bar.inc(task_bytes);
    }
    bar.finish_and_clear();
    total.mb_per_s = {
        let run_secs = total.seconds;
        if run_secs > 0.0 {
            total.bytes_in as f64 / 1e6 / run_secs
        } else {
            0.0
        }
    };
    let path = out_dir.join("_reports").join(format!(
        "{stage}.shard-{}-of-{}.json",
        shard.index, shard.count
    ));
    files::write_json_atomic(&path, &serde_json::to_value(&total)?)?;
    Ok(total)
}

/// Bytes of a task's input files (what its progress counts).
fn input_bytes(task: &Task) -> u64 {
    let n: u64 = task
        .source
        .files
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    match task.part {
        Some((_, parts)) => n / parts.max(1) as u64,
        None => n,
    }
}

/// A progress bar over this shard's input bytes (drawn only when stderr is a terminal).
fn progress(stage: &str, all: &[(usize, Task)], shard: Shard) -> indicatif::ProgressBar {
    let total: u64 = all
        .iter()
        .filter(|(o, _)| *o == shard.index)
        .map(|(_, t)| input_bytes(t))
        .sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {stage} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{elapsed}} {{msg}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Finished outputs (with their sidecars) in `out_dir` that `all` does not produce.
fn remove_stale(out_dir: &Path, all: &[(usize, Task)], ext: &str) -> Result<()> {
    let keep: std::collections::HashSet<&Path> =
        all.iter().map(|(_, t)| t.output.as_path()).collect();
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') || !name.ends_with(ext) || keep.contains(p.as_path()) {
            continue;
        }
        if sidecar(&p).exists() {
            for q in [sidecar(&p), p.clone()] {
                match std::fs::remove_file(&q) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("removing {}", q.display())),
                }
            }
        }
    }
    Ok(())
}

/// The merged report of every finished output of `all` (the whole stage, all shards).
pub fn stage_report(stage: &str, all: &[(usize, Task)]) -> Report {
    let mut r = Report::new(stage);
    for (_, t) in all {
        if let Some(done) = finished(&t.output) {
            r.merge(&done);
        }
    }
    r
}

/// Sources for a stage that reads document shards: one per finished shard file of `dir`.
pub fn doc_sources(dir: &Path) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    for p in super::docs::shard_files(dir)? {
        if finished(&p).is_none() {
            continue;
        }
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        let stem = name
            .trim_end_matches(".zst")
            .trim_end_matches(".jsonl")
            .to_string();
        out.push(Source {
            name: stem,
            files: vec![p],
        });
    }
    if out.is_empty() {
        bail!(
            "{} holds no finished document shards (*.jsonl.zst with a .report.json); run the \
             previous stage first",
            dir.display()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str) -> Source {
        Source {
            name: name.into(),
            files: vec![],
        }
    }

    #[test]
    fn plans_cover_every_source_once() {
        let out = Path::new("/o");
        let three = [src("a"), src("b"), src("c")];
        let p = plan(&three, out, 2, ".x");
        let owners: Vec<usize> = p.iter().map(|(o, _)| *o).collect();
        assert_eq!(owners, vec![0, 1, 0]);
        assert!(p.iter().all(|(_, t)| t.part.is_none()));
        let p = plan(&[src("dump")], out, 3, ".x");
        assert_eq!(p.len(), 3);
        for (i, (o, t)) in p.iter().enumerate() {
            assert_eq!(*o, i);
            assert_eq!(t.output, out.join(format!("dump.p{i}of3.x")));
            let kept: Vec<usize> = (0..9).filter(|&k| t.keeps(k)).collect();
            assert_eq!(kept, vec![i, i + 3, i + 6]);
        }
        assert!(Shard::new(2, 2).is_err() && Shard::new(0, 0).is_err());
    }

    #[test]
    fn reruns_skip_finished_and_redo_half_written() {
        let d = std::env::temp_dir().join(format!("rxla-shard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let all = plan(&[src("a"), src("b")], &d, 1, ".txt");
        let runs = std::cell::Cell::new(0);
        let work = |t: &Task, r: &mut Report| -> Result<()> {
            runs.set(runs.get() + 1);
            r.docs_in = 1;
            files::write_atomic(&t.output, b"x")?;
            Ok(())
        };
        let r = run_tasks("t", &all, &d, Shard::single(), ".txt", work).unwrap();
        assert_eq!((r.tasks_run, r.tasks_skipped, runs.get()), (2, 0, 2));
        // A worker killed after writing `b` but before its sidecar: `b` is done again.
        std::fs::remove_file(sidecar(&d.join("b.txt"))).unwrap();
        let r = run_tasks("t", &all, &d, Shard::single(), ".txt", work).unwrap();
        assert_eq!((r.tasks_run, r.tasks_skipped, runs.get()), (1, 1, 3));
        assert_eq!(r.docs_in, 2);
        assert_eq!(stage_report("t", &all).docs_in, 2);
        // A failing task leaves no finished output.
        let all_c = plan(&[src("a"), src("b"), src("c")], &d, 1, ".txt");
        let err = run_tasks("t", &all_c, &d, Shard::single(), ".txt", |t, _| {
            if t.source.name == "c" {
                bail!("boom")
            }
            Ok(())
        });
        assert!(err.is_err());
        assert!(finished(&d.join("c.txt")).is_none());
        // Another shard count: outputs of the old plan are removed.
        let two = plan(&[src("a")], &d, 2, ".txt");
        run_tasks("t", &two, &d, Shard::new(0, 2).unwrap(), ".txt", work).unwrap();
        assert!(!d.join("b.txt").exists() && !d.join("a.txt").exists());
        assert!(finished(&d.join("a.p0of2.txt")).is_some());
        let _ = std::fs::remove_dir_all(&d);
    }
}
