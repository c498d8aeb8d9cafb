//! The coordination service process 0 runs: a KV store with blocking gets, barriers, and a
//! watchdog over every process's heartbeats and progress.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::Framed;

use crate::error::{Error, Failure, Result};
use crate::proto::{self, Frame, Request, Response};

/// When the service declares a process lost.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Every process must connect within this long of the service's start.
    pub bootstrap: Duration,
    /// A connected process that sends no heartbeat for this long is lost (e.g. stopped).
    pub heartbeat: Duration,
    /// A process whose reported step does not move for this long is lost (e.g. hung in a
    /// collective); counted from its connection, so it covers compilation too.
    pub step: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            bootstrap: Duration::from_secs(60),
            heartbeat: Duration::from_secs(30),
            step: Duration::from_secs(300),
        }
    }
}

#[derive(Default)]
struct Proc {
    connected_at: Option<Instant>,
    /// Set while its connection is open.
    connected: bool,
    goodbye: bool,
    last_beat: Option<Instant>,
    step: Option<u64>,
    last_progress: Option<Instant>,
}

struct State {
    num_processes: u32,
    kv: HashMap<String, Vec<u8>>,
    barriers: HashMap<String, BTreeSet<u32>>,
    procs: Vec<Proc>,
    failure: Option<Failure>,
}

impl State {
    fn fail(&mut self, process: u32, reason: String) {
        if self.failure.is_none() {
            let last_step = self.procs[process as usize].step;
            self.failure = Some(Failure {
                process,
                last_step,
                reason,
            });
        }
    }
}

struct Shared {
    state: Mutex<State>,
    /// Woken on every change a blocked call may wait for (a put, a barrier arrival, a failure).
    changed: Notify,
    timeouts: Timeouts,
    started: Instant,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running service; dropping it stops it.
pub struct Coordinator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Coordinator {
    /// Serves `num_processes` processes on `bind` (port 0 picks a free one).
    pub fn start(bind: SocketAddr, num_processes: u32, timeouts: Timeouts) -> Result<Coordinator> {
        if num_processes == 0 {
            return Err(Error::InvalidArgument(
                "a job needs at least one process".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rxla-coordinator")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind(bind)).map_err(|e| {
            Error::Bootstrap(format!(
                "process 0 cannot serve the coordination service on {bind}: {e} (is the port in use?)"
            ))
        })?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                num_processes,
                kv: HashMap::new(),
                barriers: HashMap::new(),
                procs: (0..num_processes).map(|_| Proc::default()).collect(),
                failure: None,
            }),
            changed: Notify::new(),
            timeouts,
            started: Instant::now(),
        });
        let s = shared.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        runtime.spawn(watchdog(shared.clone()));
        Ok(Coordinator {
            addr,
            shared,
            runtime: Some(runtime),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The first failure the service saw, if any.
    pub fn failure(&self) -> Option<Failure> {
        self.shared.lock().failure.clone()
    }

    /// Waits until every process said goodbye or `timeout` passes (so process 0 does not take
    /// the service away from processes still finishing).
    pub fn wait_for_goodbyes(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            {
                let st = self.shared.lock();
                if st.failure.is_some() || st.procs.iter().all(|p| p.goodbye) {
                    return st.failure.is_none();
                }
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Declares processes lost: not connected in time, silent, or stuck on a step.
async fn watchdog(shared: Arc<Shared>) {
    let t = shared.timeouts.clone();
    let tick = (t.heartbeat.min(t.bootstrap) / 10)
        .clamp(Duration::from_millis(10), Duration::from_millis(500));
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let mut st = shared.lock();
        if st.failure.is_some() {
            drop(st);
            shared.changed.notify_waiters();
            continue;
        }
        let mut lost = None;
        for (i, p) in st.procs.iter().enumerate() {
            if p.goodbye {
                continue;
            }
            let Some(connected_at) = p.connected_at else {
                if now - shared.started > t.bootstrap {
                    lost = Some((
                        i,
                        format!(
                            "it did not connect to the coordinator within the bootstrap \
                             timeout ({:?}): is it running, with the same coordinator address?",
                            t.bootstrap
                        ),
                    ));
                    break;
                }
                continue;
            };
            let beat = p.last_beat.unwrap_or(connected_at);
            if now - beat > t.heartbeat {
                lost = Some((
                    i,
                    format!(
                        "no heartbeat for {:.1} s (heartbeat timeout {:?}): it is stopped or \
                         its host is unreachable",
                        (now - beat).as_secs_f64(),
                        t.heartbeat
                    ),
                ));
                break;
            }
            let progress = p.last_progress.unwrap_or(connected_at);
            if now - progress > t.step {
                lost = Some((
                    i,
                    format!(
                        "no progress for {:.1} s (step timeout {:?}): it is hung in a step",
                        (now - progress).as_secs_f64(),
                        t.step
                    ),
                ));
                break;
            }
        }
        if let Some((i, why)) = lost {
            st.fail(i as u32, why);
            drop(st);
            shared.changed.notify_waiters();
        }
    }
}

/// One connection: requests are answered concurrently (a blocking get must not hold up a
/// heartbeat on the same connection).
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (mut sink, mut frames) =
        StreamExt::split::<bytes::Bytes>(Framed::new(stream, proto::codec()));
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame<Response>>();
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            let Ok(bytes) = proto::encode(&f) else { break };
            if sink.send(bytes::Bytes::from(bytes)).await.is_err() {
                break;
            }
        }
    });
    let mut me: Option<u32> = None;
    let mut goodbye = false;
    while let Some(Ok(bytes)) = frames.next().await {
        let Ok(frame) = proto::decode::<Request>(&bytes) else {
            break;
        };
        let id = frame.id;
        match frame.body {
            Request::Hello {
                process,
                num_processes,
            } => {
                let resp = hello(&shared, process, num_processes);
                if matches!(resp, Response::Ok) {
                    me = Some(process);
                }
                let _ = tx.send(Frame { id, body: resp });
            }
            _ if me.is_none() => {
                let _ = tx.send(Frame {
                    id,
                    body: Response::Refused("the first message must be Hello".into()),
                });
            }
            Request::Goodbye => {
                goodbye = true;
                let p = me.expect("hello first");
                shared.lock().procs[p as usize].goodbye = true;
                shared.changed.notify_waiters();
                let _ = tx.send(Frame {
                    id,
                    body: Response::Ok,
                });
            }
            body => {
                let shared = shared.clone();
                let tx = tx.clone();
                let p = me.expect("hello first");
                tokio::spawn(async move {
                    let resp = handle(&shared, p, body).await;
                    let _ = tx.send(Frame { id, body: resp });
                });
            }
        }
    }
    if let Some(p) = me {
        let mut st = shared.lock();
        st.procs[p as usize].connected = false;
        if !goodbye && !st.procs[p as usize].goodbye {
            st.fail(
                p,
                "its connection to the coordinator closed without a goodbye: it exited or was killed"
                    .into(),
            );
        }
        drop(st);
        shared.changed.notify_waiters();
    }
    drop(tx);
    let _ = writer.await;
}

fn hello(shared: &Shared, process: u32, num_processes: u32) -> Response {
    let mut st = shared.lock();
    if num_processes != st.num_processes {
        return Response::Refused(format!(
            "process {process} says the job has {num_processes} processes, the coordinator \
             serves {}: give every process the same --num-processes",
            st.num_processes
        ));
    }
    if process >= st.num_processes {
        return Response::Refused(format!(
            "process id {process} is out of range for {} processes (ids 0..{})",
            st.num_processes, st.num_processes
        ));
    }
    if let Some(f) = &st.failure {
        return Response::Failed(f.clone());
    }
    let p = &mut st.procs[process as usize];
    if p.connected_at.is_some() {
        return Response::Refused(format!(
            "process id {process} connected twice: give every process its own --process-id"
        ));
    }
    let now = Instant::now();
    p.connected_at = Some(now);
    p.connected = true;
    p.last_beat = Some(now);
    Response::Ok
}

async fn handle(shared: &Shared, me: u32, req: Request) -> Response {
    match req {
        Request::Put { key, value } => {
            shared.lock().kv.insert(key, value);
            shared.changed.notify_waiters();
            Response::Ok
        }
        Request::TryGet { key } => match shared.lock().kv.get(&key) {
            Some(v) => Response::Value(v.clone()),
            None => Response::NotFound,
        },
        Request::Get { key, timeout_ms } => {
            let what = format!("key `{key}`");
            wait(shared, timeout_ms, what, |st| st.kv.get(&key).cloned()).await
        }
        .map_or_else(|r| r, Response::Value),
        Request::Barrier { name, timeout_ms } => {
            {
                let mut st = shared.lock();
                st.barriers.entry(name.clone()).or_default().insert(me);
            }
            shared.changed.notify_waiters();
            let n = shared.lock().num_processes;
            let arrived = wait(shared, timeout_ms, String::new(), |st| {
                (st.barriers[&name].len() as u32 == n).then_some(())
            })
            .await;
            match arrived {
                Ok(()) => Response::Ok,
                Err(Response::Timeout(_)) => {
                    let st = shared.lock();
                    let missing: Vec<u32> =
                        (0..n).filter(|p| !st.barriers[&name].contains(p)).collect();
                    Response::Timeout(format!(
                        "barrier `{name}`: processes {missing:?} did not reach it"
                    ))
                }
                Err(r) => r,
            }
        }
        Request::Heartbeat { step } => {
            let mut st = shared.lock();
            let now = Instant::now();
            let p = &mut st.procs[me as usize];
            p.last_beat = Some(now);
            if step != p.step {
                p.step = step;
                p.last_progress = Some(now);
            }
            match &st.failure {
                Some(f) => Response::Failed(f.clone()),
                None => Response::Ok,
            }
        }
        Request::Hello { .. } | Request::Goodbye => Response::Refused("unexpected".into()),
    }
}

/// Waits until `ready` gives a value, a process fails, or `timeout_ms` passes.
async fn wait<T>(
    shared: &Shared,
    timeout_ms: u64,
    what: String,
    ready: impl Fn(&State) -> Option<T>,
) -> std::result::Result<T, Response> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        // Registered before the check, so a change between check and await is not missed.
        notified.as_mut().enable();
        {
            let st = shared.lock();
            if let Some(v) = ready(&st) {
                return Ok(v);
            }
            if let Some(f) = &st.failure {
                return Err(Response::Failed(f.clone()));
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(Response::Timeout(what));
        }
    }
}
