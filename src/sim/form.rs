//! Form bodies as UCWA clients send them to the token endpoint: urlencoded or multipart
//! (PROTOCOL.md §7).

use std::collections::HashMap;

/// The fields of a form body, by its `Content-Type`.
pub(crate) fn fields(content_type: Option<&str>, body: &[u8]) -> HashMap<String, String> {
    let ct = content_type.unwrap_or("");
    if ct.to_ascii_lowercase().starts_with("multipart/form-data") {
        if let Some(boundary) = boundary(ct) {
            return multipart(&boundary, body);
        }
    }
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn boundary(ct: &str) -> Option<String> {
    ct.split(';').map(str::trim).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.eq_ignore_ascii_case("boundary").then(|| v.trim_matches('"').to_string())
    })
}

/// `--boundary\r\nContent-Disposition: form-data; name="x"\r\n\r\nvalue\r\n--boundary--`.
fn multipart(boundary: &str, body: &[u8]) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(body);
    let delimiter = format!("--{boundary}");
    let mut out = HashMap::new();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").or_else(|| part.strip_prefix('\n')).unwrap_or(part);
        let Some((head, value)) = part.split_once("\r\n\r\n").or_else(|| part.split_once("\n\n")) else { continue };
        let name = head.lines().find_map(|l| {
            let l = l.trim();
            l.to_ascii_lowercase()
                .starts_with("content-disposition:")
                .then(|| l.split(';').map(str::trim).find_map(|p| p.strip_prefix("name=").map(|n| n.trim_matches('"').to_string())))?
        });
        if let Some(name) = name {
            let value = value.strip_suffix("\r\n").or_else(|| value.strip_suffix('\n')).unwrap_or(value);
            out.insert(name, value.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_and_multipart() {
        let f = fields(Some("application/x-www-form-urlencoded;charset=UTF-8"), b"grant_type=password&username=a%40b.com&password=p%26q");
        assert_eq!((f["grant_type"].as_str(), f["username"].as_str(), f["password"].as_str()), ("password", "a@b.com", "p&q"));
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\npassword\r\n--XyZ\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\na@b.com\r\n--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nsecret\r\n--XyZ--\r\n";
        let f = fields(Some("multipart/form-data; boundary=XyZ"), body.as_bytes());
        assert_eq!((f["grant_type"].as_str(), f["username"].as_str(), f["password"].as_str()), ("password", "a@b.com", "secret"));
    }
}
