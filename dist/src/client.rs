//! A process's connection to the coordination service: a blocking API (callable from any
//! thread, PJRT's callback threads included) over one multiplexed TCP connection, plus a
//! background heartbeat that reports this process's step and learns of failed peers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::error::{Error, Failure, Result};
use crate::proto::{self, Frame, Request, Response};

/// What a client does when it learns a process failed (from a heartbeat, or by losing the
/// coordinator). It runs on the heartbeat thread, so it fires even while the main thread is
/// blocked inside a step.
pub type OnFailure = Arc<dyn Fn(&Failure) + Send + Sync>;

#[derive(Clone)]
pub struct ClientOptions {
    /// How long to keep retrying the first connection (process 0 may start later).
    pub connect_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// With no heartbeat answered for this long, the coordinator counts as lost.
    pub heartbeat_timeout: Duration,
    pub on_failure: Option<OnFailure>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(60),
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(30),
            on_failure: None,
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .finish()
    }
}

const NO_STEP: u64 = u64::MAX;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Inner {
    process: u32,
    addr: String,
    tx: mpsc::UnboundedSender<Frame<Request>>,
    pending: Pending,
    next_id: AtomicU64,
    step: AtomicU64,
    failure: Mutex<Option<Failure>>,
    on_failure: Option<OnFailure>,
}

impl Inner {
    /// Records the first failure and runs the handler once.
    fn failed(&self, f: Failure) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return;
        }
        *slot = Some(f.clone());
        drop(slot);
        if let Some(h) = &self.on_failure {
            h(&f);
        }
    }
}

/// A connected process. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl Client {
    /// Connects process `process` of `num_processes` to the service at `addr` (`HOST:PORT`),
    /// retrying until `options.connect_timeout`.
    pub fn connect(
        addr: &str,
        process: u32,
        num_processes: u32,
        options: ClientOptions,
    ) -> Result<Client> {
        let runtime = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("rxla-coordination")
                .enable_all()
                .build()?,
        );
        let start = Instant::now();
        let stream = runtime.block_on(async {
            let mut last = String::new();
            while start.elapsed() < options.connect_timeout {
                match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => return Ok(s),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(_) => last = "connect timed out".into(),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(Error::Connect {
                addr: addr.to_string(),
                after: options.connect_timeout,
                detail: format!(
                    "{last} (is process 0 running, and is the address right and reachable?)"
                ),
            })
        })?;
        let _ = stream.set_nodelay(true);
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            process,
            addr: addr.to_string(),
            tx,
            pending: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(1),
            step: AtomicU64::new(NO_STEP),
            failure: Mutex::new(None),
            on_failure: options.on_failure.clone(),
        });
        runtime.spawn(connection(stream, rx, inner.clone()));
        let client = Client { inner, runtime };
        match client.call(
            Request::Hello {
                process,
                num_processes,
            },
            Duration::from_secs(30),
        )? {
            Response::Ok => {}
            r => return Err(client.unexpected(r, "hello")),
        }
        client
            .runtime
            .spawn(heartbeat(client.inner.clone(), options));
        Ok(client)
    }

    pub fn process(&self) -> u32 {
        self.inner.process
    }

    /// Element-wise sums of `values` over processes `0..num_processes` (each calls it once
    /// with the same fresh `name` and length), added in process order so every process gets
    /// the same bits. Each waits up to `timeout` for the others' values.
    pub fn all_sum(
        &self,
        name: &str,
        num_processes: u32,
        values: &[f64],
        timeout: Duration,
    ) -> Result<Vec<f64>> {
        let key = |p: u32| format!("rxla/sum/{name}/{p}");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.put(&key(self.inner.process), &bytes)?;
        let mut sums = vec![0f64; values.len()];
        for p in 0..num_processes {
            let b = self.get(&key(p), timeout)?;
            if b.len() != bytes.len() {
                return Err(Error::Protocol(format!(
                    "process {p} summed {} values under `{name}`, this one {}",
                    b.len() / 8,
                    values.len()
                )));
            }
            for (s, c) in sums.iter_mut().zip(b.chunks_exact(8)) {
                *s += f64::from_le_bytes(c.try_into().expect("8 bytes"));
            }
        }
        Ok(sums)
    }

    /// Tells the service (with the next heartbeat) the step this process reached.
    pub fn set_step(&self, step: u64) {
        self.inner.step.store(step, Ordering::Relaxed);
    }

    /// The failure this client learned of, if any.
    pub fn failure(&self) -> Option<Failure> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let r = self.call(
            Request::Put {
                key: key.into(),
                value: value.to_vec(),
            },
            Duration::from_secs(60),
        )?;
        match r {
            Response::Ok => Ok(()),
            r => Err(self.unexpected(r, "put")),
        }
    }

    /// The value of `key`, waiting up to `timeout` for some process to put it.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let r = self.call(
            Request::Get {
                key: key.into(),
                timeout_ms: timeout.as_millis() as u64,
            },
            timeout + Duration::from_secs(30),
        )?;
        match r {
            Response::Value(v) => Ok(v),
            Response::Timeout(what) => Err(Error::Timeout {
                what,
                after: timeout,
            }),
            r => Err(self.unexpected(r, "get")),
        }
    }

    /// The value of `key` if some process put it, at once.
    pub fn try_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self.call(Request::TryGet { key: key.into() }, Duration::from_secs(60))? {
            Response::Value(v) => Ok(Some(v)),
            Response::NotFound => Ok(None),
            r => Err(self.unexpected(r, "try_get")),
        }
    }

    /// Waits until every process reached barrier `name` (names are single-use per job).
    pub fn barrier(&self, name: &str, timeout: Duration) -> Result<()> {
        let r = self.call(
            Request::Barrier {
                name: name.into(),
                timeout_ms: timeout.as_millis() as u64,
            },
            timeout + Duration::from_secs(30),
        )?;
        match r {
            Response::Ok => Ok(()),
            Response::Timeout(what) => Err(Error::Timeout {
                what,
                after: timeout,
            }),
            r => Err(self.unexpected(r, "barrier")),
        }
    }

    /// Ends this process's part normally: its disconnect is then no failure.
    pub fn goodbye(&self) -> Result<()> {
        match self.call(Request::Goodbye, Duration::from_secs(30))? {
            Response::Ok => Ok(()),
            r => Err(self.unexpected(r, "goodbye")),
        }
    }

    fn unexpected(&self, r: Response, what: &str) -> Error {
        match r {
            Response::Failed(f) => {
                self.inner.failed(f.clone());
                Error::ProcessFailed(f)
            }
            Response::Refused(m) => Error::Refused(m),
            r => Error::Protocol(format!("unexpected answer to {what}: {r:?}")),
        }
    }

    fn call(&self, body: Request, timeout: Duration) -> Result<Response> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        if self.inner.tx.send(Frame { id, body }).is_err() {
            return Err(self.lost());
        }
        let got = self
            .runtime
            .block_on(async { tokio::time::timeout(timeout, rx).await });
        match got {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(self.lost()),
            Err(_) => {
                self.inner
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(Error::CoordinatorLost(format!(
                    "no answer from {} within {timeout:?}",
                    self.inner.addr
                )))
            }
        }
    }

    fn lost(&self) -> Error {
        Error::CoordinatorLost(format!("the connection to {} closed", self.inner.addr))
    }
}

/// Writes requests and routes responses to their callers; losing the connection before a
/// goodbye is a failure of process 0.
async fn connection(
    stream: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Frame<Request>>,
    inner: Arc<Inner>,
) {
    let (mut sink, mut frames) =
        StreamExt::split::<bytes::Bytes>(Framed::new(stream, proto::codec()));
    let said_goodbye = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bye = said_goodbye.clone();
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if matches!(f.body, Request::Goodbye) {
                bye.store(true, Ordering::SeqCst);
            }
            let Ok(bytes) = proto::encode(&f) else { break };
            if sink.send(bytes::Bytes::from(bytes)).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(bytes)) = frames.next().await {
        let Ok(frame) = proto::decode::<Response>(&bytes) else {
            break;
        };
        let tx = inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&frame.id);
        if let Some(tx) = tx {
            let _ = tx.send(frame.body);
        }
    }
    writer.abort();
    // Callers still waiting see their channel closed.
    inner
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    if !said_goodbye.load(Ordering::SeqCst) {
        inner.failed(Failure {
            process: 0,
            last_step: None,
            reason: format!(
                "the connection to the coordinator at {} closed: process 0 exited or was killed",
                inner.addr
            ),
        });
    }
}

async fn heartbeat(inner: Arc<Inner>, options: ClientOptions) {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(options.heartbeat_interval).await;
        if inner
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        let step = inner.step.load(Ordering::Relaxed);
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let body = Request::Heartbeat {
            step: (step != NO_STEP).then_some(step),
        };
        if inner.tx.send(Frame { id, body }).is_err() {
            return;
        }
        match tokio::time::timeout(options.heartbeat_timeout, rx).await {
            Ok(Ok(Response::Ok)) => last_ok = Instant::now(),
            Ok(Ok(Response::Failed(f))) => {
                inner.failed(f);
                return;
            }
            Ok(Ok(_)) | Ok(Err(_)) => return, // closed: `connection` reports it
            Err(_) => {}
        }
        if last_ok.elapsed() > options.heartbeat_timeout {
            inner.failed(Failure {
                process: 0,
                last_step: None,
                reason: format!(
                    "the coordinator at {} answered no heartbeat for {:?}",
                    inner.addr, options.heartbeat_timeout
                ),
            });
            return;
        }
    }
}
