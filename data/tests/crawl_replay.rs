//! Crawl acceptance test (loopback only): two local HTTP servers replay the HTML pages of
//! pywb's `iana.warc.gz` and Warcat's `at.warc` (links rewritten to the local hosts), each with
//! a robots.txt that allows only the archived pages (all but one) and asks for a 0.2 s
//! crawl-delay; faults are injected (500s, a 429, a timeout, a slow body). The crawler must
//! fetch every allowed reachable page exactly once (retries aside), nothing disallowed, keep
//! the delay between requests to one host (measured at the server), and write a WARC that holds
//! the bodies the servers sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::Response;
use data::pipeline::crawl::{self, CrawlConfig, Scope};
use data::pipeline::warc::{read_file, sample_dir, RecordType};

const DELAY: Duration = Duration::from_millis(200);

#[derive(Clone)]
struct Page {
    status: u16,
    content_type: String,
    location: Option<String>,
    body: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    Status(u16),
    /// Answer after the client's timeout.
    Hang,
    /// Send the body in pieces over ~0.5 s (inside the timeout).
    Slow,
}

struct Site {
    pages: HashMap<String, Page>,
    robots: String,
    faults: Mutex<HashMap<String, Vec<Fault>>>,
    /// (arrival, path+query, answered with a fault)
    log: Mutex<Vec<(Instant, String, bool)>>,
    sent: Mutex<HashMap<String, Vec<u8>>>,
}

/// The archive's HTML responses by path+query, with `http(s)://<archived host>` links made
/// root-relative so that they point at the replay server.
fn archived(file: &std::path::Path, host: &str) -> HashMap<String, Page> {
    let (recs, stats) = read_file(file).unwrap();
    assert_eq!(stats.skipped_total(), 0);
    let mut pages = HashMap::new();
    for r in recs
        .iter()
        .filter(|r| r.record_type() == RecordType::Response)
    {
        let http = r.http().unwrap();
        let Some(mime) = http.mime() else { continue };
        if mime != "text/html" {
            continue;
        }
        let u = url::Url::parse(r.target_uri().unwrap()).unwrap();
        let key = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        };
        let local = |s: &str| {
            s.replace(&format!("https://{host}"), "")
                .replace(&format!("http://{host}"), "")
        };
        let body = local(&String::from_utf8_lossy(&http.body)).into_bytes();
        pages.insert(
            key,
            Page {
                status: http.status.unwrap(),
                content_type: http.header_str("Content-Type").unwrap(),
                location: http.header_str("Location").map(|l| local(&l)),
                body,
            },
        );
    }
    pages
}

fn robots_for(pages: &HashMap<String, Page>, disallowed: &str) -> String {
    let mut s = String::from("User-agent: *\nCrawl-delay: 0.2\n");
    let mut keys: Vec<&String> = pages.keys().collect();
    keys.sort();
    for k in keys {
        if k != disallowed {
            s.push_str(&format!("Allow: {k}$\n"));
        }
    }
    s.push_str("Disallow: /\n");
    s
}

async fn serve(State(site): State<Arc<Site>>, uri: Uri) -> Response {
    let key = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let fault = site
        .faults
        .lock()
        .unwrap()
        .get_mut(&key)
        .and_then(|v| (!v.is_empty()).then(|| v.remove(0)));
    let failed = matches!(fault, Some(Fault::Status(_) | Fault::Hang));
    site.log
        .lock()
        .unwrap()
        .push((Instant::now(), key.clone(), failed));
    if key == "/robots.txt" {
        return Response::new(Body::from(site.robots.clone()));
    }
    match fault {
        Some(Fault::Status(s)) => {
            let mut r = Response::new(Body::from("injected"));
            *r.status_mut() = StatusCode::from_u16(s).unwrap();
            if s == 429 {
                r.headers_mut()
                    .insert("Retry-After", HeaderValue::from_static("0"));
            }
            return r;
        }
        Some(Fault::Hang) => tokio::time::sleep(Duration::from_millis(1500)).await,
        _ => {}
    }
    let Some(page) = site.pages.get(&key).cloned() else {
        let mut r = Response::new(Body::from("not here"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    };
    site.sent.lock().unwrap().insert(key, page.body.clone());
    let body = if fault == Some(Fault::Slow) {
        let chunks: Vec<Vec<u8>> = page
            .body
            .chunks(page.body.len() / 5 + 1)
            .map(<[u8]>::to_vec)
            .collect();
        let stream = futures_util::stream::iter(chunks).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::io::Error>(c)
        });
        Body::from_stream(stream)
    } else {
        Body::from(page.body)
    };
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(page.status).unwrap();
    r.headers_mut().insert(
        "Content-Type",
        HeaderValue::from_str(&page.content_type).unwrap(),
    );
    if let Some(l) = page.location {
        r.headers_mut()
            .insert("Location", HeaderValue::from_str(&l).unwrap());
    }
    r
}

use futures_util::StreamExt;

/// Pages reachable from `/` over `<a href>` links and redirects through allowed pages: what
/// the crawler must fetch (found here with a plain scan, not the crawler's HTML parser).
fn reachable(pages: &HashMap<String, Page>, allowed: impl Fn(&str) -> bool) -> BTreeSet<String> {
    let base = url::Url::parse("http://h.test/").unwrap();
    let mut seen = BTreeSet::new();
    let mut todo = vec!["/".to_string()];
    while let Some(k) = todo.pop() {
        // robots.txt allows exactly the archived pages (`allowed` takes one away).
        let Some(p) = pages.get(&k) else { continue };
        if !allowed(&k) || !seen.insert(k.clone()) {
            continue;
        }
        let mut next: Vec<String> = p.location.iter().cloned().collect();
        let text = String::from_utf8_lossy(&p.body);
        for part in text.split("<a ").skip(1) {
            let tag = &part[..part.find('>').unwrap_or(part.len())];
            if tag.contains("nofollow") {
                continue;
            }
            if let Some(i) = tag.find("href=\"") {
                let v = &tag[i + 6..];
                next.push(v[..v.find('"').unwrap_or(v.len())].to_string());
            }
        }
        for n in next {
            let Ok(u) = base.join(&n.replace("&amp;", "&")) else {
                continue;
            };
            if u.host_str() == Some("h.test") && u.scheme() == "http" {
                let key = match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_string(),
                };
                todo.push(key);
            }
        }
    }
    seen
}

#[test]
fn crawl_replayed_archives() {
    let iana = archived(
        &sample_dir("pywb").unwrap().join("iana.warc.gz"),
        "www.iana.org",
    );
    let at = archived(
        &sample_dir("warcat").unwrap().join("at.warc"),
        "www.archiveteam.org",
    );
    assert_eq!(
        (iana.len(), at.len()),
        (19, 2),
        "HTML pages by path (http and https /dnssec are one)"
    );
    let disallowed = "/time-zones";
    let mk = |pages: HashMap<String, Page>, faults: Vec<(&str, Vec<Fault>)>, disallow: &str| {
        Arc::new(Site {
            robots: robots_for(&pages, disallow),
            pages,
            faults: Mutex::new(
                faults
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            ),
            log: Mutex::new(Vec::new()),
            sent: Mutex::new(HashMap::new()),
        })
    };
    let a = mk(
        iana,
        vec![
            ("/numbers", vec![Fault::Status(500), Fault::Status(503)]),
            ("/protocols", vec![Fault::Status(429)]),
            ("/about", vec![Fault::Hang]),
            ("/domains", vec![Fault::Slow]),
        ],
        disallowed,
    );
    let b = mk(
        at,
        vec![("/index.php?title=Main_Page", vec![Fault::Status(502)])],
        "",
    );

    // The servers run on their own runtime thread; the crawler makes its own runtime.
    let (tx, rx) = std::sync::mpsc::channel();
    let (sa, sb) = (a.clone(), b.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut ports = Vec::new();
            for site in [sa, sb] {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ports.push(l.local_addr().unwrap().port());
                let app = axum::Router::new().fallback(serve).with_state(site);
                tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
            }
            tx.send(ports).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let ports = rx.recv().unwrap();
    let out = std::env::temp_dir().join(format!("rxla-crawl-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cfg = CrawlConfig {
        seeds: vec![
            format!("http://127.0.0.1:{}/", ports[0]),
            format!("http://127.0.0.1:{}/", ports[1]),
        ],
        scope: Scope::SameSite,
        max_depth: 20,
        max_pages: 1000,
        concurrency: 8,
        per_host_concurrency: 1,
        // Only robots.txt's Crawl-delay (0.2 s) spaces the requests.
        delay_ms: 0,
        timeout_ms: 1000,
        connect_timeout_ms: 1000,
        retries: 3,
        backoff_ms: 50,
        max_backoff_ms: 400,
        gzip: true,
        ..CrawlConfig::default()
    };
    let t0 = Instant::now();
    // Two sessions: stop after 8 pages, then resume from the state file with no page limit.
    // The resumed crawl cannot know when the last request was, so wait one delay between.
    let first = crawl::run(
        &CrawlConfig {
            max_pages: 8,
            ..cfg.clone()
        },
        &out,
        false,
    )
    .unwrap();
    assert_eq!(first.pages, 8);
    assert!(first.queue_left > 0, "{first:?}");
    let again = crawl::run(&cfg, &out, false).unwrap_err().to_string();
    assert!(again.contains("--resume"), "{again}");
    std::thread::sleep(DELAY);
    let second = crawl::run(&cfg, &out, true).unwrap();
    assert!(second.resumed && second.queue_left == 0);
    assert_eq!(second.pages_total, first.pages + second.pages);
    let took = t0.elapsed();
    let report = crawl::CrawlReport {
        pages: first.pages + second.pages,
        retries: first.retries + second.retries,
        warc: [first.warc.clone(), second.warc.clone()].concat(),
        skipped: second.skipped.clone(),
        ..second.clone()
    };

    for (site, port, no) in [(&a, ports[0], disallowed), (&b, ports[1], "")] {
        let log = site.log.lock().unwrap().clone();
        // Politeness: consecutive requests to one host at least the crawl-delay apart. The
        // crawler counts the delay from each response's end, which comes after the server
        // logged the request, so no scheduling jitter can make a logged gap shorter.
        for w in log.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!(
                gap >= DELAY,
                "port {port}: {} then {} only {gap:?} apart",
                w[0].1,
                w[1].1
            );
        }
        let want = reachable(&site.pages, |k| k != no);
        let mut ok_count: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, k, failed) in &log {
            if !failed && k != "/robots.txt" {
                *ok_count.entry(k).or_default() += 1;
            }
        }
        let got: BTreeSet<String> = ok_count.keys().map(|k| k.to_string()).collect();
        assert_eq!(got, want, "port {port}: fetched vs reachable-and-allowed");
        assert!(
            ok_count.values().all(|&n| n == 1),
            "port {port}: a page twice: {ok_count:?}"
        );
        for (_, k, _) in &log {
            assert!(
                k == "/robots.txt" || site.pages.contains_key(k),
                "port {port}: fetched {k}, which robots.txt disallows"
            );
        }
    }
    assert!(!a
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|(_, k, _)| k == disallowed));
    // Every injected fault was retried through.
    assert!(a.faults.lock().unwrap().values().all(Vec::is_empty));
    assert_eq!(report.retries, 5, "{report:?}");

    // The WARC holds, for every page served, a request and a response with the sent body.
    assert_eq!(report.warc.len(), 2);
    let mut recs = Vec::new();
    for w in &report.warc {
        let (r, stats) = read_file(w).unwrap();
        assert_eq!(stats.skipped_total(), 0);
        recs.extend(r);
    }
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    let mut requests = 0;
    for r in &recs {
        match r.record_type() {
            RecordType::Response => {
                let u = url::Url::parse(r.target_uri().unwrap()).unwrap();
                let key = match u.query() {
                    Some(q) => format!("{}:{}?{q}", u.port().unwrap(), u.path()),
                    None => format!("{}:{}", u.port().unwrap(), u.path()),
                };
                let http = r.http().unwrap();
                assert!(bodies.insert(key, http.body).is_none(), "a response twice");
            }
            RecordType::Request => requests += 1,
            _ => {}
        }
    }
    let mut sent = 0;
    for (site, port) in [(&a, ports[0]), (&b, ports[1])] {
        for (k, body) in site.sent.lock().unwrap().iter() {
            sent += 1;
            assert_eq!(bodies.get(&format!("{port}:{k}")), Some(body), "{port}{k}");
        }
    }
    assert_eq!(bodies.len(), sent);
    assert_eq!(requests, sent);
    assert_eq!(report.pages as usize, sent);
    assert!(
        report.skipped.get("robots").is_some_and(|&n| n > 100),
        "{report:?}"
    );
    eprintln!(
        "crawl: {} pages, {} retries, {:.1} s; skipped {:?}",
        report.pages,
        report.retries,
        took.as_secs_f64(),
        report.skipped
    );
    // For scripts/warcio_check.py: the WARC and the sha256 of every body sent, by URI.
    if let Some(keep) = std::env::var_os("RXLA_KEEP_CRAWL") {
        let keep = std::path::PathBuf::from(keep);
        std::fs::create_dir_all(&keep).unwrap();
        for w in &report.warc {
            std::fs::copy(w, keep.join(w.file_name().unwrap())).unwrap();
        }
        let mut sums = serde_json::Map::new();
        for (site, port) in [(&a, ports[0]), (&b, ports[1])] {
            for (k, body) in site.sent.lock().unwrap().iter() {
                use sha2::Digest;
                let hex: String = sha2::Sha256::digest(body)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                sums.insert(format!("http://127.0.0.1:{port}{k}"), hex.into());
            }
        }
        std::fs::write(
            keep.join("sent.json"),
            serde_json::to_vec_pretty(&sums).unwrap(),
        )
        .unwrap();
    }
    let _ = std::fs::remove_dir_all(&out);
}
