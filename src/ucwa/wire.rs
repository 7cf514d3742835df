//! An event-channel response of the usual shape, validated and read in one pass: the
//! continuation links, each sender's `rel`/`href`, and each event's text with its head
//! (`link.rel`, `link.href`, `link.title`, `type`, `status`).
//!
//! Before, serde_json validated the body while taking each event's raw text, and then
//! `head::scan` walked every event's text a second time for its head. Together they were
//! about 40 % of the producer's time (BENCHMARKS.md, "One pass over the body").
//!
//! Its answer is serde's, or nothing. It accepts a body only when serde_json would decode it
//! the same way: valid UTF-8 and JSON (serde_json's grammar, nested at most 100 deep) and the shape
//! UCWA sends. That is an object with `_links` of link objects and `sender` as an object or an
//! array of objects, each with an `events` array. Every string it hands on has no escape, and
//! none of the members it reads appears twice. Anything else, including an error, returns
//! None, and the caller decodes the body with serde as before. So errors and edge cases stay
//! exactly serde's. The tests of `batch` hold it to that (`the_one_pass_reader_agrees_with_serde_*`).
//!
//! An event whose head has anything unusual (an escape, a member twice, a value of another
//! type) keeps its text with no head: the caller reads that head with `head::read`, as before.

use super::head::{Head, Link};
use std::borrow::Cow;

/// The parts of a response the agent reads.
#[derive(Debug, Default)]
pub(crate) struct Wire<'a> {
    pub next: Option<Cow<'a, str>>,
    pub resync: Option<Cow<'a, str>>,
    pub resume: Option<Cow<'a, str>>,
    pub senders: Vec<Sender<'a>>,
}

#[derive(Debug, Default)]
pub(crate) struct Sender<'a> {
    pub rel: Option<Cow<'a, str>>,
    pub href: Option<Cow<'a, str>>,
    pub events: Vec<RawEvent<'a>>,
}

/// What `Reader::link_or_string` read.
enum Read<'a> {
    Link(Link<'a>),
    Text(Cow<'a, str>),
    /// Valid, but serde's to read.
    Unusual,
}

/// One event's JSON text, and its head when read on the way.
#[derive(Debug)]
pub(crate) struct RawEvent<'a> {
    pub text: &'a str,
    pub head: Option<Head<'a>>,
}

/// Bounds the reader's own recursion. serde_json sets no limit on what it only skips (an
/// event's text, members nobody reads), so a deeper body is simply left to it.
const MAX_DEPTH: usize = 100;

/// The most senders and events one response may hold, together. UCWA's batches hold tens; a
/// body of a million one-byte events would cost many times its size to decode. The reader
/// leaves a body over it to serde (`batch::decode`), which refuses it with an error.
pub(crate) const MAX_ITEMS: usize = 100_000;

/// The response in `body`, or None where serde must decide (see the module's note).
pub(crate) fn read(body: &[u8]) -> Option<Wire<'_>> {
    let mut r = Reader { b: body, at: 0, depth: 0, items: MAX_ITEMS };
    let mut wire = Wire::default();
    let (mut links, mut sender) = (false, false);
    r.ws();
    r.object(|r, key, plain| match (key, plain) {
        (_, false) => None,
        (b"_links", _) => {
            first(&mut links)?;
            r.links(&mut wire)
        }
        (b"sender", _) => {
            first(&mut sender)?;
            wire.senders = r.senders()?;
            Some(())
        }
        _ => r.value(),
    })?;
    r.ws();
    (r.at == r.b.len()).then_some(wire)
}

/// Marks a member as seen; None the second time (serde refuses a duplicate field).
fn first(seen: &mut bool) -> Option<()> {
    (!std::mem::replace(seen, true)).then_some(())
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The lowest byte of `x` that is `"`, `\`, a control character or not ASCII, as a bit of its
/// high bits (exact for the lowest; higher ones may be false alarms, which are never looked at).
fn specials(x: u64) -> u64 {
    let zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    zero(x ^ (LO * b'"' as u64)) | zero(x ^ (LO * b'\\' as u64)) | (x.wrapping_sub(LO * 0x20) & !x & HI) | (x & HI)
}

/// The first position from `at` on that holds a `"`, a `\`, a control character or a byte that
/// is not ASCII, or else one of the last seven bytes (the caller looks at those one by one).
/// Sixteen bytes at a time with SSE2, then eight. (Sixteen first alone, then eight again from
/// where it stopped, made `Reader::string` slower, not faster: most strings are short keys.)
fn skip_ordinary(b: &[u8], mut at: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        while at + 16 <= b.len() {
            // SAFETY: SSE2 is part of x86_64; the load reads b[at..at + 16], inside `b`.
            let hit = unsafe {
                let x = _mm_loadu_si128(b.as_ptr().add(at).cast());
                let quote = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'"' as i8));
                let backslash = _mm_cmpeq_epi8(x, _mm_set1_epi8(b'\\' as i8));
                // Signed: bytes from 0x80 up are negative, so below 0x20 too.
                let low = _mm_cmplt_epi8(x, _mm_set1_epi8(0x20));
                _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), low))
            };
            if hit != 0 {
                return at + hit.trailing_zeros() as usize;
            }
            at += 16;
        }
    }
    while let Some(chunk) = b.get(at..at + 8) {
        let hit = specials(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        if hit != 0 {
            return at + (hit.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at
}

/// The body is read as bytes, and its UTF-8 checked on the way: outside strings the reader
/// takes only ASCII (JSON's structure, numbers and literals), and a string holding other bytes
/// is checked whole when it ends. So every text it hands on (a string, an event) is valid
/// UTF-8 once read, and the body need not be checked first (that pass was 5 % of decoding).
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
    depth: usize,
    /// How many more senders and events it takes (`MAX_ITEMS`).
    items: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    /// An object's members, `each(self, key, key_has_no_escape)` consuming each value.
    fn object(&mut self, mut each: impl FnMut(&mut Self, &'a [u8], bool) -> Option<()>) -> Option<()> {
        self.items(b'{', b'}', |r| {
            let (key, plain) = r.string()?;
            r.ws();
            if r.peek() != Some(b':') {
                return None;
            }
            r.at += 1;
            r.ws();
            each(r, key.as_bytes(), plain)
        })
    }

    /// An array's elements, `each(self)` consuming each.
    fn array(&mut self, each: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.items(b'[', b']', each)
    }

    /// The items between `open` and `close`, separated by commas, `item(self)` consuming each.
    /// The container's own depth is counted (its items may be containers).
    fn items(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.peek() != Some(open) {
            return None;
        }
        self.at += 1;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        if self.peek() == Some(close) {
            self.at += 1;
            self.depth -= 1;
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.ws();
                }
                c if c == close => {
                    self.at += 1;
                    self.depth -= 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string: its text between the quotes (escapes as written) and whether it has none.
    fn string(&mut self) -> Option<(&'a str, bool)> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.at + 1;
        let mut at = start;
        let mut plain = true;
        let mut ascii = true;
        loop {
            at = skip_ordinary(self.b, at);
            match *self.b.get(at)? {
                b'"' => {
                    self.at = at + 1;
                    if !ascii {
                        std::str::from_utf8(&self.b[start..at]).ok()?;
                    }
                    return Some((self.text(start, at), plain));
                }
                b'\\' => {
                    plain = false;
                    at += match *self.b.get(at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'u' if self.b.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                        _ => return None,
                    };
                }
                c if c < 0x20 => return None,
                c => {
                    ascii &= c < 0x80;
                    at += 1;
                }
            }
        }
    }

    /// The text of `b[start..end]`, which the reader has read: ASCII outside strings, and
    /// each string in it checked (see `Reader`).
    fn text(&self, start: usize, end: usize) -> &'a str {
        let bytes = &self.b[start..end];
        debug_assert!(std::str::from_utf8(bytes).is_ok(), "{start}..{end} of {:?}", String::from_utf8_lossy(self.b));
        // SAFETY: valid UTF-8, as the reader takes only ASCII outside strings and checks every
        // string that has any other byte before it ends (`string`), and `start..end` begins
        // and ends outside a string or at a string's quotes (ASCII).
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// A string without escapes (None for anything else, serde's to decode).
    fn plain(&mut self) -> Option<&'a str> {
        match self.string()? {
            (s, true) => Some(s),
            _ => None,
        }
    }

    /// Any one value, validated.
    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|r, _, _| r.value()),
            b'[' => self.array(Self::value),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.b.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    /// One digit or more.
    fn digits(&mut self) -> Option<()> {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        (self.at > start).then_some(())
    }

    /// `_links`: the first href of `next`, `resync` and `resume`, each a link object.
    fn links(&mut self, wire: &mut Wire<'a>) -> Option<()> {
        let mut seen = [false; 3];
        self.object(|r, key, plain| {
            let (slot, i) = match (key, plain) {
                (_, false) => return None,
                (b"next", _) => (&mut wire.next, 0),
                (b"resync", _) => (&mut wire.resync, 1),
                (b"resume", _) => (&mut wire.resume, 2),
                _ => return r.value(),
            };
            first(&mut seen[i])?;
            let mut href = false;
            r.object(|r, key, plain| match (key, plain) {
                (_, false) => None,
                (b"href", _) => {
                    first(&mut href)?;
                    *slot = Some(Cow::Borrowed(r.plain()?));
                    Some(())
                }
                _ => r.value(),
            })
        })
    }

    /// `sender`: one object or an array of them.
    fn senders(&mut self) -> Option<Vec<Sender<'a>>> {
        let mut all = Vec::new();
        if self.peek() == Some(b'{') {
            all.push(self.sender()?);
        } else {
            self.array(|r| {
                all.push(r.sender()?);
                Some(())
            })?;
        }
        Some(all)
    }

    /// One more sender or event, within `MAX_ITEMS`.
    fn count(&mut self) -> Option<()> {
        self.items = self.items.checked_sub(1)?;
        Some(())
    }

    fn sender(&mut self) -> Option<Sender<'a>> {
        self.count()?;
        let mut s = Sender::default();
        let mut seen = [false; 3];
        self.object(|r, key, plain| {
            match (key, plain) {
                (_, false) => return None,
                (b"rel", _) => {
                    first(&mut seen[0])?;
                    s.rel = Some(Cow::Borrowed(r.plain()?));
                }
                (b"href", _) => {
                    first(&mut seen[1])?;
                    s.href = Some(Cow::Borrowed(r.plain()?));
                }
                (b"events", _) => {
                    first(&mut seen[2])?;
                    r.array(|r| {
                        r.count()?;
                        let start = r.at;
                        let head = if r.peek() == Some(b'{') { r.event()? } else { r.value().map(|_| None)? };
                        s.events.push(RawEvent { text: r.text(start, r.at), head });
                        Some(())
                    })?;
                }
                _ => return r.value(),
            }
            Some(())
        })?;
        Some(s)
    }

    /// One event object, validated; Some(None) when its head is serde's to read.
    fn event(&mut self) -> Option<Option<Head<'a>>> {
        let mut head = Head::default();
        let member = |key: &[u8]| match key {
            b"link" => Some(0),
            b"type" => Some(1),
            b"status" => Some(2),
            _ => None,
        };
        let usual = self.known_members(member, |r, i| {
            match (i, r.link_or_string(i == 0)?) {
                (_, Read::Link(l)) => head.link = Some(l),
                (1, Read::Text(s)) => head.kind = Some(s),
                (_, Read::Text(s)) => head.status = Some(s),
                (_, Read::Unusual) => return Some(false),
            }
            Some(true)
        })?;
        Some(usual.then_some(head))
    }

    /// An event's `link` (a `{` next), validated; Some(None) when serde must read it.
    fn link(&mut self) -> Option<Option<Link<'a>>> {
        let mut link = Link::default();
        let member = |key: &[u8]| match key {
            b"rel" => Some(0),
            b"href" => Some(1),
            b"title" => Some(2),
            _ => None,
        };
        let usual = self.known_members(member, |r, i| {
            Some(match r.head_string()? {
                Some(s) => {
                    *[&mut link.rel, &mut link.href, &mut link.title][i] = Some(s);
                    true
                }
                None => false,
            })
        })?;
        Some(usual.then_some(link))
    }

    /// `link` (when `is_link`) or a head string.
    fn link_or_string(&mut self, is_link: bool) -> Option<Read<'a>> {
        Some(match is_link {
            true if self.peek() == Some(b'{') => self.link()?.map_or(Read::Unusual, Read::Link),
            true => self.value().map(|_| Read::Unusual)?,
            false => self.head_string()?.map_or(Read::Unusual, Read::Text),
        })
    }

    /// An object whose three members `member` knows (by their position) are read once each
    /// (`each(self, i)` consumes the value of member `i` and says whether it was usual); the
    /// others are validated. Some(false) when one of them was not usual, came twice, or a key
    /// had an escape (serde must read this object then); None when it is not valid JSON.
    /// (`member` is a `match`: its byte strings compare inline, where a slice of names was a
    /// `memcmp` call per key and name.)
    fn known_members(&mut self, member: impl Fn(&[u8]) -> Option<usize>, mut each: impl FnMut(&mut Self, usize) -> Option<bool>) -> Option<bool> {
        let mut usual = true;
        let mut seen = [false; 3];
        self.object(|r, key, plain| {
            usual &= plain;
            match member(key).filter(|_| plain) {
                Some(i) if !std::mem::replace(&mut seen[i], true) => {
                    usual &= each(r, i)?;
                    Some(())
                }
                Some(_) => {
                    usual = false;
                    r.value()
                }
                None => r.value(),
            }
        })?;
        Some(usual)
    }

    /// A head member's value: Some(Some) for a string without escapes, Some(None) for any
    /// other valid value (serde's to read), None for invalid JSON.
    fn head_string(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek() != Some(b'"') {
            return self.value().map(|_| None);
        }
        let (s, plain) = self.string()?;
        Some(plain.then_some(Cow::Borrowed(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::skip_ordinary;

    /// The first byte a string's scan must look at, one by one.
    fn naive(b: &[u8], at: usize) -> usize {
        (at..b.len()).find(|&i| matches!(b[i], b'"' | b'\\' | 0..0x20 | 0x80..)).unwrap_or(b.len())
    }

    #[test]
    fn the_wide_scan_stops_where_a_byte_by_byte_scan_would() {
        for len in 0..48 {
            for special in [b'"', b'\\', 0, 0x1f, 0x20, 0x7f, 0x80, 0xff, b'a'] {
                for pos in 0..len.max(1) {
                    let mut b = vec![b'x'; len];
                    if pos < len {
                        b[pos] = special;
                    }
                    for at in 0..=len {
                        let wide = skip_ordinary(&b, at);
                        let exact = naive(&b, at);
                        // Exact, or short of it within the last seven bytes (looked at one by one).
                        assert!(wide == exact || (wide < exact && b.len() - wide < 8), "len {len}, {special:#x} at {pos}, from {at}: {wide} vs {exact}");
                    }
                }
            }
        }
    }
}
