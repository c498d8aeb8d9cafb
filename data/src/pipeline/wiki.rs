//! MediaWiki XML dumps (`pages-articles*.xml[.bz2]`) → article text with the markup removed.
//! Streams the dump (multi-stream bz2 included); keeps main-namespace pages that are not
//! redirects.

use std::io::BufRead;
use std::path::Path;
use std::sync::LazyLock;

use anyhow::{Context, Result};
use quick_xml::events::Event;
use regex::Regex;

use super::docs::Doc;

/// One page of a dump, as read.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub title: String,
    pub id: String,
    pub ns: String,
    pub redirect: bool,
    pub wikitext: String,
}

/// Opens a dump, decompressing `.bz2`.
pub fn open_dump(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(if path.extension().is_some_and(|e| e == "bz2") {
        Box::new(std::io::BufReader::with_capacity(
            1 << 16,
            bzip2::read::MultiBzDecoder::new(f),
        ))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 16, f))
    })
}

/// Calls `each` for every page of the dump in order; a damaged dump ends with an error
/// after the pages read so far.
pub fn for_each_page(input: impl BufRead, mut each: impl FnMut(Page) -> Result<()>) -> Result<()> {
    let mut r = quick_xml::Reader::from_reader(input);
    let mut buf = Vec::new();
    let mut page = Page::default();
    let mut field: Option<&'static str> = None;
    let mut depth_in_revision = false;
    loop {
        let ev = r
            .read_event_into(&mut buf)
            .with_context(|| format!("XML error at byte {}", r.buffer_position()))?;
        match ev {
            Event::Start(e) => match e.local_name().as_ref() {
                b"page" => page = Page::default(),
                b"revision" => depth_in_revision = true,
                b"title" => field = Some("title"),
                b"ns" => field = Some("ns"),
                b"id" if !depth_in_revision => field = Some("id"),
                b"text" => field = Some("text"),
                _ => field = None,
            },
            Event::Empty(e) if e.local_name().as_ref() == b"redirect" => page.redirect = true,
            Event::Text(t) => {
                if let Some(f) = field {
                    let s = t.unescape().context("bad XML entity")?;
                    match f {
                        "title" => page.title.push_str(&s),
                        "ns" => page.ns.push_str(&s),
                        "id" => page.id.push_str(&s),
                        _ => page.wikitext.push_str(&s),
                    }
                }
            }
            Event::CData(t) if field == Some("text") => {
                page.wikitext.push_str(&String::from_utf8_lossy(&t));
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"page" => each(std::mem::take(&mut page))?,
                b"revision" => depth_in_revision = false,
                _ => field = None,
            },
            Event::Eof => return Ok(()),
            _ => {}
        }
        buf.clear();
    }
}

/// Whether a page is an article (main namespace, not a redirect).
pub fn is_article(p: &Page) -> bool {
    (p.ns.is_empty() || p.ns == "0")
        && !p.redirect
        && !p
            .wikitext
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("#redirect")
}

/// An article as a document: id `wiki:<page id>`, title in metadata.
pub fn page_doc(p: &Page) -> Doc {
    let mut d = Doc::new(format!("wiki:{}", p.id), strip_markup(&p.wikitext));
    d.url = Some(format!(
        "https://en.wikipedia.org/wiki/{}",
        p.title.replace(' ', "_")
    ));
    d.metadata.insert("title".into(), p.title.clone().into());
    d.metadata.insert("source".into(), "mediawiki".into());
    d
}

static COMMENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<!--.*?-->").unwrap());
static DROP_TAGS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?is)<ref[^>/]*/>|<ref[^>]*>.*?</ref>|<(math|gallery|timeline|score|syntaxhighlight|source|imagemap|chem)[^>]*>.*?</(math|gallery|timeline|score|syntaxhighlight|source|imagemap|chem)>",
    )
    .unwrap()
});
static TAG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"</?[a-zA-Z][^>]*>").unwrap());
static EXT_LINK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[(?:https?|ftp)://[^\s\]]+(?:\s+([^\]]*))?\]").unwrap());
static BARE_URL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"https?://\S+").unwrap());
static HEADING: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^[ \t]*=+[ \t]*(.*?)[ \t]*=+[ \t]*$").unwrap());
static LIST: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?m)^[*#:;]+[ \t]*").unwrap());
static QUOTES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"'{2,}").unwrap());
static BLANKS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\n[ \t]*(\n[ \t]*)+").unwrap());
static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[ \t]{2,}").unwrap());
static MAGIC: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"__[A-Z]+__").unwrap());

/// Wikitext → plain text: templates, tables, references, files, categories, comments and
/// tags removed; links and external links replaced by their text; emphasis and headings
/// reduced to their words.
pub fn strip_markup(src: &str) -> String {
    let s = COMMENT.replace_all(src, "");
    let s = DROP_TAGS.replace_all(&s, "");
    let s = remove_nested(&s, "{{", "}}");
    let s = remove_nested(&s, "{|", "|}");
    let s = links(&s);
    let s = EXT_LINK.replace_all(&s, "$1");
    let s = BARE_URL.replace_all(&s, "");
    let s = TAG.replace_all(&s, "");
    let s = entities(&s);
    let s = HEADING.replace_all(&s, "\n$1\n");
    let s = LIST.replace_all(&s, "");
    let s = QUOTES.replace_all(&s, "");
    let s = MAGIC.replace_all(&s, "");
    let s = SPACES.replace_all(&s, " ");
    let s = BLANKS.replace_all(&s, "\n\n");
    s.trim().to_string()
}

/// Removes every `open … close` span, nested ones included; an unclosed span runs to the end.
fn remove_nested(s: &str, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut i = 0;
    let b = s.as_bytes();
    let mut start = 0;
    while i < b.len() {
        if b[i..].starts_with(open.as_bytes()) {
            if depth == 0 {
                out.push_str(&s[start..i]);
            }
            depth += 1;
            i += open.len();
        } else if depth > 0 && b[i..].starts_with(close.as_bytes()) {
            depth -= 1;
            i += close.len();
            if depth == 0 {
                start = i;
            }
        } else {
            i += 1;
        }
    }
    if depth == 0 {
        out.push_str(&s[start..]);
    }
    out
}

/// `[[target|label]]` → label, `[[target]]` → target; files, images, categories and
/// interlanguage links (nested captions included) removed.
fn links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("[[") {
        out.push_str(&rest[..at]);
        let body_start = at + 2;
        // Find the matching `]]`, counting nested `[[`.
        let bytes = rest.as_bytes();
        let (mut i, mut depth) = (body_start, 1usize);
        while i + 1 < bytes.len() && depth > 0 {
            if bytes[i] == b'[' && bytes[i + 1] == b'[' {
                depth += 1;
                i += 2;
            } else if bytes[i] == b']' && bytes[i + 1] == b']' {
                depth -= 1;
                i += 2;
            } else {
                i += 1;
            }
        }
        if depth > 0 {
            // Unclosed: drop the brackets, keep the text.
            rest = &rest[body_start..];
            continue;
        }
        let body = &rest[body_start..i - 2];
        let target = body.split('|').next().unwrap_or("").trim();
        let ns = target
            .split_once(':')
            .map(|(n, _)| n.trim().to_ascii_lowercase());
        let dropped = matches!(ns.as_deref(), Some("file" | "image" | "category" | "media"))
            || ns.as_deref().is_some_and(|n| {
                (2..=3).contains(&n.len()) && n.chars().all(|c| c.is_ascii_lowercase())
            });
        if !dropped {
            let label = body.rsplit('|').next().unwrap_or("");
            out.push_str(&links(if label.is_empty() { target } else { label }));
        }
        rest = &rest[i..];
    }
    out.push_str(rest);
    out
}

fn entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    s.replace("&nbsp;", " ")
        .replace("&ndash;", "–")
        .replace("&mdash;", "—")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_markup() {
        let src = "{{Infobox person|name=X {{nested|a}}}}'''Ada Lovelace''' was an \
                   [[England|English]] [[mathematician]].<ref name=\"a\">Cite {{cite}}</ref> \
                   See [http://example.org the site].<!-- hidden -->\n\n== Early life ==\n\
                   * Born in [[London]]&nbsp;in 1815.\n[[File:Ada.jpg|thumb|A [[portrait]]]]\n\
                   {| class=\"wikitable\"\n|-\n| cell\n|}\n[[Category:Mathematicians]]\n[[de:Ada]]";
        assert_eq!(
            strip_markup(src),
            "Ada Lovelace was an English mathematician. See the site.\n\nEarly life\n\n\
             Born in London in 1815."
        );
    }

    #[test]
    fn reads_pages() {
        let xml = r#"<mediawiki><page><title>A &amp; B</title><ns>0</ns><id>7</id>
            <revision><id>99</id><text>Hello [[world]].</text></revision></page>
            <page><title>R</title><ns>0</ns><id>8</id><redirect title="A"/>
            <revision><id>100</id><text>#REDIRECT [[A]]</text></revision></page>
            <page><title>Talk:A</title><ns>1</ns><id>9</id><revision><text>x</text></revision></page>
            </mediawiki>"#;
        let mut pages = Vec::new();
        for_each_page(xml.as_bytes(), |p| {
            pages.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(pages.len(), 3);
        assert_eq!(
            (pages[0].title.as_str(), pages[0].id.as_str()),
            ("A & B", "7")
        );
        let arts: Vec<_> = pages.iter().filter(|p| is_article(p)).collect();
        assert_eq!(arts.len(), 1);
        let d = page_doc(arts[0]);
        assert_eq!((d.id.as_str(), d.text.as_str()), ("wiki:7", "Hello world."));
        // A truncated dump is an error after the pages before the cut.
        let cut = &xml[..xml.find("<page><title>R").unwrap() + 20];
        let mut n = 0;
        let r = for_each_page(cut.as_bytes(), |_| {
            n += 1;
            Ok(())
        });
        assert_eq!(n, 1);
        let _ = r; // quick-xml reports a truncated document either as Eof or as an error
    }
}
