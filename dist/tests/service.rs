//! The coordination service on loopback: KV store, barriers, concurrent clients, and failure
//! detection (a process that dies, one that goes silent, one that never comes).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dist::{Client, ClientOptions, Coordinator, Error, Failure, Timeouts};

fn service(n: u32, t: Timeouts) -> (Coordinator, String) {
    let c = Coordinator::start(SocketAddr::from(([127, 0, 0, 1], 0)), n, t).unwrap();
    let addr = c.local_addr().to_string();
    (c, addr)
}

fn quick() -> Timeouts {
    Timeouts {
        bootstrap: Duration::from_secs(20),
        heartbeat: Duration::from_millis(1500),
        step: Duration::from_secs(60),
    }
}

fn opts() -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_secs(5),
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_secs(5),
        on_failure: None,
    }
}

/// A client whose failure handler records what it was told.
type Seen = Arc<Mutex<Option<(Failure, Instant)>>>;

fn watched(addr: &str, p: u32, n: u32) -> (Client, Seen) {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let o = ClientOptions {
        on_failure: Some(Arc::new(move |f: &Failure| {
            *s.lock().unwrap() = Some((f.clone(), Instant::now()))
        })),
        ..opts()
    };
    (Client::connect(addr, p, n, o).unwrap(), seen)
}

fn wait_for(seen: &Mutex<Option<(Failure, Instant)>>, within: Duration) -> (Failure, Instant) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(x) = seen.lock().unwrap().clone() {
            return x;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no failure reported within {within:?}");
}

#[test]
fn kv_put_get_try_get_and_get_timeout() {
    let (_c, addr) = service(2, quick());
    let a = Client::connect(&addr, 0, 2, opts()).unwrap();
    let b = Client::connect(&addr, 1, 2, opts()).unwrap();
    assert_eq!(
        a.try_get("cuda:topology").unwrap(),
        None,
        "NOT_FOUND at once"
    );
    // A blocking get is answered by a later put from another process.
    let b2 = b.clone();
    let waiter = std::thread::spawn(move || b2.get("cuda:topology", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(200));
    let value: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    a.put("cuda:topology", &value).unwrap();
    assert_eq!(waiter.join().unwrap().unwrap(), value);
    assert_eq!(a.try_get("cuda:topology").unwrap(), Some(value));
    // Overwrite, empty values.
    a.put("k", b"").unwrap();
    assert_eq!(a.get("k", Duration::from_secs(1)).unwrap(), b"");
    // A get of a key nobody puts times out after its timeout, naming the key.
    let t0 = Instant::now();
    let e = a.get("never", Duration::from_millis(300)).unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("key `never`"), "{e}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn concurrent_clients_and_threads() {
    let n = 4;
    let (_c, addr) = service(n, quick());
    let clients: Vec<Client> = (0..n)
        .map(|p| Client::connect(&addr, p, n, opts()).unwrap())
        .collect();
    // 4 processes x 8 threads: each puts its keys and reads every other thread's.
    let mut handles = Vec::new();
    for c in &clients {
        for t in 0..8u32 {
            let c = c.clone();
            handles.push(std::thread::spawn(move || {
                let me = c.process();
                for k in 0..10u32 {
                    c.put(
                        &format!("{me}/{t}/{k}"),
                        &(me * 1000 + t * 10 + k).to_le_bytes(),
                    )
                    .unwrap();
                }
                for p in 0..n {
                    for k in 0..10u32 {
                        let v = c
                            .get(&format!("{p}/{t}/{k}"), Duration::from_secs(20))
                            .unwrap();
                        assert_eq!(v, (p * 1000 + t * 10 + k).to_le_bytes());
                    }
                }
            }));
        }
    }
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn barriers_release_together_or_name_who_is_missing() {
    let n = 3;
    let (_c, addr) = service(n, quick());
    let clients: Vec<Client> = (0..n)
        .map(|p| Client::connect(&addr, p, n, opts()).unwrap())
        .collect();
    let released = Arc::new(Mutex::new(Vec::new()));
    let hs: Vec<_> = clients
        .iter()
        .cloned()
        .map(|c| {
            let r = released.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(150 * c.process() as u64));
                c.barrier("b1", Duration::from_secs(10)).unwrap();
                r.lock().unwrap().push(Instant::now());
            })
        })
        .collect();
    let t0 = Instant::now();
    for h in hs {
        h.join().unwrap();
    }
    // Nobody left before the last (process 2, ~300 ms) arrived.
    for t in released.lock().unwrap().iter() {
        assert!(*t - t0 >= Duration::from_millis(250));
    }
    // Process 1 never comes to barrier b2: the others time out, told who is missing.
    let e = clients[0]
        .barrier("b2", Duration::from_millis(300))
        .unwrap_err()
        .to_string();
    assert!(e.contains("barrier `b2`") && e.contains("[1, 2]"), "{e}");
}

#[test]
fn hello_is_checked() {
    let (_c, addr) = service(2, quick());
    let e = Client::connect(&addr, 0, 3, opts())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("says the job has 3 processes") && e.contains("serves 2"),
        "{e}"
    );
    let e = Client::connect(&addr, 5, 2, opts())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("process id 5 is out of range"), "{e}");
    let _a = Client::connect(&addr, 1, 2, opts()).unwrap();
    let e = Client::connect(&addr, 1, 2, opts())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("connected twice"), "{e}");
    // Nothing listening: a clear error after the connect timeout.
    let o = ClientOptions {
        connect_timeout: Duration::from_millis(300),
        ..opts()
    };
    let e = Client::connect("127.0.0.1:1", 0, 1, o)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("cannot reach the coordinator at 127.0.0.1:1"),
        "{e}"
    );
}

#[test]
fn a_dead_process_is_reported_to_every_other_with_its_last_step() {
    let n = 4;
    let (c, addr) = service(n, quick());
    let mut watchers = Vec::new();
    let mut doomed = None;
    for p in 0..n {
        let (cl, seen) = watched(&addr, p, n);
        cl.set_step(7);
        if p == 2 {
            doomed = Some(cl);
        } else {
            watchers.push((cl, seen));
        }
    }
    std::thread::sleep(Duration::from_millis(400)); // a heartbeat carries step 7
                                                    // A blocked get on process 1 must not outlive the failure.
    let blocked = watchers[1].0.clone();
    let getter = std::thread::spawn(move || blocked.get("never", Duration::from_secs(60)));
    let t0 = Instant::now();
    drop(doomed); // its connection closes without a goodbye, as when it is killed
    for (_, seen) in &watchers {
        let (f, at) = wait_for(seen, Duration::from_secs(5));
        assert_eq!(f.process, 2);
        assert_eq!(f.last_step, Some(7));
        assert!(
            f.reason.contains("closed without a goodbye"),
            "{}",
            f.reason
        );
        assert!(at - t0 < Duration::from_secs(2), "{:?}", at - t0);
    }
    let e = getter.join().unwrap().unwrap_err().to_string();
    assert!(e.contains("process 2 failed (last step 7)"), "{e}");
    assert_eq!(c.failure().unwrap().process, 2);
}

#[test]
fn a_silent_process_is_declared_lost_after_the_heartbeat_timeout() {
    let n = 2;
    let (_c, addr) = service(n, quick());
    let (_a, seen) = watched(&addr, 0, n);
    // Process 1 connects, then never beats (as when it is SIGSTOPped).
    let silent = ClientOptions {
        heartbeat_interval: Duration::from_secs(3600),
        ..opts()
    };
    let _b = Client::connect(&addr, 1, n, silent).unwrap();
    let t0 = Instant::now();
    let (f, at) = wait_for(&seen, Duration::from_secs(10));
    assert_eq!((f.process, f.last_step), (1, None));
    assert!(f.reason.contains("no heartbeat"), "{}", f.reason);
    let took = at - t0;
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn a_process_stuck_on_a_step_and_one_that_never_connects() {
    let t = Timeouts {
        step: Duration::from_millis(800),
        ..quick()
    };
    let (_c, addr) = service(2, t);
    let (a, seen) = watched(&addr, 0, 2);
    let (b, _) = watched(&addr, 1, 2);
    // Process 0 moves on, process 1 stays on step 3.
    b.set_step(3);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) && seen.lock().unwrap().is_none() {
        a.set_step(t0.elapsed().as_millis() as u64);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (f, _) = wait_for(&seen, Duration::from_secs(1));
    assert_eq!((f.process, f.last_step), (1, Some(3)));
    assert!(f.reason.contains("no progress"), "{}", f.reason);

    let t = Timeouts {
        bootstrap: Duration::from_millis(500),
        ..quick()
    };
    let (_c, addr) = service(3, t);
    let (_a, seen) = watched(&addr, 0, 3);
    let (_b, _) = watched(&addr, 1, 3);
    let (f, _) = wait_for(&seen, Duration::from_secs(5));
    assert_eq!((f.process, f.last_step), (2, None));
    assert!(f.reason.contains("did not connect"), "{}", f.reason);
}

#[test]
fn losing_the_coordinator_is_a_failure_of_process_0() {
    let (c, addr) = service(2, quick());
    let (_b, seen) = watched(&addr, 1, 2);
    drop(c);
    let (f, _) = wait_for(&seen, Duration::from_secs(5));
    assert_eq!(f.process, 0);
    assert!(f.reason.contains("coordinator"), "{}", f.reason);
}

#[test]
fn sessions_bootstrap_and_finish() {
    // A free port for process 0 to serve on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let coordinator = format!("127.0.0.1:{port}");
    let hs: Vec<_> = (0..3u32)
        .map(|p| {
            let coordinator = coordinator.clone();
            std::thread::spawn(move || {
                // Processes start in any order; process 0 last.
                std::thread::sleep(Duration::from_millis(100 * (2 - p) as u64));
                let b = dist::Bootstrap {
                    coordinator,
                    num_processes: 3,
                    process_id: p,
                    source: "test",
                };
                let s = dist::Session::start(b, dist::SessionOptions::default()).unwrap();
                s.client().put(&format!("rank/{p}"), &[p as u8]).unwrap();
                let all: Vec<u8> = (0..3)
                    .map(|q| {
                        s.client()
                            .get(&format!("rank/{q}"), Duration::from_secs(10))
                            .unwrap()[0]
                    })
                    .collect();
                s.finish().unwrap();
                all
            })
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), vec![0, 1, 2]);
    }
}

#[test]
fn all_sum_adds_every_process_values_in_the_same_order() {
    let (_c, addr) = service(4, quick());
    let hs: Vec<_> = (0..4u32)
        .map(|p| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let c = Client::connect(&addr, p, 4, opts()).unwrap();
                let mine = [p as f64, 0.1 * (p + 1) as f64];
                let a = c
                    .all_sum("eval/1", 4, &mine, Duration::from_secs(10))
                    .unwrap();
                // A second sum under another name is independent of the first.
                let b = c
                    .all_sum("eval/2", 4, &[1.0], Duration::from_secs(10))
                    .unwrap();
                let wrong = if p == 3 {
                    Some(c.all_sum("eval/3", 4, &[1.0, 2.0], Duration::from_secs(10)))
                } else {
                    c.all_sum("eval/3", 4, &[1.0], Duration::from_secs(10)).ok();
                    None
                };
                (a, b, wrong)
            })
        })
        .collect();
    let outs: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let want = (1..=4).fold(0f64, |s, k| s + 0.1 * k as f64);
    for (a, b, wrong) in &outs {
        assert_eq!(a[0], 6.0);
        assert_eq!(a[1].to_bits(), want.to_bits(), "same bits on every process");
        assert_eq!(b, &vec![4.0]);
        if let Some(w) = wrong {
            let e = w.as_ref().unwrap_err().to_string();
            assert!(e.contains("process 0 summed 1 values"), "{e}");
        }
    }
}
