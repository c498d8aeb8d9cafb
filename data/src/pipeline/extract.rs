//! HTML → main text: `dom_smoothie` (a Rust port of Mozilla's Readability on html5ever)
//! picks the main content and drops navigation, footers, sidebars and ads; we keep its
//! formatted text (one paragraph per line), the title and a language guess. Pages that are
//! not text (binary, not UTF-8, too large, no main content) are rejected with a reason.

use anyhow::Result;

use super::docs::Doc;
use super::shard::{Report, Task};
use super::sources::{SourceKind, MAX_PAGE_BYTES};

/// What a page gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub title: String,
    pub text: String,
    /// ISO 639-3 code from `whatlang`, with its confidence.
    pub lang: Option<(String, f64)>,
}

/// Why a page gave nothing.
pub fn check_bytes(bytes: &[u8], max_bytes: usize) -> std::result::Result<&str, &'static str> {
    if bytes.len() > max_bytes {
        return Err("too_large");
    }
    let head = &bytes[..bytes.len().min(4096)];
    let control = head
        .iter()
        .filter(|&&b| b == 0 || (b < 0x09) || (0x0e..0x20).contains(&b))
        .count();
    if control * 100 > head.len().max(1) {
        return Err("binary");
    }
    std::str::from_utf8(bytes).map_err(|_| "not_utf8")
}

/// The main text of an HTML page; `Err(reason)` when it has none.
pub fn extract_html(html: &str, url: Option<&str>) -> std::result::Result<Extracted, &'static str> {
    let cfg = dom_smoothie::Config {
        text_mode: dom_smoothie::TextMode::Formatted,
        ..Default::default()
    };
    let url = url.filter(|u| u.starts_with("http://") || u.starts_with("https://"));
    let html = strip_inert(html);
    let mut r =
        dom_smoothie::Readability::new(html.as_ref(), url, Some(cfg)).map_err(|_| "bad_url")?;
    let article = r.parse().map_err(|_| "no_main_text")?;
    let text = tidy(&article.text_content);
    if text.is_empty() {
        return Err("no_main_text");
    }
    let lang = language(&text);
    Ok(Extracted {
        title: article.title.trim().to_string(),
        text,
        lang,
    })
}

/// `html` without the bodies of `<script>` (JSON-LD kept: Readability reads its metadata)
/// and `<style>` elements and without comments: none of it is text, and on news pages it
/// is most of the bytes, which the HTML tokenizer would otherwise walk one state at a time.
/// The cuts follow the tokenizer's own rules (a script's body ends at the first
/// `</script`, a comment at `-->`), so the parsed document is the same minus those nodes.
pub fn strip_inert(html: &str) -> std::borrow::Cow<'_, str> {
    let b = html.as_bytes();
    let mut out = String::new();
    let (mut copied, mut i) = (0, 0);
    while let Some(off) = memchr::memchr(b'<', &b[i..]) {
        let lt = i + off;
        let rest = &b[lt + 1..];
        let cut = if rest.starts_with(b"!--") {
            // A comment: up to and including `-->` (or the end of the page).
            let end = memchr::memmem::find(&b[lt + 4..], b"-->");
            Some((lt, end.map_or(b.len(), |e| lt + 4 + e + 3)))
        } else {
            ["script", "style"].into_iter().find_map(|tag| {
                let n = tag.len();
                let named = rest.len() > n
                    && rest[..n].eq_ignore_ascii_case(tag.as_bytes())
                    && matches!(
                        rest[n],
                        b'>' | b'/' | b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'
                    );
                if !named {
                    return None;
                }
                let open_end = lt + 1 + html[lt + 1..].find('>')? + 1;
                if tag == "script" && html[lt..open_end].to_ascii_lowercase().contains("ld+json") {
                    return None;
                }
                // Keep the tags, drop the body: the element stays where it was.
                Some((open_end, find_close(html, open_end, tag)))
            })
        };
        match cut {
            Some((from, to)) => {
                out.push_str(&html[copied..from]);
                copied = to;
                i = to.max(lt + 1);
            }
            None => i = lt + 1,
        }
        if i >= b.len() {
            break;
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(html);
    }
    out.push_str(&html[copied.min(b.len())..]);
    std::borrow::Cow::Owned(out)
}

/// Where the closing `</tag` (any case) after `from` starts, or the end of the page.
fn find_close(html: &str, from: usize, tag: &str) -> usize {
    let b = html.as_bytes();
    let mut i = from;
    while let Some(off) = memchr::memmem::find(&b[i..], b"</") {
        let at = i + off;
        let name = &b[at + 2..];
        if name.len() >= tag.len() && name[..tag.len()].eq_ignore_ascii_case(tag.as_bytes()) {
            return at;
        }
        i = at + 2;
    }
    b.len()
}

/// The language of a text (ISO 639-3) and `whatlang`'s confidence.
pub fn language(text: &str) -> Option<(String, f64)> {
    // A few thousand bytes decide it; more only costs time.
    let sample = &text[..floor_char(text, 4_000)];
    whatlang::detect(sample).map(|i| (i.lang().code().to_string(), i.confidence()))
}

fn floor_char(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Trims every line, collapses runs of blank lines, drops leading/trailing blank lines.
fn tidy(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut blank = 0;
    for line in s.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(&line);
    }
    out
}

/// The extract stage on one task: every page, article or record of its source this task
/// keeps, written as documents; everything skipped counted by reason.
pub fn run(task: &Task, r: &mut Report, max_page_bytes: usize) -> Result<()> {
    let mut w = super::docs::DocWriter::create(&task.output)?;
    let mut k = 0usize;
    let mut emit = |item: super::sources::Item, r: &mut Report| -> Result<()> {
        let mine = task.keeps(k);
        k += 1;
        if !mine {
            return Ok(());
        }
        if let SourceKind::Counted(name) = item.kind {
            r.count(name, 1);
            return Ok(());
        }
        r.docs_in += 1;
        r.bytes_in += item.size;
        match item.kind {
            SourceKind::Html => {
                let html = match check_bytes(&item.bytes, max_page_bytes) {
                    Ok(h) => h,
                    Err(why) => {
                        r.reject(why);
                        return Ok(());
                    }
                };
                match extract_html(html, item.url.as_deref()) {
                    Ok(e) => {
                        let mut d = Doc::new(item.id, e.text);
                        d.url = item.url;
                        d.metadata.insert("title".into(), e.title.into());
                        if let Some((l, c)) = e.lang {
                            d.metadata.insert("lang".into(), l.into());
                            d.metadata.insert("lang_score".into(), c.into());
                        }
                        r.bytes_out += d.text.len() as u64;
                        r.docs_out += 1;
                        w.write(&d)?;
                    }
                    Err(why) => r.reject(why),
                }
            }
            SourceKind::Text => {
                let mut d = item.doc.expect("text items carry their document");
                if d.text.trim().is_empty() {
                    r.reject("no_text");
                    return Ok(());
                }
                if let Some((l, c)) = language(&d.text) {
                    d.metadata.insert("lang".into(), l.into());
                    d.metadata.insert("lang_score".into(), c.into());
                }
                r.bytes_out += d.text.len() as u64;
                r.docs_out += 1;
                w.write(&d)?;
            }
            SourceKind::Rejected(why) => r.reject(why),
            SourceKind::Warc | SourceKind::Counted(_) => r.reject("unsupported"),
        }
        Ok(())
    };
    super::sources::for_each_item(&task.source, r, &mut emit)?;
    w.finish()
}

/// Default cap on one page's bytes.
pub const DEFAULT_MAX_PAGE_BYTES: usize = MAX_PAGE_BYTES;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_text_without_boilerplate() {
        let para = "The committee met on Tuesday to discuss the new budget, which includes \
                    funding for schools, roads and the public library system in the county.";
        let html = format!(
            "<html><head><title>Budget news</title></head><body>\
             <nav><a href='/'>Home</a> <a href='/sport'>Sport</a> <a href='/x'>Weather</a></nav>\
             <div class='ad-banner'>Buy now! Limited offer!</div>\
             <article><h1>Budget news</h1><p>{para}</p><p>{para} Second.</p><p>{para} Third.</p></article>\
             <footer>Copyright 2024 Example Media. All rights reserved.</footer></body></html>"
        );
        let e = extract_html(&html, Some("https://example.org/a")).unwrap();
        assert_eq!(e.title, "Budget news");
        assert!(
            e.text.contains("Second.") && e.text.contains("Third."),
            "{}",
            e.text
        );
        for junk in ["Sport", "Weather", "Buy now", "Copyright"] {
            assert!(!e.text.contains(junk), "{junk} in {}", e.text);
        }
        assert_eq!(e.lang.unwrap().0, "eng");
    }

    #[test]
    fn scripts_styles_and_comments_are_cut_before_parsing() {
        let html = "<p>a</p><script type=\"text/javascript\">var s = '<p>no</p>';</SCRIPT>\
                    <style>p { x: '</p>' }</style><!-- <p>hidden</p> --><p>b</p>\
                    <script type=\"application/ld+json\">{\"headline\": \"H\"}</script>\
                    <scripts>kept</scripts><!-- open to the end";
        assert_eq!(
            strip_inert(html),
            "<p>a</p><script type=\"text/javascript\"></SCRIPT><style></style><p>b</p>\
             <script type=\"application/ld+json\">{\"headline\": \"H\"}</script>\
             <scripts>kept</scripts>"
        );
        assert!(matches!(
            strip_inert("<p>plain</p>"),
            std::borrow::Cow::Borrowed(_)
        ));
        // Cut mid-way through a tag or at the very end: never a panic.
        for s in [
            "<script",
            "<script>",
            "<style x",
            "<!--",
            "<!-",
            "<",
            "a<script>b</scr",
        ] {
            let _ = strip_inert(s);
        }
    }

    #[test]
    fn bad_bytes_have_reasons() {
        assert_eq!(check_bytes(b"<p>caf\xe9</p>", 100), Err("not_utf8"));
        assert_eq!(
            check_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0", 100),
            Err("binary")
        );
        assert_eq!(check_bytes(&[b'a'; 101], 100), Err("too_large"));
        assert_eq!(check_bytes(b"<p>ok</p>", 100), Ok("<p>ok</p>"));
        assert!(extract_html("", None).is_err());
    }
}
