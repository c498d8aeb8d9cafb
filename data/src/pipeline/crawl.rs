//! `rxla data crawl`: a polite web crawler that writes WARC (request + response records).
//!
//! Politeness is kept per host (`scheme://host:port`): robots.txt first (RFC 9309 through the
//! `texting_robots` parser: 4xx = allow all, 5xx or unreachable after retries = disallow all),
//! a minimum gap between request starts and from each response's end to the next request
//! (`delay_ms`, raised to the robots.txt `Crawl-delay`),
//! at most `per_host_concurrency` requests at once. One scheduler task owns all state (no
//! locks); fetches run as tokio tasks and report back over a channel. Retries (429, 5xx,
//! timeouts, connection errors) go back through the scheduler, so they keep the host's delay,
//! with exponential backoff and `Retry-After`. Every URL is normalised and enters the seen-set
//! once, so no page is fetched twice; redirects are links, not followed inline.

pub mod frontier;
pub mod urls;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use url::Url;

use self::frontier::{Frontier, Item};
use super::warc::{NewRecord, RecordType, WarcVersion, WarcWriter};

/// Which links are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Hosts of the seeds, `www.` ignored.
    #[default]
    SameSite,
    /// Exactly the seeds' `scheme://host:port`.
    SameHost,
    /// `allow_domains` and their subdomains.
    Domains,
}

/// The `[crawl]` section of `configs/data-crawl.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrawlConfig {
    /// Start URLs (depth 0).
    pub seeds: Vec<String>,
    /// Sitemap (or sitemap index) URLs whose `<loc>`s are seeds too.
    pub sitemaps: Vec<String>,
    pub scope: Scope,
    /// For `scope = "domains"`.
    pub allow_domains: Vec<String>,
    pub user_agent: String,
    /// Links this many hops from a seed are still fetched; deeper ones are not.
    pub max_depth: u32,
    /// Pages fetched over the whole crawl (all sessions of a resumed crawl).
    pub max_pages: u64,
    /// Requests in flight over all hosts.
    pub concurrency: usize,
    pub per_host_concurrency: usize,
    /// Least time on one host between two request starts, and from a response's end to the
    /// next request (robots.txt may ask for more).
    pub delay_ms: u64,
    /// A robots.txt `Crawl-delay` above this is capped to it.
    pub max_crawl_delay_ms: u64,
    pub obey_robots: bool,
    /// Whole request, body included.
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Tries after the first on 429/5xx/timeouts/connection errors.
    pub retries: u32,
    /// First retry's wait; doubles each try, capped at `max_backoff_ms`.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Bodies are cut here (the WARC record says `WARC-Truncated: length`).
    pub max_body_bytes: u64,
    /// Media types kept (prefix match, e.g. `text/`); redirects are always kept. Empty = all.
    pub content_types: Vec<String>,
    /// Gzip each record (`.warc.gz`), as crawlers do.
    pub gzip: bool,
    /// Write the state file after this many pages (and at the end).
    pub state_every: u64,
}

impl Default for CrawlConfig {
    fn default() -> Self {
        CrawlConfig {
            seeds: Vec::new(),
            sitemaps: Vec::new(),
            scope: Scope::SameSite,
            allow_domains: Vec::new(),
            user_agent: "rxla-crawler/0.1".into(),
            max_depth: 3,
            max_pages: 1000,
            concurrency: 16,
            per_host_concurrency: 1,
            delay_ms: 1000,
            max_crawl_delay_ms: 30_000,
            obey_robots: true,
            timeout_ms: 30_000,
            connect_timeout_ms: 10_000,
            retries: 3,
            backoff_ms: 1000,
            max_backoff_ms: 60_000,
            max_body_bytes: 10 << 20,
            content_types: vec!["text/html".into(), "application/xhtml+xml".into()],
            gzip: true,
            state_every: 10,
        }
    }
}

impl CrawlConfig {
    /// Errors name the key and what to do.
    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() && self.sitemaps.is_empty() {
            bail!("crawl.seeds and crawl.sitemaps are both empty: give at least one start URL");
        }
        for s in self.seeds.iter().chain(&self.sitemaps) {
            if urls::parse(s, None).is_none() {
                bail!("crawl: `{s}` is not an http(s) URL");
            }
        }
        if self.scope == Scope::Domains && self.allow_domains.is_empty() {
            bail!("crawl.scope = \"domains\" needs crawl.allow_domains (e.g. [\"example.org\"])");
        }
        for (k, v) in [
            ("concurrency", self.concurrency),
            ("per_host_concurrency", self.per_host_concurrency),
        ] {
            if v == 0 {
                bail!("crawl.{k} must be at least 1");
            }
        }
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 {
            bail!("crawl.timeout_ms and crawl.connect_timeout_ms must be > 0");
        }
        if self.user_agent.trim().is_empty() {
            bail!("crawl.user_agent is empty: name your crawler (robots.txt rules match it)");
        }
        Ok(())
    }
}

/// What a crawl did; written as `crawl-report.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CrawlReport {
    /// Pages written this session.
    pub pages: u64,
    /// Pages written over all sessions.
    pub pages_total: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub body_bytes: u64,
    /// URLs not fetched or given up on, by reason.
    pub skipped: BTreeMap<String, u64>,
    pub retries: u64,
    pub robots_fetched: u64,
    /// Pages whose body hit `max_body_bytes`.
    pub truncated: u64,
    /// URLs still queued (page limit reached): a resumed crawl with a higher limit goes on.
    pub queue_left: usize,
    pub resumed: bool,
    pub warc: Vec<PathBuf>,
    pub elapsed_s: f64,
}

/// Crawls per `cfg` into `out` (WARC files, `crawl-state.json`, `crawl-report.json`).
/// With `resume`, continues from the state file when there is one.
pub fn run(cfg: &CrawlConfig, out: &Path, resume: bool) -> Result<CrawlReport> {
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(crawl(cfg.clone(), out.to_path_buf(), resume))
}

const STATE: &str = "crawl-state.json";

enum Robots {
    Unknown,
    Fetching,
    /// `None`: no robots.txt (4xx), everything allowed.
    Ready(Option<texting_robots::Robot>),
    /// 5xx or unreachable after retries: nothing allowed (RFC 9309 2.3.1.4).
    Unavailable,
}

struct Host {
    waiting: VecDeque<Item>,
    in_flight: usize,
    next: Instant,
    last_start: Instant,
    delay: Duration,
    robots: Robots,
    robots_attempts: u32,
}

enum Outcome {
    Done(Box<Page>),
    Retry {
        reason: &'static str,
        after: Option<Duration>,
    },
    Skip(&'static str),
}

struct Page {
    status: u16,
    request: Vec<u8>,
    response: Vec<u8>,
    body_start: usize,
    mime: Option<String>,
    location: Option<String>,
    truncated: bool,
    ip: Option<String>,
}

enum Event {
    Robots {
        host: String,
        result: std::result::Result<(u16, Vec<u8>), &'static str>,
    },
    Page {
        host: String,
        item: Item,
        outcome: Outcome,
    },
}

struct Crawler {
    cfg: Arc<CrawlConfig>,
    client: reqwest::Client,
    hosts: BTreeMap<String, Host>,
    frontier: Frontier,
    in_flight: HashMap<String, Item>,
    started_pages: u64,
    report: CrawlReport,
    sites: Vec<String>,
    seed_hosts: Vec<String>,
    warc: WarcWriter<BufWriter<std::fs::File>>,
    tx: mpsc::UnboundedSender<Event>,
    since_save: u64,
    state_path: PathBuf,
}

async fn crawl(cfg: CrawlConfig, out: PathBuf, resume: bool) -> Result<CrawlReport> {
    let t0 = std::time::Instant::now();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let state_path = out.join(STATE);
    let cfg = Arc::new(cfg);
    let client = reqwest::Client::builder()
        .user_agent(cfg.user_agent.clone())
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")?;
    let mut report = CrawlReport::default();
    let loaded = if resume {
        Frontier::load(&state_path)?
    } else {
        if state_path.exists() {
            bail!(
                "{} exists: a crawl was started in {}; pass --resume to go on with it, or \
                 choose another --out",
                state_path.display(),
                out.display()
            );
        }
        None
    };
    report.resumed = loaded.is_some();
    let mut frontier = loaded.unwrap_or_default();
    finish_open_warcs(&out)?;

    let warc_path = out.join(format!(
        "crawl-{:05}.warc{}",
        frontier.warc_files,
        if cfg.gzip { ".gz" } else { "" }
    ));
    frontier.warc_files += 1;
    let open_path = open_name(&warc_path);
    let file = std::fs::File::create(&open_path)
        .with_context(|| format!("creating {}", open_path.display()))?;
    let mut warc = WarcWriter::new(BufWriter::new(file), cfg.gzip, WarcVersion::V1_1);
    let name = warc_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    warc.write_warcinfo(
        &name,
        &[
            ("software", "rxla data crawl"),
            ("format", "WARC File Format 1.1"),
            ("http-header-user-agent", &cfg.user_agent),
            ("robots", if cfg.obey_robots { "obey" } else { "ignore" }),
        ],
    )?;
    warc.flush()?;

    let seeds: Vec<Url> = cfg
        .seeds
        .iter()
        .filter_map(|s| urls::parse(s, None))
        .collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut c = Crawler {
        sites: seeds.iter().map(urls::site_of).collect(),
        seed_hosts: seeds.iter().map(urls::host_key).collect(),
        cfg: cfg.clone(),
        client,
        hosts: BTreeMap::new(),
        frontier,
        in_flight: HashMap::new(),
        started_pages: 0,
        report,
        warc,
        tx,
        since_save: 0,
        state_path,
    };
    c.started_pages = c.frontier.fetched;
    // A resumed frontier's queue goes to the hosts; new seeds are added (the seen-set drops
    // the ones already known).
    let queued: Vec<Item> = c.frontier.queue.drain(..).collect();
    for it in queued {
        if let Some(u) = urls::parse(&it.url, None) {
            c.host_mut(&u).waiting.push_back(it);
        }
    }
    for u in seeds {
        c.enqueue(u, 0);
    }
    for sm in cfg.sitemaps.clone() {
        c.sitemap_seeds(&sm).await;
    }
    c.save()?;

    loop {
        c.dispatch();
        let idle = c.in_flight.is_empty() && !c.hosts.values().any(|h| h.in_flight > 0);
        if idle && !c.has_dispatchable() {
            break;
        }
        let wake = c.next_wake();
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => c.handle(ev)?,
                None => break,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }

    c.report.queue_left = c.hosts.values().map(|h| h.waiting.len()).sum();
    c.report.pages_total = c.frontier.fetched;
    c.warc.flush()?;
    let file = c
        .warc
        .into_inner()
        .into_inner()
        .map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&open_path, &warc_path)
        .with_context(|| format!("renaming {}", open_path.display()))?;
    c.report.warc.push(warc_path);
    c.report.elapsed_s = t0.elapsed().as_secs_f64();
    let mut left = Vec::new();
    for h in c.hosts.values() {
        left.extend(h.waiting.iter().cloned());
    }
    c.frontier.queue = left.into();
    c.frontier.save(&c.state_path, &[])?;
    let json = serde_json::to_vec_pretty(&c.report)?;
    files::write_atomic(&out.join("crawl-report.json"), &json)
        .map_err(|e| anyhow::anyhow!("writing crawl-report.json: {e}"))?;
    Ok(c.report)
}

fn bump<'a>(m: &'a mut BTreeMap<String, u64>, reason: &str) -> &'a mut u64 {
    m.entry(reason.to_string()).or_default()
}

fn open_name(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".open");
    PathBuf::from(s)
}

/// A crawl killed midway leaves `*.open` WARC files; their records up to the cut are good
/// (a reader skips a torn last record), so they are kept under their final names.
fn finish_open_warcs(out: &Path) -> Result<()> {
    for e in std::fs::read_dir(out)?.flatten() {
        let p = e.path();
        if let Some(s) = p.to_str().and_then(|s| s.strip_suffix(".open")) {
            std::fs::rename(&p, s).with_context(|| format!("renaming {}", p.display()))?;
        }
    }
    Ok(())
}

impl Crawler {
    fn host_mut(&mut self, u: &Url) -> &mut Host {
        let key = urls::host_key(u);
        let now = Instant::now();
        let delay = Duration::from_millis(self.cfg.delay_ms);
        let obey = self.cfg.obey_robots;
        self.hosts.entry(key).or_insert_with(|| Host {
            waiting: VecDeque::new(),
            in_flight: 0,
            next: now,
            last_start: now,
            delay,
            robots: if obey {
                Robots::Unknown
            } else {
                Robots::Ready(None)
            },
            robots_attempts: 0,
        })
    }

    fn skip(&mut self, reason: &str) {
        *bump(&mut self.report.skipped, reason) += 1;
    }

    fn in_scope(&self, u: &Url) -> bool {
        match self.cfg.scope {
            Scope::SameSite => self.sites.contains(&urls::site_of(u)),
            Scope::SameHost => self.seed_hosts.contains(&urls::host_key(u)),
            Scope::Domains => {
                let h = u.host_str().unwrap_or("");
                self.cfg.allow_domains.iter().any(|d| urls::in_domain(h, d))
            }
        }
    }

    /// Queues a URL found at `depth` unless out of scope, too deep or seen.
    fn enqueue(&mut self, u: Url, depth: u32) {
        if depth > self.cfg.max_depth {
            self.skip("depth");
            return;
        }
        if !self.in_scope(&u) {
            self.skip("offsite");
            return;
        }
        if !self.frontier.seen.insert(u.to_string()) {
            return;
        }
        self.host_mut(&u).waiting.push_back(Item {
            url: u.to_string(),
            depth,
            attempts: 0,
        });
    }

    async fn sitemap_seeds(&mut self, sm: &str) {
        let mut todo = vec![sm.to_string()];
        let mut fetched = 0;
        while let Some(s) = todo.pop() {
            fetched += 1;
            if fetched > 50 {
                break;
            }
            let Ok(resp) = self.client.get(&s).send().await else {
                self.skip("sitemap_unavailable");
                continue;
            };
            if !resp.status().is_success() {
                self.skip("sitemap_unavailable");
                continue;
            }
            let Ok(text) = resp.text().await else {
                self.skip("sitemap_unavailable");
                continue;
            };
            let index = text.contains("<sitemapindex");
            for loc in urls::sitemap_locs(&text) {
                if index {
                    todo.push(loc);
                } else if let Some(u) = urls::parse(&loc, None) {
                    self.enqueue(u, 0);
                }
            }
        }
    }

    fn has_dispatchable(&self) -> bool {
        self.started_pages < self.cfg.max_pages
            && self
                .hosts
                .values()
                .any(|h| !h.waiting.is_empty() && !matches!(h.robots, Robots::Unavailable))
    }

    fn next_wake(&self) -> Instant {
        self.hosts
            .values()
            .filter(|h| !h.waiting.is_empty() && h.in_flight < self.cfg.per_host_concurrency)
            .map(|h| h.next)
            .min()
            .filter(|_| self.started_pages < self.cfg.max_pages)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }

    fn busy(&self) -> usize {
        self.hosts.values().map(|h| h.in_flight).sum()
    }

    fn dispatch(&mut self) {
        let now = Instant::now();
        let keys: Vec<String> = self.hosts.keys().cloned().collect();
        for key in keys {
            loop {
                if self.busy() >= self.cfg.concurrency {
                    return;
                }
                let per_host = self.cfg.per_host_concurrency;
                let h = self.hosts.get_mut(&key).expect("host exists");
                if h.waiting.is_empty() {
                    break;
                }
                if matches!(h.robots, Robots::Unavailable) {
                    let n = h.waiting.len() as u64;
                    h.waiting.clear();
                    *bump(&mut self.report.skipped, "robots_unavailable") += n;
                    break;
                }
                if h.in_flight >= per_host || now < h.next {
                    break;
                }
                match &h.robots {
                    Robots::Unknown => {
                        h.robots = Robots::Fetching;
                        h.in_flight += 1;
                        h.last_start = now;
                        h.next = now + h.delay;
                        self.report.robots_fetched += 1;
                        let url = format!("{key}/robots.txt");
                        let (client, tx, host) =
                            (self.client.clone(), self.tx.clone(), key.clone());
                        tokio::spawn(async move {
                            let result = fetch_robots(&client, &url).await;
                            let _ = tx.send(Event::Robots { host, result });
                        });
                        break;
                    }
                    Robots::Fetching | Robots::Unavailable => break,
                    Robots::Ready(robot) => {
                        let allowed = robot
                            .as_ref()
                            .is_none_or(|r| h.waiting.front().is_some_and(|it| r.allowed(&it.url)));
                        if !allowed {
                            h.waiting.pop_front();
                            *bump(&mut self.report.skipped, "robots") += 1;
                            continue;
                        }
                        if self.started_pages >= self.cfg.max_pages {
                            return;
                        }
                        let item = h.waiting.pop_front().expect("not empty");
                        h.in_flight += 1;
                        h.last_start = now;
                        h.next = now + h.delay;
                        self.started_pages += 1;
                        self.in_flight.insert(item.url.clone(), item.clone());
                        let (client, tx, host, cfg) = (
                            self.client.clone(),
                            self.tx.clone(),
                            key.clone(),
                            self.cfg.clone(),
                        );
                        tokio::spawn(async move {
                            let outcome = fetch_page(&client, &item.url, &cfg).await;
                            let _ = tx.send(Event::Page {
                                host,
                                item,
                                outcome,
                            });
                        });
                    }
                }
            }
        }
    }

    fn backoff(&self, attempts: u32, after: Option<Duration>) -> Duration {
        let exp = self
            .cfg
            .backoff_ms
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
        let d = Duration::from_millis(exp.min(self.cfg.max_backoff_ms));
        let cap = Duration::from_millis(self.cfg.max_backoff_ms);
        d.max(after.unwrap_or_default().min(cap))
    }

    fn handle(&mut self, ev: Event) -> Result<()> {
        let now = Instant::now();
        match ev {
            Event::Robots { host, result } => {
                let retries = self.cfg.retries;
                let max_delay = Duration::from_millis(self.cfg.max_crawl_delay_ms);
                let ua = self.cfg.user_agent.clone();
                let backoff = {
                    let h = &self.hosts[&host];
                    self.backoff(h.robots_attempts + 1, None)
                };
                let h = self.hosts.get_mut(&host).expect("host exists");
                h.in_flight -= 1;
                // The delay also runs from each response's end (the server saw the request
                // before we saw the end, so the gap it sees is never shorter).
                let end = now;
                match result {
                    Ok((s, body)) if (200..300).contains(&s) => {
                        // An unparsable file is no rules (as a missing one).
                        let robot = texting_robots::Robot::new(&ua, &body).ok();
                        if let Some(d) = robot.as_ref().and_then(|r| r.delay) {
                            if d.is_finite() && d > 0.0 {
                                let d = Duration::from_secs_f32(d).min(max_delay);
                                h.delay = h.delay.max(d);
                                h.next = h.next.max(h.last_start + h.delay);
                            }
                        }
                        h.robots = Robots::Ready(robot);
                        h.next = h.next.max(end + h.delay);
                    }
                    Ok((s, _)) if (400..500).contains(&s) => h.robots = Robots::Ready(None),
                    _ => {
                        h.robots_attempts += 1;
                        if h.robots_attempts > retries {
                            h.robots = Robots::Unavailable;
                        } else {
                            h.robots = Robots::Unknown;
                            h.next = h.next.max(now + backoff);
                            self.report.retries += 1;
                        }
                    }
                }
            }
            Event::Page {
                host,
                mut item,
                outcome,
            } => {
                self.in_flight.remove(&item.url);
                let h = self.hosts.get_mut(&host).expect("host exists");
                h.in_flight -= 1;
                h.next = h.next.max(now + h.delay);
                match outcome {
                    Outcome::Retry { reason, after } => {
                        self.started_pages -= 1;
                        item.attempts += 1;
                        if item.attempts > self.cfg.retries {
                            self.skip(&format!("failed_{reason}"));
                        } else {
                            self.report.retries += 1;
                            let wait = self.backoff(item.attempts, after);
                            let h = self.hosts.get_mut(&host).expect("host exists");
                            h.next = h.next.max(now + wait);
                            h.waiting.push_front(item);
                        }
                    }
                    Outcome::Skip(reason) => {
                        self.started_pages -= 1;
                        self.skip(reason);
                    }
                    Outcome::Done(page) => self.page_done(item, *page)?,
                }
            }
        }
        Ok(())
    }

    fn page_done(&mut self, item: Item, page: Page) -> Result<()> {
        let url = item.url.clone();
        let mut extra = Vec::new();
        if let Some(ip) = &page.ip {
            extra.push(("WARC-IP-Address".to_string(), ip.clone()));
        }
        let req_id = self.warc.write(&NewRecord {
            kind: RecordType::Request,
            target_uri: Some(url.clone()),
            content_type: Some("application/http; msgtype=request".into()),
            extra: extra.clone(),
            block: page.request,
        })?;
        extra.push(("WARC-Concurrent-To".into(), req_id));
        if page.truncated {
            extra.push(("WARC-Truncated".into(), "length".into()));
        }
        self.warc.write(&NewRecord {
            kind: RecordType::Response,
            target_uri: Some(url.clone()),
            content_type: Some("application/http; msgtype=response".into()),
            extra,
            block: page.response.clone(),
        })?;
        self.warc.flush()?;
        self.frontier.fetched += 1;
        self.report.pages += 1;
        *self.report.by_status.entry(page.status).or_default() += 1;
        let body = &page.response[page.body_start..];
        self.report.body_bytes += body.len() as u64;
        self.report.truncated += u64::from(page.truncated);

        let base = urls::parse(&url, None);
        if let (Some(loc), Some(base)) = (&page.location, &base) {
            if let Some(u) = urls::parse(loc, Some(base)) {
                // A redirect target is the same page under another name: same depth.
                self.enqueue(u, item.depth);
            }
        }
        let html = page
            .mime
            .as_deref()
            .is_some_and(|m| m == "text/html" || m == "application/xhtml+xml");
        if html && (200..300).contains(&page.status) {
            if let Some(base) = base {
                let text = String::from_utf8_lossy(body);
                for u in urls::links(&text, &base) {
                    self.enqueue(u, item.depth + 1);
                }
            }
        }
        self.since_save += 1;
        if self.since_save >= self.cfg.state_every.max(1) {
            self.save()?;
        }
        Ok(())
    }

    /// Saves the frontier (every host's queue and what is in flight).
    fn save(&mut self) -> Result<()> {
        self.since_save = 0;
        let mut items: Vec<Item> = self.in_flight.values().cloned().collect();
        items.sort_by(|a, b| a.url.cmp(&b.url));
        let queued: VecDeque<Item> = self
            .hosts
            .values()
            .flat_map(|h| h.waiting.iter().cloned())
            .collect();
        let saved = std::mem::replace(&mut self.frontier.queue, queued);
        let r = self.frontier.save(&self.state_path, &items);
        self.frontier.queue = saved;
        r
    }
}

async fn fetch_robots(
    client: &reqwest::Client,
    url: &str,
) -> std::result::Result<(u16, Vec<u8>), &'static str> {
    let resp = client.get(url).send().await.map_err(|_| "unreachable")?;
    let status = resp.status().as_u16();
    // Google and RFC 9309 read at most 500 KiB of robots.txt.
    let body = read_capped(resp, 500 << 10)
        .await
        .map_err(|_| "unreachable")?
        .0;
    Ok((status, body))
}

async fn read_capped(
    mut resp: reqwest::Response,
    cap: u64,
) -> std::result::Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap.saturating_sub(body.len() as u64) as usize;
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

fn retry_reason(e: &reqwest::Error) -> Option<&'static str> {
    if e.is_timeout() {
        Some("timeout")
    } else if e.is_connect() {
        Some("connect")
    } else if e.is_request() || e.is_body() || e.is_decode() {
        Some("transfer")
    } else {
        None
    }
}

const ACCEPT: &str = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5";

async fn fetch_page(client: &reqwest::Client, url: &str, cfg: &CrawlConfig) -> Outcome {
    let resp = match client.get(url).header("Accept", ACCEPT).send().await {
        Ok(r) => r,
        Err(e) => {
            return match retry_reason(&e) {
                Some(reason) => Outcome::Retry {
                    reason,
                    after: None,
                },
                None => Outcome::Skip("bad_request"),
            }
        }
    };
    let status = resp.status();
    if status.as_u16() == 429 || status.is_server_error() {
        let after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Outcome::Retry {
            reason: if status.as_u16() == 429 { "429" } else { "5xx" },
            after,
        };
    }
    let mime = resp
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let location = resp
        .headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let redirect = status.is_redirection();
    let wanted = cfg.content_types.is_empty()
        || mime
            .as_deref()
            .is_some_and(|m| cfg.content_types.iter().any(|t| m.starts_with(t.as_str())));
    if !redirect && !wanted {
        return Outcome::Skip("content_type");
    }
    let ip = resp.remote_addr().map(|a| a.ip().to_string());
    let version = match resp.version() {
        reqwest::Version::HTTP_10 => "HTTP/1.0",
        reqwest::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    let mut head = format!(
        "{version} {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (k, v) in resp.headers() {
        // The body is stored de-chunked with its real length.
        if k == "transfer-encoding" || k == "content-length" {
            continue;
        }
        head.push_str(k.as_str());
        head.push_str(": ");
        head.push_str(&String::from_utf8_lossy(v.as_bytes()).replace(['\r', '\n'], " "));
        head.push_str("\r\n");
    }
    let (body, truncated) = match read_capped(resp, cfg.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return Outcome::Retry {
                reason: retry_reason(&e).unwrap_or("transfer"),
                after: None,
            }
        }
    };
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut response = head.into_bytes();
    let body_start = response.len();
    response.extend_from_slice(&body);
    let u = Url::parse(url).ok();
    let (target, host) = match &u {
        Some(u) => (
            match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_string(),
            },
            match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
                None => u.host_str().unwrap_or("").to_string(),
            },
        ),
        None => ("/".into(), String::new()),
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {}\r\nAccept: {ACCEPT}\r\n\r\n",
        cfg.user_agent
    )
    .into_bytes();
    Outcome::Done(Box::new(Page {
        status: status.as_u16(),
        request,
        response,
        body_start,
        mime,
        location,
        truncated,
        ip,
    }))
}
