//! An event's head (`link.rel`, `link.href`, `link.title`, `type`, `status`) read straight from
//! its JSON text, which the batch's decoding has already validated: a walk over the top-level
//! members that jumps over every other value (`_embedded`, most of the event) with `memchr`
//! instead of decoding it. Decoding the text a second time with serde, as before, cost as much
//! as the first pass over the whole body.
//!
//! Anything unusual (an escape in a string it reads, a member twice, a value of another type)
//! returns None, and the caller decodes that event with serde as before, so errors and edge
//! cases stay exactly serde's.

use serde::Deserialize;
use std::borrow::Cow;

/// What the agent reads of an event before a script asks for more (also serde's target, for
/// the events `scan` leaves to it).
#[derive(Debug, Default, PartialEq, Deserialize)]
pub(crate) struct Head<'a> {
    #[serde(default, borrow)]
    pub link: Option<Link<'a>>,
    #[serde(rename = "type", default, borrow)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub status: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, PartialEq, Deserialize)]
pub(crate) struct Link<'a> {
    #[serde(default, borrow)]
    pub rel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub href: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub title: Option<Cow<'a, str>>,
}

/// An event's head: `scan`, or serde where `scan` leaves it (its error says what is wrong).
pub(crate) fn read(text: &str) -> Result<Head<'_>, serde_json::Error> {
    match scan(text) {
        Some(h) => Ok(h),
        None => serde_json::from_str(text),
    }
}

/// The head of a valid JSON object's text; None when the caller should decode it with serde.
pub(crate) fn scan(text: &str) -> Option<Head<'_>> {
    let mut s = Scanner { b: text.as_bytes(), at: 0 };
    let mut head = Head::default();
    s.members(|s, key| {
        match key {
            b"link" => {
                let mut link = Link::default();
                s.members(|s, key| {
                    match key {
                        b"rel" => once(&mut link.rel, s.string(text)?)?,
                        b"href" => once(&mut link.href, s.string(text)?)?,
                        b"title" => once(&mut link.title, s.string(text)?)?,
                        _ => s.skip()?,
                    }
                    Some(())
                })?;
                if head.link.replace(link).is_some() {
                    return None;
                }
            }
            b"type" => once(&mut head.kind, s.string(text)?)?,
            b"status" => once(&mut head.status, s.string(text)?)?,
            _ => s.skip()?,
        }
        Some(())
    })?;
    Some(head)
}

/// Sets a member seen for the first time (serde refuses a duplicate: so does the caller then).
fn once<'a>(slot: &mut Option<Cow<'a, str>>, v: &'a str) -> Option<()> {
    slot.replace(Cow::Borrowed(v)).is_none().then_some(())
}

struct Scanner<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while self.at < self.b.len() && matches!(self.b[self.at], b' ' | b'\n' | b'\r' | b'\t') {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.at) == Some(&c)).then(|| self.at += 1)
    }

    /// An object's members: `each(self, key)` must consume the value.
    fn members(&mut self, mut each: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.ws();
            let key = self.raw_string()?;
            self.eat(b':')?;
            self.ws();
            each(self, key)?;
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    /// A string without escapes, as bytes of the text (None for an escape: serde decodes it).
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        if self.b.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        let len = memchr::memchr2(b'"', b'\\', &self.b[start..])?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        Some(&self.b[start..start + len])
    }

    /// A string value, borrowed from `text` (None for another type or an escape).
    fn string(&mut self, text: &'a str) -> Option<&'a str> {
        let start = self.at + 1;
        let raw = self.raw_string()?;
        // On char boundaries: the quotes are ASCII.
        text.get(start..start + raw.len())
    }

    /// Jumps over one value of valid JSON.
    fn skip(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            let c = *self.b.get(self.at)?;
            match c {
                b'"' => {
                    self.at += 1;
                    loop {
                        let i = memchr::memchr2(b'"', b'\\', &self.b[self.at..])?;
                        if self.b[self.at + i] == b'\\' {
                            self.at += i + 2;
                        } else {
                            self.at += i + 1;
                            break;
                        }
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.at += 1;
                }
                b'}' | b']' => {
                    depth = depth.checked_sub(1)?;
                    self.at += 1;
                }
                b',' | b' ' | b'\n' | b'\r' | b'\t' | b':' => self.at += 1,
                // A number, true, false or null.
                _ => {
                    while self.at < self.b.len() && !matches!(self.b[self.at], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                        self.at += 1;
                    }
                }
            }
            if depth == 0 {
                // A scalar or a closed container; a separator at depth 0 ends nothing yet.
                if !matches!(c, b',' | b' ' | b'\n' | b'\r' | b'\t' | b':') {
                    return Some(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(s))
    }

    #[test]
    fn the_head_is_read_and_everything_else_jumped_over() {
        let text = r#"{ "_embedded": {"x": [1, -2.5e3, true, null, {"a": "}\"{"}], "y": "\\"},
            "link" : {"title": "T", "rel":"audioVideoSession","extra":[[]],"href":"/a/1"}, "n": 12, "type":"updated","status":"Success" }"#;
        let h = scan(text).unwrap();
        assert_eq!(h.link, Some(Link { rel: b("audioVideoSession"), href: b("/a/1"), title: b("T") }));
        assert_eq!((h.kind, h.status), (b("updated"), b("Success")));
        assert_eq!(scan("{}").unwrap(), Head::default());
        assert_eq!(scan(r#"{"link":{}}"#).unwrap().link, Some(Link::default()));
    }

    #[test]
    fn what_serde_must_decide_is_left_to_it() {
        for text in [
            r#"{"type":"a\"b"}"#,
            r#"{"type":7}"#,
            r#"{"type":"a","type":"b"}"#,
            r#"{"link":{"rel":"a"},"link":{"rel":"b"}}"#,
            r#"{"link":[]}"#,
            r#"{"link":{"rel":null}}"#,
            r#"{"li\nk":{}}"#,
            "7",
        ] {
            assert_eq!(scan(text), None, "{text}");
        }
    }
}
