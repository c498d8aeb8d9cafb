//! URL normalisation (the seen-set's key), the allow-list, and link extraction from HTML.

use url::Url;

/// The canonical form a URL is seen and fetched under: http(s) only, no fragment, lower-case
/// scheme and host, no default port (the `url` crate does those), `/` for an empty path, no
/// empty `?`, and percent-escapes upper-cased. `None` for other schemes (mailto:, javascript:).
pub fn normalize(u: &Url) -> Option<Url> {
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return None;
    }
    let mut u = u.clone();
    u.set_fragment(None);
    if u.query() == Some("") {
        u.set_query(None);
    }
    let path = upper_escapes(u.path());
    u.set_path(if path.is_empty() { "/" } else { &path });
    if let Some(q) = u.query().map(upper_escapes) {
        u.set_query(Some(&q));
    }
    Some(u)
}

/// Parses and normalises `s`, relative to `base` when given.
pub fn parse(s: &str, base: Option<&Url>) -> Option<Url> {
    let s = s.trim();
    let u = match base {
        Some(b) => b.join(s).ok()?,
        None => Url::parse(s).ok()?,
    };
    normalize(&u)
}

fn upper_escapes(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let (h, l) = (b[i + 1], b[i + 2]);
            if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() {
                out.push('%');
                out.push(h.to_ascii_uppercase() as char);
                out.push(l.to_ascii_uppercase() as char);
                i += 3;
                continue;
            }
        }
        // `i` is always on a char boundary: escapes are ASCII, the rest is stepped by char.
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

/// `host:port` — what politeness (delay, concurrency, robots.txt) is kept per.
pub fn host_key(u: &Url) -> String {
    format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.port_or_known_default().unwrap_or(0)
    )
}

/// The host without a leading `www.`: "same site" compares these.
pub fn site_of(u: &Url) -> String {
    let h = u.host_str().unwrap_or("").to_ascii_lowercase();
    h.strip_prefix("www.").map(str::to_string).unwrap_or(h)
}

/// Whether `host` is `domain` or a subdomain of it.
pub fn in_domain(host: &str, domain: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let domain = domain.trim_start_matches('.').to_ascii_lowercase();
    host == domain || host.ends_with(&format!(".{domain}"))
}

/// Links of an HTML page (`a`/`area` `href`, resolved against `<base href>` or the page URL),
/// normalised, in page order, `rel="nofollow"` ones left out.
pub fn links(html: &str, page: &Url) -> Vec<Url> {
    use scraper::{Html, Selector};
    let doc = Html::parse_document(html);
    let base_sel = Selector::parse("base[href]").expect("static selector");
    let base = doc
        .select(&base_sel)
        .next()
        .and_then(|b| b.value().attr("href"))
        .and_then(|h| page.join(h).ok())
        .unwrap_or_else(|| page.clone());
    let sel = Selector::parse("a[href], area[href]").expect("static selector");
    let mut out = Vec::new();
    for el in doc.select(&sel) {
        let nofollow = el.value().attr("rel").is_some_and(|r| {
            r.split_whitespace()
                .any(|t| t.eq_ignore_ascii_case("nofollow"))
        });
        if nofollow {
            continue;
        }
        if let Some(u) = el.value().attr("href").and_then(|h| parse(h, Some(&base))) {
            out.push(u);
        }
    }
    out
}

/// `<loc>` entries of a sitemap or sitemap index (XML, possibly with CDATA).
pub fn sitemap_locs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<loc>") {
        rest = &rest[i + 5..];
        let Some(j) = rest.find("</loc>") else { break };
        let v = rest[..j].trim();
        let v = v
            .strip_prefix("<![CDATA[")
            .and_then(|v| v.strip_suffix("]]>"))
            .unwrap_or(v);
        out.push(v.trim().replace("&amp;", "&"));
        rest = &rest[j + 6..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        parse(s, None).map(|u| u.to_string()).unwrap_or_default()
    }

    #[test]
    fn normalisation() {
        assert_eq!(
            n("HTTP://WWW.Iana.ORG:80/a%2fb?#frag"),
            "http://www.iana.org/a%2Fb"
        );
        assert_eq!(n("https://x.test"), "https://x.test/");
        assert_eq!(n("http://x.test/./a/../b?q=%7e"), "http://x.test/b?q=%7E");
        assert_eq!(n("mailto:a@b.c"), "");
        assert_eq!(n("javascript:void(0)"), "");
        assert_eq!(
            n("http://x.test/caf\u{e9}"),
            "http://x.test/caf%C3%A9",
            "non-ASCII is escaped"
        );
    }

    #[test]
    fn links_resolve_and_skip_nofollow() {
        let page = Url::parse("http://x.test/dir/page").unwrap();
        let html = r#"<a href="a">1</a><a href="/b#x">2</a><a rel="nofollow" href="c">3</a>
            <area href="http://y.test"><a href="mailto:m@x.test">m</a>"#;
        let got: Vec<String> = links(html, &page).iter().map(|u| u.to_string()).collect();
        assert_eq!(
            got,
            ["http://x.test/dir/a", "http://x.test/b", "http://y.test/"]
        );
        let based = r#"<base href="http://z.test/root/"><a href="q">q</a>"#;
        assert_eq!(links(based, &page)[0].as_str(), "http://z.test/root/q");
    }

    #[test]
    fn domains_and_sitemaps() {
        assert!(in_domain("www.iana.org", "iana.org"));
        assert!(!in_domain("notiana.org", "iana.org"));
        let u = Url::parse("http://www.iana.org/").unwrap();
        assert_eq!(site_of(&u), "iana.org");
        let xml = "<urlset><url><loc> http://a.test/x?a=1&amp;b=2 </loc></url>\
                   <url><loc><![CDATA[http://a.test/y]]></loc></url></urlset>";
        assert_eq!(
            sitemap_locs(xml),
            ["http://a.test/x?a=1&b=2", "http://a.test/y"]
        );
    }
}
