//! WARC 1.0/1.1 (ISO 28500) reading and writing: plain files and gzip files (one member per
//! record, as crawlers write them, or one member for the whole file).
//!
//! The reader streams records one at a time and never panics on bad bytes: a record it cannot
//! take (truncated, no `Content-Length`, a corrupt gzip member, bytes that are not WARC at all,
//! an ARC file) is skipped, counted under a [`SkipReason`], and reading resumes at the next
//! record it can find. Only I/O errors of the underlying reader end the iteration with an `Err`.
//! Hand-written over `flate2` and `httparse`: the `warc` crate (0.4) cannot resynchronize after a
//! bad record, hides gzip member boundaries (so a corrupt member ends the file) and has no HTTP
//! layer.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use sha1::{Digest, Sha1};

/// Longest header line (or version line) we accept; longer is a corrupt record.
const MAX_LINE: u64 = 64 << 10;
/// Most header bytes per record.
const MAX_HEADER_BYTES: usize = 1 << 20;

/// Why a record (or a run of bytes) was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// Bytes where a `WARC/x.y` line should start (ARC files, junk, a lost resync).
    NotWarc,
    /// A header line without `:`, a line over 64 KiB or headers over 1 MiB.
    BadHeader,
    /// No `Content-Length`, or one that is not a number.
    BadContentLength,
    /// The file ended inside the record.
    Truncated,
    /// The block is larger than [`ReaderOptions::max_record_bytes`].
    TooLarge,
    /// A gzip member that does not decompress (bit flips, a cut file).
    CorruptGzip,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotWarc => "not_warc",
            SkipReason::BadHeader => "bad_header",
            SkipReason::BadContentLength => "bad_content_length",
            SkipReason::Truncated => "truncated",
            SkipReason::TooLarge => "too_large",
            SkipReason::CorruptGzip => "corrupt_gzip",
        }
    }
}

/// One skip: where (byte offset in the file as stored, i.e. compressed), why, and a detail.
#[derive(Debug, Clone)]
pub struct Skip {
    pub offset: u64,
    pub reason: SkipReason,
    pub detail: String,
}

/// What a reader saw: records read, skips by reason, the first skips in detail.
#[derive(Debug, Clone, Default)]
pub struct ReadStats {
    pub records: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    /// The first 100 skips.
    pub skips: Vec<Skip>,
    /// Records whose block was not followed by the `\r\n\r\n` the standard asks for.
    pub missing_trailer: u64,
}

impl ReadStats {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    fn skip(&mut self, offset: u64, reason: SkipReason, detail: String) {
        *self.skipped.entry(reason.as_str()).or_default() += 1;
        if self.skips.len() < 100 {
            self.skips.push(Skip {
                offset,
                reason,
                detail,
            });
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ReaderOptions {
    /// Records whose block is larger are skipped (their bytes are read past, not kept).
    pub max_record_bytes: u64,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            max_record_bytes: 256 << 20,
        }
    }
}

/// `WARC-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordType {
    Warcinfo,
    Response,
    Resource,
    Request,
    Metadata,
    Revisit,
    Conversion,
    Continuation,
    Other(String),
}

impl RecordType {
    pub fn parse(s: &str) -> RecordType {
        match s.trim().to_ascii_lowercase().as_str() {
            "warcinfo" => RecordType::Warcinfo,
            "response" => RecordType::Response,
            "resource" => RecordType::Resource,
            "request" => RecordType::Request,
            "metadata" => RecordType::Metadata,
            "revisit" => RecordType::Revisit,
            "conversion" => RecordType::Conversion,
            "continuation" => RecordType::Continuation,
            _ => RecordType::Other(s.trim().to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RecordType::Warcinfo => "warcinfo",
            RecordType::Response => "response",
            RecordType::Resource => "resource",
            RecordType::Request => "request",
            RecordType::Metadata => "metadata",
            RecordType::Revisit => "revisit",
            RecordType::Conversion => "conversion",
            RecordType::Continuation => "continuation",
            RecordType::Other(s) => s,
        }
    }
}

/// A WARC record: version, named fields in file order, and the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `1.0`, `1.1` (what follows `WARC/`).
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub block: Vec<u8>,
    /// Byte offset of the record (of its gzip member, in a gzip file) in the file as stored.
    pub offset: u64,
}

impl Record {
    /// The first field of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn record_type(&self) -> RecordType {
        RecordType::parse(self.header("WARC-Type").unwrap_or(""))
    }

    /// `WARC-Target-URI`, without the `<..>` some WARC 1.0 writers put around it.
    pub fn target_uri(&self) -> Option<&str> {
        self.header("WARC-Target-URI")
            .map(|u| u.trim().trim_start_matches('<').trim_end_matches('>'))
    }

    pub fn record_id(&self) -> Option<&str> {
        self.header("WARC-Record-ID")
    }

    /// The block as an HTTP message, for `application/http` response/request/revisit records.
    pub fn http(&self) -> Result<HttpMessage, HttpError> {
        HttpMessage::parse(&self.block)
    }
}

/// Streams [`Record`]s from a WARC file, plain or gzip (detected from the first bytes).
pub struct WarcReader<R: Read> {
    state: State<R>,
    gzip: bool,
    opts: ReaderOptions,
    stats: ReadStats,
    /// Set after a skip whose end we could not find: the bytes up to the next `WARC/` line
    /// belong to that skip, not to a new one.
    resyncing: bool,
    done: bool,
}

enum State<R: Read> {
    /// Between gzip members, or the whole plain file.
    Raw(BufReader<Counting<R>>),
    /// Inside a gzip member.
    Member {
        dec: Box<BufReader<GzDecoder<BufReader<Counting<R>>>>>,
        offset: u64,
    },
    Poisoned,
}

impl<R: Read> WarcReader<R> {
    pub fn new(inner: R) -> WarcReader<R> {
        WarcReader::with_options(inner, ReaderOptions::default())
    }

    pub fn with_options(inner: R, opts: ReaderOptions) -> WarcReader<R> {
        let mut raw = BufReader::with_capacity(1 << 16, Counting { inner, n: 0 });
        let gzip = matches!(raw.fill_buf(), Ok(b) if b.starts_with(&[0x1f, 0x8b]));
        WarcReader {
            state: State::Raw(raw),
            gzip,
            opts,
            stats: ReadStats::default(),
            resyncing: false,
            done: false,
        }
    }

    /// Whether the file is gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        self.gzip
    }

    pub fn stats(&self) -> &ReadStats {
        &self.stats
    }

    fn next_record(&mut self) -> io::Result<Option<Record>> {
        loop {
            match std::mem::replace(&mut self.state, State::Poisoned) {
                State::Raw(mut raw) => {
                    let offset = pos(&raw);
                    if !self.gzip {
                        let mut junk = None;
                        let got = parse_record(&mut raw, &self.opts, offset, true, &mut junk);
                        self.state = State::Raw(raw);
                        match self.take(got, junk, None)? {
                            Step::Record(r) => return Ok(Some(r)),
                            Step::Eof => return Ok(None),
                            Step::Again => continue,
                        }
                    }
                    let buf = raw.fill_buf()?;
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    if buf.starts_with(&[0x1f, 0x8b]) {
                        self.state = State::Member {
                            dec: Box::new(BufReader::with_capacity(1 << 16, GzDecoder::new(raw))),
                            offset,
                        };
                        continue;
                    }
                    // Junk between members: up to the next gzip magic.
                    let skipped = skip_to_gzip_magic(&mut raw)?;
                    self.stats.skip(
                        offset,
                        SkipReason::NotWarc,
                        format!("{skipped} bytes between gzip members are not gzip"),
                    );
                    self.state = State::Raw(raw);
                }
                State::Member { mut dec, offset } => {
                    let mut junk = None;
                    let mut got = parse_record(&mut *dec, &self.opts, offset, false, &mut junk);
                    if matches!(got, Parsed::Record(..)) {
                        // Reading on to the member's end checks its CRC before the record
                        // is handed out (a bit flip must not pass as data).
                        if let Err(e) = dec.fill_buf() {
                            got = Parsed::Io(e);
                        }
                    }
                    match got {
                        Parsed::Io(e) if is_gzip_error(&e) => {
                            let mut raw = (*dec).into_inner().into_inner();
                            let reason = if e.kind() == io::ErrorKind::UnexpectedEof {
                                SkipReason::Truncated
                            } else {
                                SkipReason::CorruptGzip
                            };
                            self.stats.skip(
                                offset,
                                reason,
                                format!("gzip member does not decompress: {e}"),
                            );
                            self.resyncing = false;
                            if pos(&raw) == offset {
                                raw.consume(1);
                            }
                            skip_to_gzip_magic(&mut raw)?;
                            self.state = State::Raw(raw);
                        }
                        Parsed::Eof => {
                            self.note_junk(junk);
                            self.resyncing = false;
                            self.state = State::Raw((*dec).into_inner().into_inner());
                        }
                        got => {
                            self.state = State::Member { dec, offset };
                            match self.take(got, junk, Some(offset))? {
                                Step::Record(r) => return Ok(Some(r)),
                                Step::Eof | Step::Again => continue,
                            }
                        }
                    }
                }
                State::Poisoned => return Ok(None),
            }
        }
    }

    fn note_junk(&mut self, junk: Junk) {
        if let Some((n, at)) = junk {
            // Garbage that follows a skip we could not delimit is part of that skip.
            if !self.resyncing {
                self.stats.skip(
                    at,
                    SkipReason::NotWarc,
                    format!("{n} bytes that are not a WARC record"),
                );
            }
        }
    }

    fn take(&mut self, got: Parsed, junk: Junk, member: Option<u64>) -> io::Result<Step> {
        self.note_junk(junk);
        match got {
            Parsed::Eof => Ok(Step::Eof),
            Parsed::Record(mut r, trailer_ok) => {
                if let Some(m) = member {
                    r.offset = m;
                }
                self.resyncing = false;
                self.stats.records += 1;
                if !trailer_ok {
                    self.stats.missing_trailer += 1;
                }
                Ok(Step::Record(r))
            }
            Parsed::Skip {
                reason,
                detail,
                at,
                resync,
            } => {
                self.stats.skip(at, reason, detail);
                self.resyncing = resync;
                Ok(Step::Again)
            }
            Parsed::Io(e) => Err(e),
        }
    }
}

enum Step {
    Record(Record),
    Eof,
    Again,
}

impl<R: Read> Iterator for WarcReader<R> {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<io::Result<Record>> {
        if self.done {
            return None;
        }
        match self.next_record() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole WARC file from disk: the records and what was skipped.
pub fn read_file(path: &std::path::Path) -> io::Result<(Vec<Record>, ReadStats)> {
    let f = std::fs::File::open(path)?;
    let mut r = WarcReader::new(f);
    let mut out = Vec::new();
    for rec in &mut r {
        out.push(rec?);
    }
    Ok((out, r.stats.clone()))
}

struct Counting<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        Ok(k)
    }
}

fn pos<R: Read>(r: &BufReader<Counting<R>>) -> u64 {
    r.get_ref().n - r.buffer().len() as u64
}

fn is_gzip_error(e: &io::Error) -> bool {
    // flate2 reports corrupt data as InvalidInput/InvalidData and a cut member as UnexpectedEof.
    matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
    )
}

/// Consumes bytes up to (not including) the next `1f 8b 08`; returns how many.
fn skip_to_gzip_magic<B: BufRead>(r: &mut B) -> io::Result<u64> {
    let mut n = 0u64;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(n);
        }
        if let Some(i) = buf.windows(3).position(|w| w == [0x1f, 0x8b, 0x08]) {
            r.consume(i);
            return Ok(n + i as u64);
        }
        // Keep the last 2 bytes: the magic may straddle two fills.
        let keep = if buf.len() >= 3 { 2 } else { 0 };
        let k = buf.len() - keep;
        if k == 0 {
            // Fewer than 3 bytes left and no magic: that is the end.
            let l = buf.len();
            r.consume(l);
            return Ok(n + l as u64);
        }
        r.consume(k);
        n += k as u64;
    }
}

enum Parsed {
    Eof,
    Record(Record, bool),
    Skip {
        reason: SkipReason,
        detail: String,
        at: u64,
        /// The record's end is unknown: garbage up to the next `WARC/` line is part of it.
        resync: bool,
    },
    Io(io::Error),
}

/// Bytes that were not WARC, found before a record's version line: (count, offset).
type Junk = Option<(u64, u64)>;

/// Reads one line (with its `\n`) of at most [`MAX_LINE`] bytes; `Ok(false)` at EOF.
fn read_line<B: BufRead>(r: &mut B, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let n = r.by_ref().take(MAX_LINE).read_until(b'\n', line)?;
    Ok(n > 0)
}

/// A line without its `\n` and any `\r`s before it (some writers end lines `\r\r\n`).
fn trim_eol(l: &[u8]) -> &[u8] {
    let mut l = l.strip_suffix(b"\n").unwrap_or(l);
    while let Some(x) = l.strip_suffix(b"\r") {
        l = x;
    }
    l
}

/// Parses one record from `r`; junk before it is reported through `junk`. `raw_offsets`:
/// `offset` moves with the bytes read (a plain file); in a gzip member every skip is reported
/// at the member's offset.
fn parse_record<B: BufRead>(
    r: &mut B,
    opts: &ReaderOptions,
    offset: u64,
    raw_offsets: bool,
    junk: &mut Junk,
) -> Parsed {
    match parse_record_inner(r, opts, offset, raw_offsets, junk) {
        Ok(p) => p,
        Err(e) => Parsed::Io(e),
    }
}

fn parse_record_inner<B: BufRead>(
    r: &mut B,
    opts: &ReaderOptions,
    offset: u64,
    raw_offsets: bool,
    junk: &mut Junk,
) -> io::Result<Parsed> {
    let mut at = offset;
    let mut line = Vec::new();
    // The version line, after any blank lines.
    let version = loop {
        if !read_line(r, &mut line)? {
            return Ok(Parsed::Eof);
        }
        let t = trim_eol(&line);
        if let Some(v) = t.strip_prefix(b"WARC/") {
            break String::from_utf8_lossy(v).trim().to_string();
        }
        if !t.iter().all(|b| b.is_ascii_whitespace()) {
            let j = junk.get_or_insert((0, at));
            j.0 += line.len() as u64;
        }
        if raw_offsets {
            at += line.len() as u64;
        }
    };
    let record_at = at;
    // Header fields up to the empty line; continuation lines (leading space/tab) fold in.
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut header_bytes = 0usize;
    loop {
        if !read_line(r, &mut line)? {
            return Ok(skip(
                SkipReason::Truncated,
                "the file ends inside the record's header".into(),
                record_at,
                false,
            ));
        }
        header_bytes += line.len();
        if header_bytes > MAX_HEADER_BYTES || !line.ends_with(b"\n") {
            return Ok(skip(
                SkipReason::BadHeader,
                "header line over 64 KiB or headers over 1 MiB".into(),
                record_at,
                true,
            ));
        }
        let t = trim_eol(&line);
        if t.is_empty() {
            break;
        }
        if t[0] == b' ' || t[0] == b'\t' {
            if let Some((_, v)) = headers.last_mut() {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(t).trim());
                continue;
            }
        }
        let Some(colon) = t.iter().position(|&b| b == b':') else {
            return Ok(skip(
                SkipReason::BadHeader,
                format!(
                    "header line without ':': {:?}",
                    String::from_utf8_lossy(&t[..t.len().min(80)])
                ),
                record_at,
                true,
            ));
        };
        let name = String::from_utf8_lossy(&t[..colon]).trim().to_string();
        let value = String::from_utf8_lossy(&t[colon + 1..]).trim().to_string();
        headers.push((name, value));
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.trim().parse::<u64>());
    let len = match len {
        Some(Ok(n)) => n,
        Some(Err(_)) | None => {
            return Ok(skip(
                SkipReason::BadContentLength,
                "no Content-Length, or not a number".into(),
                record_at,
                true,
            ))
        }
    };
    if len > opts.max_record_bytes {
        let got = io::copy(&mut r.by_ref().take(len), &mut io::sink())?;
        let (reason, resync) = if got < len {
            (SkipReason::Truncated, false)
        } else {
            (SkipReason::TooLarge, false)
        };
        return Ok(skip(
            reason,
            format!(
                "block of {len} bytes is over the {} byte limit",
                opts.max_record_bytes
            ),
            record_at,
            resync,
        ));
    }
    let mut block = Vec::with_capacity(len.min(1 << 20) as usize);
    let got = r.by_ref().take(len).read_to_end(&mut block)? as u64;
    if got < len {
        return Ok(skip(
            SkipReason::Truncated,
            format!("block has {got} of its {len} bytes"),
            record_at,
            false,
        ));
    }
    // The standard's two CRLFs after the block; tolerate LFs or nothing.
    let mut ends = 0;
    while ends < 2 {
        let buf = r.fill_buf()?;
        if buf.starts_with(b"\r\n") {
            r.consume(2);
        } else if buf.starts_with(b"\n") {
            r.consume(1);
        } else {
            break;
        }
        ends += 1;
    }
    Ok(Parsed::Record(
        Record {
            version,
            headers,
            block,
            offset: record_at,
        },
        ends == 2,
    ))
}

fn skip(reason: SkipReason, detail: String, at: u64, resync: bool) -> Parsed {
    Parsed::Skip {
        reason,
        detail,
        at,
        resync,
    }
}

/// An HTTP request or response held in a record's block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMessage {
    /// Responses: the status code.
    pub status: Option<u16>,
    /// Requests: method and target.
    pub method: Option<String>,
    pub path: Option<String>,
    /// Names and raw values (values need not be UTF-8).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, with `Transfer-Encoding: chunked` undone when the chunks are well formed.
    pub body: Vec<u8>,
    /// The body said it was chunked but the chunks do not parse; `body` is as stored.
    pub bad_chunked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("the HTTP header is cut short")]
    Incomplete,
    #[error("not an HTTP message: {0}")]
    Invalid(String),
}

impl HttpMessage {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// A header's value as text (lossy).
    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
    }

    /// The media type of `Content-Type`, lower-cased, without parameters.
    pub fn mime(&self) -> Option<String> {
        self.header_str("Content-Type").map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }

    pub fn parse(block: &[u8]) -> Result<HttpMessage, HttpError> {
        let mut n = 64;
        loop {
            match Self::parse_with(block, n) {
                Err(HttpError::Invalid(m)) if m.contains("too many headers") && n < 4096 => n *= 8,
                other => return other,
            }
        }
    }

    fn parse_with(block: &[u8], max_headers: usize) -> Result<HttpMessage, HttpError> {
        let mut hs = vec![httparse::EMPTY_HEADER; max_headers];
        let (status, method, path, head_len, headers) = if block.starts_with(b"HTTP/") {
            let mut resp = httparse::Response::new(&mut hs);
            let n = match resp.parse(block) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Err(HttpError::Incomplete),
                Err(e) => return Err(HttpError::Invalid(e.to_string())),
            };
            (resp.code, None, None, n, owned(resp.headers))
        } else {
            let mut req = httparse::Request::new(&mut hs);
            let n = match req.parse(block) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Err(HttpError::Incomplete),
                Err(e) => return Err(HttpError::Invalid(e.to_string())),
            };
            (
                None,
                req.method.map(str::to_string),
                req.path.map(str::to_string),
                n,
                owned(req.headers),
            )
        };
        let mut msg = HttpMessage {
            status,
            method,
            path,
            headers,
            body: Vec::new(),
            bad_chunked: false,
        };
        let raw = &block[head_len..];
        let chunked = msg
            .header_str("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        match chunked.then(|| dechunk(raw)).flatten() {
            Some(body) => msg.body = body,
            None => {
                msg.bad_chunked = chunked;
                msg.body = raw.to_vec();
            }
        }
        Ok(msg)
    }
}

fn owned(hs: &[httparse::Header]) -> Vec<(String, Vec<u8>)> {
    hs.iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

/// Undoes `Transfer-Encoding: chunked`; `None` when the chunks do not parse.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    loop {
        let eol = raw.iter().position(|&b| b == b'\n')?;
        let line = std::str::from_utf8(trim_eol(&raw[..=eol])).ok()?;
        let size = line.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        raw = &raw[eol + 1..];
        if size == 0 {
            return Some(out);
        }
        if raw.len() < size {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size..];
        raw = raw
            .strip_prefix(b"\r\n")
            .or_else(|| raw.strip_prefix(b"\n"))?;
    }
}

/// The WARC version a writer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WarcVersion {
    V1_0,
    #[default]
    V1_1,
}

/// A record to write; the writer adds `WARC-Record-ID`, `WARC-Date` (unless given in
/// `extra`), digests and `Content-Length`.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub kind: RecordType,
    pub target_uri: Option<String>,
    pub content_type: Option<String>,
    /// More fields, written as given (e.g. `WARC-Concurrent-To`, `WARC-IP-Address`).
    pub extra: Vec<(String, String)>,
    pub block: Vec<u8>,
}

/// Writes WARC records, each gzip-compressed as its own member (`.warc.gz`) or plain.
pub struct WarcWriter<W: Write> {
    out: W,
    gzip: bool,
    version: WarcVersion,
}

impl<W: Write> WarcWriter<W> {
    pub fn new(out: W, gzip: bool, version: WarcVersion) -> WarcWriter<W> {
        WarcWriter { out, gzip, version }
    }

    /// Writes one record; returns its `WARC-Record-ID`.
    pub fn write(&mut self, rec: &NewRecord) -> io::Result<String> {
        let id = format!("<urn:uuid:{}>", uuid::Uuid::new_v4());
        let mut head = String::new();
        let v = match self.version {
            WarcVersion::V1_0 => "1.0",
            WarcVersion::V1_1 => "1.1",
        };
        head.push_str(&format!("WARC/{v}\r\n"));
        head.push_str(&format!("WARC-Type: {}\r\n", rec.kind.as_str()));
        head.push_str(&format!("WARC-Record-ID: {id}\r\n"));
        if !rec
            .extra
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("WARC-Date"))
        {
            head.push_str(&format!("WARC-Date: {}\r\n", warc_date_now()));
        }
        if let Some(u) = &rec.target_uri {
            head.push_str(&format!("WARC-Target-URI: {}\r\n", no_crlf(u)));
        }
        if let Some(c) = &rec.content_type {
            head.push_str(&format!("Content-Type: {}\r\n", no_crlf(c)));
        }
        for (k, val) in &rec.extra {
            head.push_str(&format!("{}: {}\r\n", no_crlf(k), no_crlf(val)));
        }
        head.push_str(&format!(
            "WARC-Block-Digest: {}\r\n",
            sha1_base32(&rec.block)
        ));
        let is_http = rec
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/http"));
        if is_http {
            if let Some(i) = rec.block.windows(4).position(|w| w == b"\r\n\r\n") {
                head.push_str(&format!(
                    "WARC-Payload-Digest: {}\r\n",
                    sha1_base32(&rec.block[i + 4..])
                ));
            }
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", rec.block.len()));
        if self.gzip {
            let mut gz = GzEncoder::new(&mut self.out, flate2::Compression::default());
            gz.write_all(head.as_bytes())?;
            gz.write_all(&rec.block)?;
            gz.write_all(b"\r\n\r\n")?;
            gz.finish()?;
        } else {
            self.out.write_all(head.as_bytes())?;
            self.out.write_all(&rec.block)?;
            self.out.write_all(b"\r\n\r\n")?;
        }
        Ok(id)
    }

    /// A `warcinfo` record with `application/warc-fields`.
    pub fn write_warcinfo(
        &mut self,
        filename: &str,
        fields: &[(&str, &str)],
    ) -> io::Result<String> {
        let mut block = String::new();
        for (k, v) in fields {
            block.push_str(&format!("{}: {}\r\n", no_crlf(k), no_crlf(v)));
        }
        self.write(&NewRecord {
            kind: RecordType::Warcinfo,
            target_uri: None,
            content_type: Some("application/warc-fields".into()),
            extra: vec![("WARC-Filename".into(), filename.into())],
            block: block.into_bytes(),
        })
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

fn no_crlf(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// `sha1:` + base32, the digest form WARC tools (warcio, wget, Heritrix) write and check.
pub fn sha1_base32(bytes: &[u8]) -> String {
    format!(
        "sha1:{}",
        data_encoding::BASE32.encode(&Sha1::digest(bytes))
    )
}

/// Now as `YYYY-MM-DDThh:mm:ssZ` (valid in WARC 1.0 and 1.1).
pub fn warc_date_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    warc_date(secs)
}

/// Unix seconds as `YYYY-MM-DDThh:mm:ssZ` (civil-from-days, proleptic Gregorian, UTC).
pub fn warc_date(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Real WARC files that ship in registry packages (tests, benchmarks, the crawl replay):
/// pywb's `sample_archive/warcs/` (iana.org 2014, revisits, ARC and deliberately broken files)
/// and Warcat's `example/` (a wget crawl of archiveteam.org, bad chunking, non-UTF-8 headers).
pub const SAMPLE_PACKAGES: &[(&str, files::fetch::PinnedPackage, &str)] = &[
    (
        "pywb",
        files::fetch::PinnedPackage {
            registry: files::fetch::Registry::PipSdist,
            name: "pywb",
            version: "2.10.0",
            sha256: "5ae43c9b2a5321e39b9c8e16538bfbc0146eeb6fe26713232e45378b774a1a96",
        },
        "pywb-2.10.0/sample_archive/warcs",
    ),
    (
        "warcat",
        files::fetch::PinnedPackage {
            registry: files::fetch::Registry::PipSdist,
            name: "Warcat",
            version: "2.2.5",
            sha256: "a3d7af6b4f1cbc6244833e19904932647c8f57d46a2b770fc499a1ec5ca8a8bd",
        },
        "Warcat-2.2.5/example",
    ),
];

/// The directory of a sample package's WARC files (`pywb` or `warcat`), fetched on first use.
pub fn sample_dir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    match SAMPLE_PACKAGES.iter().find(|(n, _, _)| *n == name) {
        Some((_, pkg, sub)) => Ok(files::fetch::ensure_package(pkg)?.join(sub)),
        None => anyhow::bail!("unknown WARC sample package `{name}`; known: pywb, warcat"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> (Vec<Record>, ReadStats) {
        let mut r = WarcReader::new(bytes);
        let recs: Vec<Record> = (&mut r).map(|x| x.unwrap()).collect();
        (recs, r.stats().clone())
    }

    fn sample(gzip: bool) -> Vec<u8> {
        let mut w = WarcWriter::new(Vec::new(), gzip, WarcVersion::V1_1);
        w.write_warcinfo("t.warc", &[("software", "rxla")]).unwrap();
        let req = w
            .write(&NewRecord {
                kind: RecordType::Request,
                target_uri: Some("http://a.test/x".into()),
                content_type: Some("application/http; msgtype=request".into()),
                extra: vec![],
                block: b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
            })
            .unwrap();
        w.write(&NewRecord {
            kind: RecordType::Response,
            target_uri: Some("http://a.test/x".into()),
            content_type: Some("application/http; msgtype=response".into()),
            extra: vec![("WARC-Concurrent-To".into(), req)],
            block: b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>hi\r\n\r\n</p>".to_vec(),
        })
        .unwrap();
        w.into_inner()
    }

    #[test]
    fn round_trip_plain_and_gzip() {
        for gzip in [false, true] {
            let bytes = sample(gzip);
            let (recs, stats) = read_all(&bytes);
            assert_eq!(recs.len(), 3, "gzip={gzip}");
            assert_eq!(stats.skipped_total(), 0);
            assert_eq!(stats.missing_trailer, 0);
            assert_eq!(recs[0].record_type(), RecordType::Warcinfo);
            assert_eq!(recs[1].record_type(), RecordType::Request);
            assert_eq!(recs[2].target_uri(), Some("http://a.test/x"));
            assert_eq!(recs[2].header("WARC-Concurrent-To"), recs[1].record_id());
            let http = recs[2].http().unwrap();
            assert_eq!(http.status, Some(200));
            assert_eq!(http.body, b"<p>hi\r\n\r\n</p>");
            assert_eq!(http.mime().as_deref(), Some("text/html"));
            assert_eq!(
                recs[2].header("WARC-Payload-Digest").unwrap(),
                sha1_base32(b"<p>hi\r\n\r\n</p>")
            );
        }
    }

    #[test]
    fn gzip_offsets_point_at_members() {
        let bytes = sample(true);
        let (recs, _) = read_all(&bytes);
        for r in &recs {
            let (one, _) = read_all(&bytes[r.offset as usize..]);
            assert_eq!((&one[0].headers, &one[0].block), (&r.headers, &r.block));
        }
    }

    #[test]
    fn truncated_and_junk_are_counted() {
        let bytes = sample(false);
        // Cut inside the last record's block.
        let (recs, stats) = read_all(&bytes[..bytes.len() - 10]);
        assert_eq!(recs.len(), 2);
        assert_eq!(stats.skipped.get("truncated"), Some(&1));
        // Junk in front, a bad header in the middle: both skipped, the rest read.
        let mut b = b"garbage line\r\nmore\r\n".to_vec();
        b.extend_from_slice(&bytes);
        let (recs, stats) = read_all(&b);
        assert_eq!(recs.len(), 3);
        assert_eq!(stats.skipped.get("not_warc"), Some(&1));
        let mut b = b"WARC/1.0\r\nWARC-Type: response\r\nno colon here\r\n\r\nbody\r\n".to_vec();
        b.extend_from_slice(&bytes);
        let (recs, stats) = read_all(&b);
        assert_eq!(recs.len(), 3);
        assert_eq!(stats.skipped.get("bad_header"), Some(&1));
        assert_eq!(stats.skipped_total(), 1, "{:?}", stats.skips);
    }

    #[test]
    fn corrupt_gzip_member_is_skipped_and_the_next_read() {
        let bytes = sample(true);
        let (recs, _) = read_all(&bytes);
        let (a, b) = (recs[1].offset as usize, recs[2].offset as usize);
        let mut bad = bytes.clone();
        // Flip bytes in the middle of the request's deflate data.
        for x in &mut bad[a + 20..a + 30] {
            *x ^= 0x55;
        }
        let (got, stats) = read_all(&bad);
        assert_eq!(stats.skipped_total(), 1, "{:?}", stats.skips);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].offset, b as u64);
        assert_eq!(got[1].record_type(), RecordType::Response);
    }

    #[test]
    fn chunked_bodies_are_undone() {
        let m = HttpMessage::parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.body, b"hello world");
        assert!(!m.bad_chunked);
        let m = HttpMessage::parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .unwrap();
        assert!(m.bad_chunked);
        assert_eq!(m.body, b"zz\r\n");
    }

    #[test]
    fn dates() {
        assert_eq!(warc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(warc_date(1_388_718_201), "2014-01-03T03:03:21Z");
        assert_eq!(warc_date(951_782_400), "2000-02-29T00:00:00Z");
    }
}
