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
        let url = self
            .base
            .join(href)
            .map_err(|e| UcwaError::Malformed { url: href.to_string(), message: format!("not a usable href: {e}") })?;
        if self.same_origin(&url) {
            Ok(url)
        } else {
            Err(UcwaError::ForeignOrigin { href: href.to_string(), origin: self.as_str().to_string() })
        }
    }

    /// Makes an href absolute on this origin without the origin check (for display to scripts:
    /// documentation samples carry hrefs of other hosts, which stay as they are).
    pub fn absolute(&self, href: &str) -> String {
        match self.base.join(href) {
            Ok(u) => u.to_string(),
            Err(_) => href.to_string(),
        }
    }

    pub fn same_origin(&self, url: &Url) -> bool {
        url.scheme() == self.base.scheme()
            && url.host_str().map(str::to_ascii_lowercase) == self.base.host_str().map(str::to_ascii_lowercase)
            && url.port_or_known_default() == self.base.port_or_known_default()
    }
}

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
    fn loopback_hosts() {
        assert!(is_loopback(&Url::parse("http://127.0.0.5:80/").unwrap()));
        assert!(is_loopback(&Url::parse("http://[::1]/").unwrap()));
        assert!(is_loopback(&Url::parse("http://LocalHost/").unwrap()));
        assert!(!is_loopback(&Url::parse("http://10.0.0.1/").unwrap()));
    }
}
