//! The pool origin: every UCWA href is resolved against it, and the session (bearer token) is
//! only ever sent to it (PROTOCOL.md §4, last point).

use super::UcwaError;
use url::Url;

/// `scheme://host:port` of the pool the agent signed into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    base: Url,
}

impl Origin {
    /// The origin of `url` (path, query and fragment dropped).
    pub fn of(url: &Url) -> Origin {
        let mut base = url.clone();
        base.set_path("/");
        base.set_query(None);
        base.set_fragment(None);
        let _ = base.set_username("");
        let _ = base.set_password(None);
        Origin { base }
    }

    /// `http://127.0.0.1:1234` (no trailing slash).
    pub fn as_str(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Resolves a UCWA href (relative, or absolute on this origin) to a URL on this origin.
    pub fn resolve(&self, href: &str) -> Result<Url, UcwaError> {
        let url = self.base.join(href).map_err(|e| UcwaError::Malformed { url: href.to_string(), message: format!("not a usable href: {e}") })?;
        // `user:password@` in an href would become `Authorization: Basic` in place of the
        // token (and the pool's 401 would make the agent discard a valid token).
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UcwaError::Malformed {
                url: "[an href with user:password@]".into(),
                message: "hrefs with credentials (user:password@host) are refused".into(),
            });
        }
        if self.same_origin(&url) {
            Ok(url)
        } else {
            Err(UcwaError::ForeignOrigin { href: href.to_string(), origin: self.as_str().to_string() })
        }
    }

    /// Makes an href absolute on this origin without the origin check (for display to scripts:
    /// documentation samples carry hrefs of other hosts, which stay as they are).
    pub fn absolute(&self, href: &str) -> String {
        let mut out = Vec::with_capacity(self.as_str().len() + href.len());
        self.absolute_into(href, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// `absolute`, appended to `out` (UTF-8); whether `href` was a plain path. Plain
    /// origin-relative paths, which is what UCWA sends, are joined by concatenation:
    /// `Url::join` gives the same text for them, and costs more than the rest of decoding an
    /// event.
    pub fn absolute_into(&self, href: &str, out: &mut Vec<u8>) -> bool {
        if is_plain_path(href) {
            self.join_plain(href, out);
            return true;
        }
        match self.base.join(href) {
            Ok(u) => out.extend_from_slice(u.as_str().as_bytes()),
            Err(_) => out.extend_from_slice(href.as_bytes()),
        }
        false
    }

    /// `absolute_into` for an event's href, given its sender's href when that is a plain path
    /// (`plain_sender`). The usual event's href is its sender's followed by `/…`, and then only
    /// what follows needs looking at: a plain path followed by a plain path is one.
    pub(crate) fn absolute_under_into(&self, plain_sender: Option<&str>, href: &str, out: &mut Vec<u8>) {
        let under = |s: &str| s.len() >= 2 && href.as_bytes().get(s.len()) == Some(&b'/') && href.starts_with(s) && is_plain_path(&href[s.len()..]);
        if plain_sender.is_some_and(under) {
            self.join_plain(href, out);
            return;
        }
        self.absolute_into(href, out);
    }

    /// A plain path (`is_plain_path`) on this origin: the two texts one after the other.
    fn join_plain(&self, href: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_str().as_bytes());
        out.extend_from_slice(href.as_bytes());
    }

    pub fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str().map(str::to_ascii_lowercase) == self.base.host_str().map(str::to_ascii_lowercase)
            && url.port_or_known_default() == self.base.port_or_known_default()
    }
}

/// An href that `Url::join` would append to the origin unchanged: starts with one `/`, only
/// characters it never escapes or rewrites, and no `.`/`..` segment in the path (nor `%2e`,
/// which the URL parser reads as a dot). One pass over the bytes.
fn is_plain_path(href: &str) -> bool {
    let b = href.as_bytes();
    if b.first() != Some(&b'/') || b.get(1) == Some(&b'/') {
        return false;
    }
    let dot_segment = |seg: &[u8]| seg == b"." || seg == b"..";
    let mut segment_start = 1;
    for i in 1..b.len() {
        // One table read per byte: most bytes are letters and digits, on to the next (a
        // `match` alone compiles to a jump through a table for every byte).
        let class = CLASS[b[i] as usize];
        if class == ORDINARY {
            continue;
        }
        match class {
            SLASH => {
                if dot_segment(&b[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            QUERY => return !dot_segment(&b[segment_start..i]) && b[i..].iter().all(|&c| CLASS[c as usize] != REWRITTEN),
            PERCENT if b.get(i + 1) == Some(&b'2') && b.get(i + 2).is_some_and(|e| e.eq_ignore_ascii_case(&b'e')) => return false,
            PERCENT => {}
            _ => return false,
        }
    }
    !dot_segment(&b[segment_start..])
}

const ORDINARY: u8 = 0;
const SLASH: u8 = 1;
const QUERY: u8 = 2;
const PERCENT: u8 = 3;
const REWRITTEN: u8 = 4;

/// What each byte is to `is_plain_path`: one of the plain bytes (`PLAIN`), told apart where
/// it must look closer, or one that `Url` escapes or rewrites.
const CLASS: [u8; 256] = {
    let mut t = [REWRITTEN; 256];
    let mut c = 0;
    while c < 256 {
        if PLAIN[c] {
            t[c] = match c as u8 {
                b'/' => SLASH,
                b'?' => QUERY,
                b'%' => PERCENT,
                _ => ORDINARY,
            };
        }
        c += 1;
    }
    t
};

/// The bytes `Url` keeps as they are in a path or query.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric()
            || matches!(b, b'/' | b'?' | b'%' | b'-' | b'_' | b'.' | b'~' | b'=' | b'&' | b'+' | b',' | b';' | b':' | b'@' | b'!' | b'$' | b'*' | b'(' | b')');
        c += 1;
    }
    t
};

/// Whether a URL's host is a loopback address (`localhost`, 127.0.0.0/8, `[::1]`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_and_refuses_other_origins() {
        let o = Origin::of(&Url::parse("https://lyncweb.contoso.com/Autodiscover/x?y=1").unwrap());
        assert_eq!(o.as_str(), "https://lyncweb.contoso.com");
        assert_eq!(o.resolve("/ucwa/oauth/v1/applications").unwrap().as_str(), "https://lyncweb.contoso.com/ucwa/oauth/v1/applications");
        assert!(o.resolve("https://LYNCWEB.contoso.com:443/ucwa").is_ok());
        assert!(matches!(o.resolve("https://evil.example/ucwa"), Err(UcwaError::ForeignOrigin { .. })));
        assert!(matches!(o.resolve("http://lyncweb.contoso.com/ucwa"), Err(UcwaError::ForeignOrigin { .. })));
        assert!(matches!(o.resolve("//evil.example/x"), Err(UcwaError::ForeignOrigin { .. })));
    }

    #[test]
    fn absolute_is_what_url_join_gives() {
        let o = Origin::of(&Url::parse("https://pool.contoso.com:4443/x").unwrap());
        for href in [
            "/ucwa/oauth/v1/applications/10672188130/communication/conversations/7/audioVideo/audioVideoSession",
            "/ucwa/oauth/v1/applications/1/events?ack=2&priority=1",
            "/a/b%20c/d?x=%41",
            "/a/./b",
            "/a/../b",
            "/a/%2e%2e/b",
            "/a/.%2E/b",
            "/a/b c",
            "/a/\\b",
            "/a/b#frag",
            "/a/b?q=a'b",
            "/a/b?q=a\"b",
            "/a/é",
            "//evil.example/x",
            "relative/path",
            "https://other.example/y",
            "/",
            "/a/b?c/./d",
            "/a/b.json",
            "/a/...",
            "/a/b/.",
            "/a/b/..",
            "/a/b/..?x=1",
            "/.",
            "/..",
            "/a%2E/b",
            "/a/b?x=%2e/../y",
            "/a/b?x=é",
            "/a//b",
            "/a/b?",
        ] {
            assert_eq!(o.absolute(href), o.base.join(href).unwrap().to_string(), "{href}");
        }
        // Every ASCII character, in the path and in the query.
        for c in (0u8..0x80).map(char::from) {
            for href in [format!("/a{c}/b"), format!("/a/b?q{c}=1"), format!("/a/{c}")] {
                assert_eq!(o.absolute(&href), o.base.join(&href).unwrap().to_string(), "{href:?}");
            }
        }
        assert!(is_plain_path("/ucwa/oauth/v1/applications/1/events?ack=2"));
    }

    #[test]
    fn an_href_under_its_senders_is_made_absolute_as_on_its_own() {
        let o = Origin::of(&Url::parse("https://pool.contoso.com/").unwrap());
        let hrefs = ["/", "/a", "/a/", "/a/b", "/a/b/", "/a/.", "/a/..", "/a/b?x=1", "/a?x", "/a?x/./y", "/a/%2e", "/a%2E", "/a/b c", "/a/é", "//x", "/a//b"];
        let tails = ["", "/", "//", "/c", "/./c", "/../c", "/.", "/..", "/%2e/c", "/c?d=./e", "/c d", "/c/é", "/c#f", "?x", "x", "/c/.%2E"];
        for sender in hrefs {
            let mut s = Vec::new();
            let plain_sender = o.absolute_into(sender, &mut s).then_some(sender);
            for tail in tails {
                let href = format!("{sender}{tail}");
                let mut under = Vec::new();
                o.absolute_under_into(plain_sender, &href, &mut under);
                assert_eq!(String::from_utf8(under).unwrap(), o.absolute(&href), "{href:?} under {sender:?}");
            }
            // Every ASCII character after the sender's href, as the test above does.
            for c in (0u8..0x80).map(char::from) {
                let href = format!("{sender}/x{c}y");
                let mut under = Vec::new();
                o.absolute_under_into(plain_sender, &href, &mut under);
                assert_eq!(String::from_utf8(under).unwrap(), o.absolute(&href), "{href:?} under {sender:?}");
            }
        }
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback(&Url::parse("http://127.0.0.5:80/").unwrap()));
        assert!(is_loopback(&Url::parse("http://[::1]/").unwrap()));
        assert!(is_loopback(&Url::parse("http://LocalHost/").unwrap()));
        assert!(!is_loopback(&Url::parse("http://10.0.0.1/").unwrap()));
    }
}
