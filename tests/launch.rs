//! `rxla launch --local 4`: four real processes on loopback join a job (bootstrap, PJRT clients
//! created with the job's store and CPU process ids, a device exchange through the KV store,
//! lock-step barriers), and a killed or stopped process ends every other one within the
//! timeout, with an error naming it and its last step.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn launch(n: u32, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rxla"));
    c.args(["launch", "--local", &n.to_string(), "--grace", "20", "--"]);
    c.args(args);
    c
}

/// Collects a child's output lines as they come.
fn collect(r: impl std::io::Read + Send + 'static) -> Lines {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    lines
}

fn wait_line(lines: &Mutex<Vec<String>>, pat: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(l) = lines.lock().unwrap().iter().find(|l| l.contains(pat)) {
            return l.clone();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "no line with `{pat}` within {within:?}: {:?}",
        lines.lock().unwrap()
    );
}

fn wait_exit(c: &mut Child, within: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    panic!("the launcher did not exit within {within:?}");
}

#[test]
fn four_local_processes_bootstrap_exchange_and_finish() {
    let out = launch(4, &["dist-check", "--steps", "5", "--step-ms", "10"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in 0..4 {
        // The CPU plugin took the process id: it is the client's process index.
        assert!(stdout.contains(&format!("process {p}/4: ")), "{stdout}");
        assert!(
            stdout.contains(&format!("client process index {p}")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("process 0 sees process {p}: ")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "process {p}: dist-check ok (4 processes, 5 steps)"
            )),
            "{stdout}"
        );
    }
}

/// Starts 4 processes stepping for a long time; returns the launcher, its output and the
/// pid of process `victim` once it reached step 20.
type Lines = Arc<Mutex<Vec<String>>>;

fn running_job(victim: u32) -> (Child, Lines, Lines, i32) {
    let mut c = launch(
        4,
        &[
            "dist-check",
            "--steps",
            "100000",
            "--step-ms",
            "20",
            "--heartbeat-timeout",
            "3",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let out = collect(c.stdout.take().unwrap());
    let err = collect(c.stderr.take().unwrap());
    let l = wait_line(
        &err,
        &format!("process {victim} is pid "),
        Duration::from_secs(30),
    );
    let pid: i32 = l.rsplit(' ').next().unwrap().parse().unwrap();
    wait_line(
        &out,
        &format!("process {victim}: step 20"),
        Duration::from_secs(120),
    );
    (c, out, err, pid)
}

#[test]
fn a_killed_process_ends_every_other_one_naming_it_and_its_last_step() {
    let (mut c, _out, err, pid) = running_job(2);
    let t0 = Instant::now();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let st = wait_exit(&mut c, Duration::from_secs(60));
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let err = err.lock().unwrap().join("\n");
    assert!(!st.success(), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}\n{err}");
    assert!(err.contains("process 2 was killed by signal 9"), "{err}");
    // Each of the other three says who failed and at which step.
    for p in [0, 1, 3] {
        let line = err
            .lines()
            .find(|l| {
                l.contains(&format!("process {p}")) && l.contains("process 2 failed (last step ")
            })
            .unwrap_or_else(|| panic!("process {p} did not name process 2:\n{err}"));
        assert!(line.contains("closed without a goodbye"), "{line}");
    }
}

#[test]
fn a_stopped_process_is_lost_after_the_heartbeat_timeout() {
    let (mut c, _out, err, pid) = running_job(1);
    let t0 = Instant::now();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // The others stop on their own; the launcher then kills the stopped one (--grace 20).
    wait_line(&err, "no heartbeat", Duration::from_secs(30));
    let took = t0.elapsed();
    let st = wait_exit(&mut c, Duration::from_secs(60));
    let err = err.lock().unwrap().join("\n");
    assert!(!st.success());
    assert!(took < Duration::from_secs(8), "{took:?}\n{err}");
    assert!(err.contains("process 1 failed (last step "), "{err}");
}
