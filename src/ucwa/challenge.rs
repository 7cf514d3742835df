//! `WWW-Authenticate` parsing: several headers, several schemes per header, quoted or unquoted
//! parameter values with commas inside quotes (PROTOCOL.md §2).

/// One challenge: a scheme and its `name=value` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses every challenge of every given header value.
pub fn parse_all<'a>(headers: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    headers.into_iter().flat_map(parse).collect()
}

/// Parses one header value, which may hold several challenges.
pub fn parse(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        // A token followed by `=` is a parameter of the current challenge; otherwise a new scheme.
        let (token, after) = split_token(rest);
        let after_ws = after.trim_start();
        if let (Some(stripped), Some(current)) = (after_ws.strip_prefix('='), out.last_mut()) {
            let (val, remaining) = read_value(stripped.trim_start());
            current.params.push((token.to_string(), val));
            rest = skip_comma(remaining);
        } else if !token.is_empty() {
            out.push(Challenge { scheme: token.to_string(), params: Vec::new() });
            rest = skip_comma(after);
        } else {
            rest = skip_comma(&rest[1..]);
        }
    }
    out
}

fn split_token(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| c.is_whitespace() || c == '=' || c == ',').unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn read_value(s: &str) -> (String, &str) {
    if let Some(body) = s.strip_prefix('"') {
        let mut val = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(n);
                    }
                }
                '"' => return (val, &body[i + 1..]),
                c => val.push(c),
            }
        }
        (val, "")
    } else {
        let end = s.find(|c: char| c == ',' || c.is_whitespace()).unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

fn skip_comma(s: &str) -> &str {
    s.trim_start().trim_start_matches(',').trim_start()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_headers_quoted_and_unquoted() {
        let got = parse_all([
            r#"Bearer trusted_issuers="00000002-0000-0ff1-ce00-000000000000@contoso.com", client_id="00000004-0000-0ff1-ce00-000000000000""#,
            r#"MsRtcOAuth href="https://lyncweb.contoso.com/WebTicket/oauthtoken",grant_type="urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password""#,
        ]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].scheme, "MsRtcOAuth");
        assert_eq!(got[1].param("href"), Some("https://lyncweb.contoso.com/WebTicket/oauthtoken"));
        assert_eq!(got[1].param("grant_type"), Some("urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password"));
        let unquoted = parse("MsRtcOAuth href=https://pool/WebTicket/oauthtoken,grant_type=\"password\"");
        assert_eq!(unquoted[0].param("href"), Some("https://pool/WebTicket/oauthtoken"));
        let both = parse(r#"Bearer realm="x", MsRtcOAuth href="h",grant_type="password""#);
        assert_eq!(both.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["Bearer", "MsRtcOAuth"]);
    }
}
