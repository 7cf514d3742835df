//! One event, as scripts see it, in a batch's one allocation.
//!
//! An event's strings (`rel`, `type`, the absolute `href`, …, and the event's JSON text exactly
//! as received) live one after another in a single stretch of bytes, behind a small table of
//! where each one is (`Packed`). Every event of a batch is packed into one buffer (the batch's
//! arena, shared by its events): at full speed a batch costs one allocation to build and one to
//! free, instead of one per event (and a shrink of each), or one per string before that. The
//! event's stretch is what a Lua event table keeps (copied into a Lua string) to fill in its
//! fields when a handler first reads them (`script::interop`), so nothing Rust-side has to
//! outlive the handler.

use serde_json::Value;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// The strings of an event, in the order of the packed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Field {
    /// `link.rel` (`audioVideoSession`, `conversation`, …), or `agent` for the agent's own events.
    Rel,
    /// `type`: added, updated, deleted, started, completed (or the agent's signedIn, resync, …).
    Kind,
    /// `link.href`, absolute.
    Href,
    Title,
    SenderRel,
    /// The sender's href, absolute.
    SenderHref,
    /// The enclosing conversation's href, when the event belongs to one.
    Conversation,
    /// `status` of a completed operation (`Success`, `Failure`).
    Status,
    /// The event object exactly as received (JSON text).
    Raw,
}

const FIELDS: usize = 9;
/// Per field: start and length (u32, little-endian) in the text after the header.
const HEADER: usize = FIELDS * 8;
const ABSENT: u32 = u32::MAX;
/// A header with every field absent, copied in at once (field by field cost 3 % of decoding).
const EMPTY_HEADER: [u8; HEADER] = {
    let mut h = [0u8; HEADER];
    let mut i = 0;
    while i < HEADER {
        h[i] = 0xff;
        h[i + 1] = 0xff;
        h[i + 2] = 0xff;
        h[i + 3] = 0xff;
        i += 8;
    }
    h
};

/// Builds a packed event at the end of a batch's arena: fields are appended (or pointed at
/// text already appended).
pub(crate) struct Packer<'b> {
    buf: &'b mut Vec<u8>,
    /// Where this event's stretch starts in the arena.
    base: usize,
}

impl<'b> Packer<'b> {
    /// The bytes an event of `text` bytes of strings takes in the arena.
    pub(crate) fn room(text: usize) -> usize {
        HEADER + text
    }

    /// `text` is a capacity hint for the strings.
    pub(crate) fn new(buf: &'b mut Vec<u8>, text: usize) -> Packer<'b> {
        let base = buf.len();
        buf.reserve(HEADER + text);
        buf.extend_from_slice(&EMPTY_HEADER);
        Packer { buf, base }
    }

    /// Appends `s` as the field.
    pub(crate) fn put(&mut self, field: Field, s: &str) {
        self.put_with(field, |buf| buf.extend_from_slice(s.as_bytes()));
    }

    /// Appends the field's text as `write` produces it (valid UTF-8).
    pub(crate) fn put_with(&mut self, field: Field, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        write(self.buf);
        self.set(field, start - self.base - HEADER, self.buf.len() - start);
    }

    /// The field is `len` bytes of text already appended, from `start` (relative to the text).
    pub(crate) fn point(&mut self, field: Field, start: usize, len: usize) {
        self.set(field, start, len);
    }

    /// Where a field is in the text, if set.
    pub(crate) fn span(&self, field: Field) -> Option<(usize, usize)> {
        span(&self.buf[self.base..], field)
    }

    /// A field set so far, as bytes (no UTF-8 check: it was a `str` when put).
    pub(crate) fn bytes(&self, field: Field) -> Option<&[u8]> {
        let (start, len) = self.span(field)?;
        self.buf.get(self.base + HEADER + start..self.base + HEADER + start + len)
    }

    fn set(&mut self, field: Field, start: usize, len: usize) {
        let at = self.base + field as usize * 8;
        self.buf[at..at + 4].copy_from_slice(&(start as u32).to_le_bytes());
        self.buf[at + 4..at + 8].copy_from_slice(&(len as u32).to_le_bytes());
    }

    /// The event's stretch of the arena.
    pub(crate) fn finish(self) -> Range<usize> {
        self.base..self.buf.len()
    }
}

fn span(packed: &[u8], field: Field) -> Option<(usize, usize)> {
    let at = field as usize * 8;
    let word = |i: usize| packed.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let start = word(at)?;
    (start != ABSENT).then_some((start as usize, word(at + 4)? as usize))
}

/// A field of a packed event (`None` when absent, or when the bytes are not a packed event).
pub fn packed_field(packed: &[u8], field: Field) -> Option<&str> {
    let (start, len) = span(packed, field)?;
    let bytes = packed.get(HEADER + start..HEADER + start + len)?;
    std::str::from_utf8(bytes).ok()
}

/// `_embedded.<rel>` of an event object: the resource the server sent with it.
pub fn embedded<'a>(raw: &'a Value, rel: &str) -> Option<&'a Value> {
    raw.get("_embedded").and_then(|e| e.get(rel))
}

/// One event, as scripts see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Its batch's packed events (`Packer`), shared.
    arena: Arc<Vec<u8>>,
    /// This event's stretch of it.
    at: Range<usize>,
    /// Delivery number, assigned by the journal in channel order.
    pub seq: u64,
    /// `raw` parsed, the first time something reads it.
    parsed: OnceLock<Value>,
    /// When the event was decoded (its delivery latency is measured from here).
    pub received: std::time::Instant,
}

impl Event {
    /// `received`: when its batch arrived (one clock read per batch, not per event).
    /// The event packed at `at` in `arena` (`Packer::finish`).
    pub(crate) fn in_arena(arena: Arc<Vec<u8>>, at: Range<usize>, received: std::time::Instant) -> Event {
        Event { arena, at, seq: 0, parsed: OnceLock::new(), received }
    }

    fn field(&self, f: Field) -> Option<&str> {
        let packed = self.packed();
        let (start, len) = span(packed, f)?;
        let bytes = packed.get(HEADER + start..HEADER + start + len)?;
        // SAFETY: an `Event`'s stretch is only made by `Packer`, from `&str`s and from writers
        // that append UTF-8 (hrefs), and every span starts and ends where one of those did: the
        // bytes are UTF-8. (Checking them again on every read was 3 % of the event path.)
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    }

    /// The packed form: what a Lua event table keeps for its fields read on demand.
    pub fn packed(&self) -> &[u8] {
        &self.arena[self.at.clone()]
    }

    pub fn rel(&self) -> &str {
        self.field(Field::Rel).unwrap_or("")
    }

    pub fn kind(&self) -> &str {
        self.field(Field::Kind).unwrap_or("")
    }

    pub fn href(&self) -> &str {
        self.field(Field::Href).unwrap_or("")
    }

    pub fn title(&self) -> Option<&str> {
        self.field(Field::Title)
    }

    pub fn sender_rel(&self) -> &str {
        self.field(Field::SenderRel).unwrap_or("")
    }

    pub fn sender_href(&self) -> &str {
        self.field(Field::SenderHref).unwrap_or("")
    }

    pub fn conversation(&self) -> Option<&str> {
        self.field(Field::Conversation)
    }

    pub fn status(&self) -> Option<&str> {
        self.field(Field::Status)
    }

    /// The event object as received, as JSON text.
    pub fn raw_text(&self) -> &str {
        self.field(Field::Raw).unwrap_or("null")
    }

    /// The event object as received, parsed (once).
    pub fn raw(&self) -> &Value {
        self.parsed.get_or_init(|| serde_json::from_str(self.raw_text()).unwrap_or(Value::Null))
    }

    /// The embedded resource (`_embedded.<rel>`), when the server sent one.
    pub fn resource(&self) -> Option<&Value> {
        embedded(self.raw(), self.rel())
    }

    /// The `reason` block (`{code, subcode, message}`) of a failed operation.
    pub fn reason(&self) -> Option<&Value> {
        self.raw().get("reason")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_may_point_into_each_other() {
        let mut arena = b"an event packed before".to_vec();
        let mut p = Packer::new(&mut arena, 64);
        p.put(Field::Rel, "audioVideoSession");
        p.put(Field::Kind, "added");
        p.put_with(Field::Href, |b| b.extend_from_slice(b"https://pool/c/7/av"));
        let (start, _) = p.span(Field::Href).unwrap();
        p.point(Field::Conversation, start, "https://pool/c/7".len());
        p.put(Field::Raw, "{\"type\":\"added\"}");
        let at = p.finish();
        let ev = Event::in_arena(Arc::new(arena), at, std::time::Instant::now());
        assert_eq!((ev.rel(), ev.kind(), ev.href()), ("audioVideoSession", "added", "https://pool/c/7/av"));
        assert_eq!(ev.conversation(), Some("https://pool/c/7"));
        assert_eq!((ev.title(), ev.status()), (None, None));
        assert_eq!(ev.raw()["type"], "added");
        assert_eq!(packed_field(b"short", Field::Rel), None, "bytes that are not an event read as absent");
    }
}
