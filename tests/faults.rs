//! Faults a cloud job meets, injected into real `rxla train` processes: kill -9 at
//! pseudo-random moments (a fixed seed, so a failure reproduces), SIGTERM/SIGINT
//! (preemption), a second process on the same run directory. After each, the run resumes
//! with the same command and must log exactly what an uninterrupted run logs.

mod common;
use common::{err, metric_rows, ok, tmp_dir, train};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A tiny MLP on MNIST: a restart costs ~2 s (plugin, data, compile), a step well under 1 ms,
/// so the kills land in startup, steps, evaluations and checkpoint writes alike.
const MLP: &str = r#"
seed = 11
[model]
kind = "mlp"
hidden = [32]
[data]
dataset = "mnist"
[train]
batch_size = 32
steps = 600
log_every = 1
eval_every = 200
eval_batch_size = 1000
checkpoint_every = 4
keep_checkpoints = 2
peak_flops = 1e11
[optimizer]
kind = "adam"
lr = 0.003
[schedule]
kind = "warmup_cosine"
warmup_steps = 20
"#;

/// Keys that depend on the clock, not on the computation.
const TIMING_KEYS: [&str; 3] = ["examples_per_s", "tokens_per_s", "mfu"];

/// A hang guard for waits on a child (not a speed assertion).
const HANG: Duration = Duration::from_secs(120);

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("cfg.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts `rxla train --config cfg --out out extra..` with stderr into `log`.
fn spawn_train(cfg: &Path, out: &Path, extra: &[&str], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rxla"))
        .args(["train", "--config", cfg.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start rxla")
}

/// Lines in `metrics.jsonl` (0 when it does not exist yet).
fn metric_lines(run: &Path) -> usize {
    std::fs::read(run.join("metrics.jsonl"))
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Whether process `pid` is writing a checkpoint (its temp directory `.tmp-step-N-<pid>`
/// exists; those of killed processes may be there too).
fn checkpoint_in_flight(run: &Path, pid: u32) -> bool {
    let suffix = format!("-{pid}");
    std::fs::read_dir(run.join("checkpoints"))
        .map(|d| {
            d.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(".tmp-") && name.ends_with(&suffix)
            })
        })
        .unwrap_or(false)
}

/// Polls `cond` until it holds (true) or the child exits (false).
fn wait_until(child: &mut Child, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            t.elapsed() < HANG,
            "rxla train neither progressed nor exited"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Waits for the child to exit (with the hang guard).
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > HANG {
            let _ = child.kill();
            panic!("rxla train did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every metric that does not depend on the clock, per line.
fn deterministic_rows(run: &Path) -> Vec<serde_json::Value> {
    metric_rows(run)
        .into_iter()
        .map(|mut r| {
            for k in TIMING_KEYS {
                r.as_object_mut().unwrap().remove(k);
            }
            r
        })
        .collect()
}

/// The whole file is complete lines, one per step 1..=steps, in order.
fn assert_whole_lines(run: &Path, steps: u64) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "torn last line");
    let got: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("torn or garbled line {l:?}: {e}"))["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let want: Vec<u64> = (1..=steps).collect();
    assert_eq!(got, want, "each step logged once, in order");
}

/// Every checkpoint left loads and verifies (checksums, format); no temp directory is left.
fn assert_checkpoints_verify(run: &Path) -> usize {
    let root = run.join("checkpoints");
    let mut n = 0;
    for e in std::fs::read_dir(&root).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".tmp-"),
            "partial checkpoint left: {name}"
        );
        train::checkpoint::load(&e.path())
            .unwrap_or_else(|err| panic!("checkpoint {name} does not verify: {err:#}"));
        n += 1;
    }
    n
}

/// What a scheduler does: start, kill -9 at a pseudo-random moment, restart with the same
/// command, 24 times; then let it finish. Kinds of moment, drawn per kill: during startup
/// (plugin, data, compile), after some steps, and during a checkpoint write (its temp
/// directory seen). After some kills a torn half line is appended to `metrics.jsonl`, as a
/// crash mid-write (power loss, a full disk) leaves it.
#[test]
fn kill_9_at_random_moments_then_resume_matches_an_uninterrupted_run() {
    const KILLS: usize = 24;
    const STEPS: u64 = 600;
    let root = tmp_dir("faults-kill");
    let cfg = write_config(&root, MLP);
    let (reference, run) = (root.join("reference"), root.join("killed"));
    let restart = ["--resume", "auto"];

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    let (mut kills, mut mid_checkpoint, mut torn) = (0, 0, 0);
    let mut attempt = 0;
    let finished = loop {
        let log = root.join(format!("attempt-{attempt}.log"));
        let had_checkpoint = train::checkpoint::latest(&run.join("checkpoints"))
            .unwrap()
            .is_some();
        let mut child = spawn_train(&cfg, &run, &restart, &log);
        if kills == KILLS {
            break wait_exit(&mut child);
        }
        let before = metric_lines(&run);
        let alive = match rng.gen_range(0..3) {
            0 => {
                // Mostly startup (plugin, data, compile); at most a few steps in.
                let d = Duration::from_millis(rng.gen_range(0..2500));
                let t = Instant::now();
                wait_until(&mut child, || {
                    t.elapsed() >= d || metric_lines(&run) >= before + 12
                })
            }
            1 => {
                let n = rng.gen_range(1..12);
                let alive = wait_until(&mut child, || metric_lines(&run) >= before + n);
                std::thread::sleep(Duration::from_micros(rng.gen_range(0..3000)));
                alive
            }
            _ => {
                let pid = child.id();
                let alive = wait_until(&mut child, || checkpoint_in_flight(&run, pid));
                if alive && checkpoint_in_flight(&run, pid) {
                    mid_checkpoint += 1;
                }
                alive
            }
        };
        if !alive {
            // It finished before the moment came: nothing was killed.
            let status = wait_exit(&mut child);
            break status;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        if rng.gen_range(0..4) == 0 && run.join("metrics.jsonl").exists() {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(run.join("metrics.jsonl"))
                .unwrap();
            f.write_all(b"{\"step\": 99999, \"loss\": 0.12").unwrap();
            torn += 1;
        }
        // The first line says what happened: resumed when a checkpoint was there.
        let first = std::fs::read_to_string(&log).unwrap();
        if let Some(line) = first.lines().next() {
            let want = if had_checkpoint {
                "rxla: resuming from"
            } else {
                "rxla: starting fresh"
            };
            assert!(line.starts_with(want), "attempt {attempt}: {line}");
        }
        attempt += 1;
    };
    assert!(
        finished.success(),
        "the last restart failed: {}",
        std::fs::read_to_string(root.join(format!("attempt-{attempt}.log"))).unwrap()
    );
    eprintln!(
        "{kills} kills ({mid_checkpoint} during a checkpoint write), {torn} torn lines injected"
    );
    assert_eq!(kills, KILLS, "the run finished before all kills: add steps");
    assert!(mid_checkpoint > 0, "no kill landed in a checkpoint write");

    ok(&train(&cfg, &reference, &[]));
    assert_whole_lines(&run, STEPS);
    let (a, b) = (deterministic_rows(&reference), deterministic_rows(&run));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "uninterrupted vs killed and resumed");
    }
    assert!(assert_checkpoints_verify(&run) >= 1);
    assert!(run.join("summary.json").is_file());
    std::fs::remove_dir_all(&root).unwrap();
}

/// Like [`MLP`] but long, checkpointing only at the end or on a signal.
fn long_run(steps: usize) -> String {
    MLP.replace("steps = 600", &format!("steps = {steps}"))
        .replace("checkpoint_every = 4", "checkpoint_every = 0")
        .replace("eval_every = 200", "eval_every = 0")
        .replace(
            "kind = \"warmup_cosine\"\nwarmup_steps = 20",
            "kind = \"constant\"",
        )
}

/// Sends `sig` (TERM, INT) to the child.
fn signal(child: &Child, sig: &str) {
    let s = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(s.success());
}

/// The step an interrupted run reports: "stopped by SIGTERM at step N".
fn stopped_at(log: &Path, sig: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap();
    let tail = text
        .split(&format!("stopped by {sig} at step "))
        .nth(1)
        .unwrap_or_else(|| panic!("no stop message for {sig}: {text}"));
    tail.split(';').next().unwrap().trim().parse().unwrap()
}

/// Preemption: SIGTERM (then SIGINT on the resumed run) checkpoints the step reached, exits 0
/// with a message, and the run resumes exactly.
#[test]
fn sigterm_and_sigint_checkpoint_the_current_step_and_resume_exactly() {
    let root = tmp_dir("faults-signal");
    let cfg = write_config(&root, &long_run(1_000_000));
    let run = root.join("run");
    let auto = ["--resume", "auto"];
    let mut stopped = Vec::new();
    for (i, sig) in ["TERM", "INT"].into_iter().enumerate() {
        let log = root.join(format!("{sig}.log"));
        let mut child = spawn_train(&cfg, &run, &auto, &log);
        let before = metric_lines(&run);
        assert!(wait_until(&mut child, || metric_lines(&run) >= before + 20));
        signal(&child, sig);
        let status = wait_exit(&mut child);
        assert!(
            status.success(),
            "{sig}: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        let step = stopped_at(&log, &format!("SIG{sig}"));
        let dir = run.join(format!("checkpoints/step-{step:08}"));
        let c = train::checkpoint::load(&dir).unwrap();
        assert_eq!(c.state.step, step, "{sig}: checkpoint of the step reached");
        assert_eq!(
            metric_lines(&run),
            step,
            "{sig}: every step up to it logged"
        );
        assert!(i == 0 || step > stopped[0], "the second run went on");
        stopped.push(step);
    }
    // Resume to a few steps past the second stop; compare with a run straight there.
    let end = stopped[1] + 10;
    let finish = root.join("finish.toml");
    std::fs::write(&finish, long_run(end)).unwrap();
    let reference = root.join("reference");
    ok(&train(&finish, &run, &auto));
    ok(&train(&finish, &reference, &[]));
    assert_whole_lines(&run, end as u64);
    assert_eq!(deterministic_rows(&reference), deterministic_rows(&run));
    std::fs::remove_dir_all(&root).unwrap();
}

/// One process per run directory: a second is refused naming the first's pid; the lock of a
/// killed process is taken over. `--resume auto` starts fresh where there is no checkpoint,
/// plain `--resume` refuses.
#[test]
fn run_directory_lock_and_resume_auto() {
    let root = tmp_dir("faults-lock");
    let cfg = write_config(&root, &long_run(1_000_000));
    let run = root.join("run");
    let e = err(&train(&cfg, &run, &["--resume"]));
    assert!(
        e.contains("no complete checkpoint") && e.contains("--resume auto"),
        "{e}"
    );
    let log = root.join("first.log");
    let mut first = spawn_train(&cfg, &run, &["--resume", "auto"], &log);
    assert!(wait_until(&mut first, || metric_lines(&run) >= 5));
    let line = std::fs::read_to_string(&log).unwrap();
    assert!(
        line.starts_with("rxla: starting fresh") && line.contains("resume auto"),
        "{line}"
    );
    let pid = first.id().to_string();
    let e = err(&train(&cfg, &run, &["--resume", "auto"]));
    assert!(
        e.contains(&format!("pid {pid}")) && e.contains("another rxla process"),
        "{e}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // The killed run wrote no checkpoint (none before the end): auto starts fresh again.
    let short = root.join("short.toml");
    std::fs::write(&short, long_run(30)).unwrap();
    let o = train(&short, &run, &["--resume", "auto"]);
    ok(&o);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.starts_with("rxla: starting fresh"), "{e}");
    assert!(
        e.contains("took over the lock") && e.contains(&format!("pid {pid}")),
        "{e}"
    );
    assert_whole_lines(&run, 30);
    // Finished cleanly: the next start names no stale holder and resumes the last step.
    let o = train(&short, &run, &["--resume", "auto"]);
    ok(&o);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.starts_with("rxla: resuming from"), "{e}");
    assert!(!e.contains("took over"), "{e}");
    assert_whole_lines(&run, 30);
    std::fs::remove_dir_all(&root).unwrap();
}

/// A run that diverges (lr 1e30: the second step's loss is not finite). `stop` fails naming
/// the step and keeps the last good checkpoint; `skip` drops the updates, counts them and
/// fails after `train.max_skips_in_a_row` in a row.
#[test]
fn nonfinite_loss_stops_or_skips() {
    let root = tmp_dir("faults-nan");
    let cfg = write_config(
        &root,
        &long_run(50)
            .replace("lr = 0.003", "lr = 1e30")
            .replace("checkpoint_every = 0", "checkpoint_every = 1"),
    );
    let stop = root.join("stop");
    let e = err(&train(&cfg, &stop, &[]));
    assert!(e.contains("at step 2") && e.contains("on_nonfinite"), "{e}");
    let newest = train::checkpoint::latest(&stop.join("checkpoints"))
        .unwrap()
        .unwrap();
    let c = train::checkpoint::load(&newest).unwrap();
    assert_eq!(
        c.state.step, 1,
        "the last good step is the newest checkpoint"
    );
    assert!(c
        .params
        .iter()
        .all(|t| t.data.iter().all(|v| v.is_finite())));

    let skip = root.join("skip");
    let e = err(&train(
        &cfg,
        &skip,
        &[
            "--set",
            "train.on_nonfinite=skip",
            "--set",
            "train.max_skips_in_a_row=3",
            "--set",
            "train.keep_checkpoints=5",
        ],
    ));
    assert!(
        e.contains("update skipped (1 in a row, 1 in all)")
            && e.contains("3 steps in a row were non-finite")
            && e.contains("at step 4"),
        "{e}"
    );
    // Skipped steps changed nothing: the checkpoints of steps 2 and 3 equal step 1's.
    let one = train::checkpoint::load(&skip.join("checkpoints/step-00000001")).unwrap();
    let three = train::checkpoint::load(&skip.join("checkpoints/step-00000003")).unwrap();
    let sorted = |mut v: Vec<train::checkpoint::NamedTensor>| {
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    assert!(
        sorted(one.params) == sorted(three.params)
            && sorted(one.optimizer) == sorted(three.optimizer),
        "a skipped step changed the weights or the optimizer state"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

/// `rxla train` with every file capped at `max_bytes` (RLIMIT_FSIZE, with SIGXFSZ ignored so
/// a write past it fails with EFBIG instead of killing): an injected full disk that needs no
/// privileges. The cap lets the parameters file through and stops the optimizer file.
fn train_on_a_full_disk(cfg: &Path, out: &Path, extra: &[&str], max_bytes: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rxla"));
    cmd.args(["train", "--config", cfg.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap()])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: max_bytes,
                rlim_max: max_bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run rxla")
}

/// A checkpoint write that fails (full disk) stops the run with an error naming the
/// checkpoint still the newest, or with `train.on_checkpoint_error = "skip"` warns and trains
/// on; the previous checkpoint stays intact and the run resumes from it exactly.
#[test]
fn full_disk_during_a_checkpoint_keeps_the_previous_one() {
    let root = tmp_dir("faults-disk");
    let cfg = write_config(
        &root,
        &long_run(24).replace("checkpoint_every = 0", "checkpoint_every = 8"),
    );
    let (run, skipped, reference) = (root.join("run"), root.join("skipped"), root.join("ref"));
    let auto = ["--resume", "auto"];
    // All three stop at step 8 first (its line has the end-of-run evaluation), then go on.
    for dir in [&reference, &run, &skipped] {
        ok(&train(&cfg, dir, &["--set", "train.steps=8"]));
    }
    ok(&train(&cfg, &reference, &auto));
    const CAP: u64 = 150_000; // params ~102 KB pass, optimizer state ~204 KB does not
    let e = err(&train_on_a_full_disk(&cfg, &run, &auto, CAP));
    assert!(
        e.contains("writing the checkpoint of step 16 failed (is the disk full?)")
            && e.contains("step-00000008 stays the newest checkpoint")
            && e.contains("File too large"),
        "{e}"
    );
    assert_eq!(
        assert_checkpoints_verify(&run),
        1,
        "only step 8's checkpoint"
    );
    ok(&train(&cfg, &run, &auto));
    assert_whole_lines(&run, 24);
    assert_eq!(deterministic_rows(&reference), deterministic_rows(&run));

    let skip = [
        "--resume",
        "auto",
        "--set",
        "train.on_checkpoint_error=skip",
    ];
    let o = train_on_a_full_disk(&cfg, &skipped, &skip, CAP);
    ok(&o);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("warning: writing the checkpoint of step 16 failed")
            && e.contains("warning: writing the checkpoint of step 24 failed")
            && e.contains("training goes on"),
        "{e}"
    );
    assert_eq!(assert_checkpoints_verify(&skipped), 1);
    assert_eq!(deterministic_rows(&reference), deterministic_rows(&skipped));
    std::fs::remove_dir_all(&root).unwrap();
}

/// The cache on first use: a fetch killed midway leaves only a temp dir (never used, removed
/// by the next fetch), and three processes starting at once on an empty cache fetch the
/// package once (the others wait) and train on the same bytes. The plugin comes from the
/// real cache (`RXLA_PJRT_PLUGIN`), so only the corpus is fetched.
#[test]
fn cache_survives_a_killed_fetch_and_concurrent_first_use() {
    let root = tmp_dir("faults-cache");
    let cfg = write_config(
        &root,
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_inputs/files/gpt.toml"),
        )
        .unwrap(),
    );
    let plugin = runtime::provision::plugin_path(runtime::provision::Backend::Cpu).unwrap();
    let cache = root.join("cache");
    let packages = cache.join("packages");
    let spawn = |out: &Path, log: &Path| {
        Command::new(env!("CARGO_BIN_EXE_rxla"))
            .args(["train", "--config", cfg.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap()])
            .env("RXLA_CACHE_DIR", &cache)
            .env("RXLA_PJRT_PLUGIN", &plugin)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    };
    let partial = || {
        std::fs::read_dir(&packages)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            })
            .unwrap_or(false)
    };
    let mut killed = spawn(&root.join("killed"), &root.join("killed.log"));
    assert!(
        wait_until(&mut killed, partial),
        "the fetch finished before it could be killed"
    );
    killed.kill().unwrap();
    killed.wait().unwrap();
    assert!(partial(), "the killed fetch left its temp dir");

    let mut runs: Vec<(PathBuf, PathBuf, Child)> = (0..3)
        .map(|i| {
            let (out, log) = (
                root.join(format!("run{i}")),
                root.join(format!("run{i}.log")),
            );
            let child = spawn(&out, &log);
            (out, log, child)
        })
        .collect();
    let mut fetched = 0;
    for (_, log, child) in &mut runs {
        let status = wait_exit(child);
        let text = std::fs::read_to_string(&*log).unwrap();
        assert!(status.success(), "{text}");
        fetched += text.matches("rxla: fetching").count();
    }
    assert_eq!(fetched, 1, "one process fetched, the others waited for it");
    assert!(!partial(), "the killed fetch's temp dir was removed");
    let rows: Vec<_> = runs
        .iter()
        .map(|(out, ..)| deterministic_rows(out))
        .collect();
    assert!(
        rows.windows(2).all(|w| w[0] == w[1]),
        "same corpus, same run"
    );
    std::fs::remove_dir_all(&root).unwrap();
}
