//! Random bodies through both decoding paths (`batch::parse_by` with and without the one-pass
//! reader): where the reader takes a body, serde takes it too and reads the same links,
//! senders, event texts and heads, and every text handed on is UTF-8. A fixed seed, so that a
//! failure comes back with the same round; `UCWA_WIRE_FUZZ_ROUNDS` and `UCWA_WIRE_FUZZ_SEED` run
//! more or other rounds (in release: `cargo test --release --lib fuzz`).

use super::tests::{origin, outcome, samples};
use super::*;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

/// Bytes JSON gives meaning to, whitespace serde does and does not take, and bytes that
/// are not ASCII: valid UTF-8 pieces, a BOM's, and ones never valid (`\xc0`, `\xf5`, `\xff`).
const FUZZ_BYTES: &[u8] =
    b"\"\\{}[],:0123456789-+.eEtrufalsn /ux \t\r\n\x0b\x0c\x00\x01\x1f\x7f\x80\xbf\xc0\xc2\xa9\xe2\x82\xac\xed\xa0\xf0\x9d\x84\x9e\xf4\x90\xf5\xff\xef\xbb";

/// Escapes (`\u` in both cases, surrogate pairs, lone halves, bad ones), non-ASCII text,
/// numbers serde takes and refuses, and the members the reader looks for, some escaped.
const FUZZ_PIECES: &[&str] = &[
    r"\u00e9",
    r"\u00E9",
    r"\uD834\uDD1E",
    r"\ud834\udd1e",
    r"\ud800",
    r"\uDC00",
    r"\u0000",
    r"\uZZZZ",
    r"\u12",
    r"\/",
    r#"\""#,
    r"\\",
    r"\n",
    "é",
    "€",
    "𝄞",
    "\u{feff}",
    "\u{a0}",
    "\u{2028}",
    "null",
    "true",
    "false",
    "-0",
    "0.5e-3",
    "1E+9",
    "-",
    "01",
    "1.",
    ".5",
    "1e",
    "+1",
    "NaN",
    "[]",
    "{}",
    "[[[]]]",
    r#"{"a":{}}"#,
    ",",
    ":",
    r#""link":"#,
    r#""rel":"#,
    r#""href":"#,
    r#""title":"#,
    r#""type":"#,
    r#""status":"#,
    r#""_links":"#,
    r#""sender":"#,
    r#""events":"#,
    r#""next":"#,
    r#""resync":"#,
    r#""resume":"#,
    r#"{"href":"/h"}"#,
    r#"{"rel":"r","href":"/h"}"#,
    r#","link":{"rel":"x"}"#,
    r#","type":"t""#,
    r#","status":"s""#,
    r#","rel":"s""#,
    r#","href":"/s""#,
    r#","events":[]"#,
    r#","_links":{"next":{"href":"/n2"}}"#,
    r#","sender":[]"#,
    r#","resync":{"href":"/r"}"#,
    r#","resume":{"href":"/r"}"#,
    r#""typ\u0065""#,
    r#""l\u0069nk""#,
    r#""_l\u0069nks""#,
    r#""r\u0065l""#,
];

/// One to four edits of `b`: a byte inserted, removed or replaced, a piece inserted, a
/// piece of `other` spliced in, a stretch removed or repeated (members twice), or the end cut.
fn mutate(r: &mut Rng, b: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + r.below(4) {
        let at = r.below(b.len() + 1);
        let inside = at < b.len();
        match r.below(9) {
            0 => b.insert(at, r.pick(FUZZ_BYTES)),
            1 if inside => drop(b.remove(at)),
            2 if inside => b[at] = r.pick(FUZZ_BYTES),
            3 if inside => b[at] = r.next() as u8,
            4 => drop(b.splice(at..at, r.pick(FUZZ_PIECES).bytes())),
            5 if !other.is_empty() => {
                let from = r.below(other.len());
                let to = (from + 1 + r.below(64)).min(other.len());
                drop(b.splice(at..at, other[from..to].iter().copied()));
            }
            6 if inside => drop(b.drain(at..(at + 1 + r.below(16)).min(b.len()))),
            7 if inside => {
                let end = (at + 1 + r.below(48)).min(b.len());
                let piece = b[at..end].to_vec();
                drop(b.splice(end..end, piece));
            }
            8 => b.truncate(at),
            _ => b.push(r.pick(FUZZ_BYTES)),
        }
    }
}

/// Random JSON of the batch's shape: mostly the members the reader looks for, with other
/// members and values, escapes and non-ASCII text, whitespace, and deep nesting now and then.
struct Gen<'r> {
    r: &'r mut Rng,
    out: String,
}

impl Gen<'_> {
    fn ws(&mut self) {
        for _ in 0..[0, 0, 0, 1, 2][self.r.below(5)] {
            let c = self.r.pick(&[' ', '\n', '\r', '\t']);
            self.out.push(c);
        }
    }
    fn string(&mut self) {
        self.out.push('"');
        for _ in 0..self.r.below(6) {
            let s = match self.r.below(12) {
                0 => self.r.pick(&[r"\u00e9", r"\u00E9", r"\uD834\uDD1E", r"\ud800", r"\uDC00", r#"\""#, r"\\", r"\/", r"\t", r"\b"]),
                1 => self.r.pick(&["é", "€", "𝄞", "\u{7f}", "\u{80}", "\u{feff}"]),
                _ => self.r.pick(&["a", "/x", "?ack=1", " ", "abcdefgh", "rel", "0123456789abcdef"]),
            };
            self.out.push_str(s);
        }
        self.out.push('"');
    }
    fn list(&mut self, most: usize, mut each: impl FnMut(&mut Self)) {
        self.out.push('[');
        for i in 0..self.r.below(most + 1) {
            if i > 0 {
                self.out.push(',');
            }
            self.ws();
            each(self);
            self.ws();
        }
        self.out.push(']');
    }
    /// An object of `usual` members mostly (each value by `each`, with the key), others now and then.
    fn object(&mut self, usual: &[&str], mut each: impl FnMut(&mut Self, Option<&str>)) {
        self.out.push('{');
        for i in 0..self.r.below(usual.len() + 3) {
            if i > 0 {
                self.out.push(',');
            }
            self.ws();
            let key = match self.r.below(8) {
                0 => None,
                1 => Some(self.r.pick(&[r"typ\u0065", r"l\u0069nk", r"_l\u0069nks", r"r\u0065l", r"\ud800", "x", "_embedded", "é"])),
                _ if usual.is_empty() => None,
                _ => Some(self.r.pick(usual)),
            };
            match key {
                Some(k) => self.out.extend(['"'.to_string(), k.to_string(), '"'.to_string()]),
                None => self.string(),
            }
            self.ws();
            self.out.push(':');
            self.ws();
            each(self, key.filter(|k| usual.contains(k)));
            self.ws();
        }
        self.out.push('}');
    }
    fn value(&mut self, depth: usize) {
        match self.r.below(if depth > 5 { 6 } else { 8 }) {
            0 | 1 => self.string(),
            2 => {
                let n = self.r.pick(&["0", "-0", "1", "-12", "3.25", "1e5", "1E-5", "-0.0e+0", "123456789012345678901234567890", "1e999", "01", "-", "1.e5"]);
                self.out.push_str(n);
            }
            3 => {
                let w = self.r.pick(&["true", "false", "null"]);
                self.out.push_str(w);
            }
            4 if self.r.below(20) == 0 => {
                let n = self.r.pick(&[98, 99, 100, 101, 127, 128, 129]);
                self.out.push_str(&format!("{}{}", "[".repeat(n), "]".repeat(n)));
            }
            4 | 5 => self.string(),
            6 => self.object(&[], |g, _| g.value(depth + 1)),
            _ => self.list(3, |g| g.value(depth + 1)),
        }
    }
    /// A head member's value: a string mostly.
    fn head(&mut self) {
        if self.r.below(6) == 0 {
            self.value(3)
        } else {
            self.string()
        }
    }
    fn event(&mut self) {
        if self.r.below(10) == 0 {
            return self.value(3);
        }
        self.object(&["link", "type", "status", "_embedded"], |g, k| match k {
            Some("link") if g.r.below(6) != 0 => g.object(&["rel", "href", "title"], |g, k| if k.is_some() { g.head() } else { g.value(4) }),
            Some("type" | "status") => g.head(),
            _ => g.value(2),
        })
    }
    fn sender(&mut self) {
        self.object(&["rel", "href", "events"], |g, k| match k {
            Some("rel" | "href") => g.head(),
            Some(_) if g.r.below(8) != 0 => g.list(3, Self::event),
            _ => g.value(2),
        })
    }
    fn batch(&mut self) {
        self.ws();
        self.object(&["_links", "sender"], |g, k| match k {
            Some("_links") => g.object(&["next", "resync", "resume", "self"], |g, k| match k {
                Some(_) if g.r.below(8) != 0 => g.object(&["href"], |g, k| if k.is_some() { g.head() } else { g.value(3) }),
                _ => g.value(2),
            }),
            Some(_) => match g.r.below(10) {
                0..=2 => g.sender(),
                3 => g.value(1),
                _ => g.list(2, Self::sender),
            },
            None => g.value(1),
        });
        self.ws();
    }
}

/// Where the one-pass reader takes a body, serde takes it too and reads the same links,
/// senders, event texts and heads, and every text is UTF-8; and `parse` is the same both ways.
/// Whether the reader took it.
fn agree(body: &[u8]) -> bool {
    assert_eq!(outcome(body, true), outcome(body, false), "{:?}", String::from_utf8_lossy(body));
    let bytes = strip_bom(body);
    // `head::scan` is on both paths, so `outcome` cannot tell it from serde: checked here.
    if let Some(s) = std::str::from_utf8(bytes).ok().and_then(|t| decode(t).ok()) {
        for e in s.senders.iter().flat_map(|s| &s.events) {
            if let Some(head) = crate::ucwa::head::scan(e.text) {
                assert_eq!(Some(head), serde_json::from_str(e.text).ok(), "{}", e.text);
            }
        }
    }
    let Some(w) = crate::ucwa::wire::read(bytes) else { return false };
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("taken, but {e}: {body:?}"));
    let s = decode(text).unwrap_or_else(|e| panic!("taken, but serde says {e}: {text}"));
    assert_eq!((&w.next, &w.resync, &w.resume), (&s.next, &s.resync, &s.resume), "{text}");
    assert_eq!(w.senders.len(), s.senders.len(), "{text}");
    for (a, b) in w.senders.iter().zip(&s.senders) {
        assert_eq!((&a.rel, &a.href), (&b.rel, &b.href), "{text}");
        let (ta, tb): (Vec<&str>, Vec<&str>) = (a.events.iter().map(|e| e.text).collect(), b.events.iter().map(|e| e.text).collect());
        assert_eq!(ta, tb, "{text}");
        for e in &a.events {
            assert!(std::str::from_utf8(e.text.as_bytes()).is_ok());
            if let Some(head) = &e.head {
                let serde: crate::ucwa::head::Head = serde_json::from_str(e.text).unwrap_or_else(|err| panic!("head taken, but {err}: {}", e.text));
                assert_eq!(head, &serde, "{}", e.text);
            }
        }
    }
    for t in [&w.next, &w.resync, &w.resume].into_iter().flatten() {
        assert!(std::str::from_utf8(t.as_bytes()).is_ok());
    }
    // Each event's fields as the agent hands them on (unchecked) and checked again.
    for e in parse_by(body, &origin(), true).map(|b| b.events).unwrap_or_default() {
        let fields = [
            (Field::Rel, e.rel(), ""),
            (Field::Kind, e.kind(), ""),
            (Field::Href, e.href(), ""),
            (Field::Title, e.title().unwrap_or(""), ""),
            (Field::SenderRel, e.sender_rel(), ""),
            (Field::SenderHref, e.sender_href(), ""),
            (Field::Conversation, e.conversation().unwrap_or(""), ""),
            (Field::Status, e.status().unwrap_or(""), ""),
            (Field::Raw, e.raw_text(), "null"),
        ];
        for (f, got, absent) in fields {
            assert_eq!(packed_field(e.packed(), f).unwrap_or(absent), got, "{f:?} of {text}");
        }
    }
    true
}

/// The samples changed at random, and random batches as they are and changed.
#[test]
fn the_one_pass_reader_agrees_with_serde_on_random_bodies() {
    let samples = samples();
    let rounds = std::env::var("UCWA_WIRE_FUZZ_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(5000);
    let seed = std::env::var("UCWA_WIRE_FUZZ_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(0x5eed_f00d);
    let mut r = Rng(seed | 1);
    let (mut taken, mut all) = (0, 0);
    for _ in 0..rounds {
        let mut body = samples[r.below(samples.len())].clone();
        let other = samples[r.below(samples.len())].clone();
        mutate(&mut r, &mut body, &other);
        let mut g = Gen { r: &mut r, out: String::new() };
        g.batch();
        let random = g.out.into_bytes();
        let mut changed = random.clone();
        mutate(&mut r, &mut changed, &other);
        for b in [&body, &random, &changed] {
            taken += agree(b) as usize;
            all += 1;
        }
    }
    // Else this compares serde with itself.
    assert!(taken * 10 > all, "the reader took {taken} of {all} bodies");
}
