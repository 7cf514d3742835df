//! JSON made from script values with a size bound. The text is built in Rust, outside Lua's
//! allocator: without a bound, one `agent.json.encode` of a table holding the same 1 MB string
//! 4,000 times asks for 4 GB and aborts the process. The bound also bounds the time (a table
//! that holds its subtables twice, level after level, doubles per level).

use mlua::Lua;
use serde::Serialize;

/// A `Write` that refuses to grow past `limit` bytes.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.limit {
            return Err(std::io::Error::other(TOO_BIG));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const TOO_BIG: &str = "too big";

/// Compact JSON, but a Lua string that is not UTF-8 (which mlua gives as bytes, and serde_json
/// would write as a list of numbers: `"caf\xe9"` as `[99,97,102,233]`) is written as a string,
/// each byte that is not UTF-8 replaced by U+FFFD: a webhook gets text where it expects text.
struct Text;

impl serde_json::ser::Formatter for Text {
    fn write_byte_array<W: ?Sized + std::io::Write>(&mut self, writer: &mut W, value: &[u8]) -> std::io::Result<()> {
        serde_json::to_writer(writer, &String::from_utf8_lossy(value)).map_err(std::io::Error::other)
    }
}

/// `v` as JSON text of at most `limit` bytes; `Err(None)` when it would be longer.
pub(crate) fn json_within<T: Serialize + ?Sized>(v: &T, limit: usize) -> Result<String, Option<String>> {
    let mut w = Bounded { buf: Vec::new(), limit };
    match v.serialize(&mut serde_json::Serializer::with_formatter(&mut w, Text)) {
        Ok(()) => Ok(String::from_utf8(w.buf).unwrap_or_default()),
        Err(e) if e.is_io() => Err(None),
        Err(e) => Err(Some(e.to_string())),
    }
}

/// The memory limit of the script's state (what any one value it makes may take).
pub(crate) fn memory_limit(lua: &Lua) -> usize {
    super::budget::budget(lua).map_or(usize::MAX, |b| b.memory_limit())
}

/// `v` as JSON for `what` (`agent.json.encode`, a log line's fields, a request body), held to
/// the script's memory limit.
pub(crate) fn json<T: Serialize + ?Sized>(lua: &Lua, v: &T, what: &str) -> mlua::Result<String> {
    let limit = memory_limit(lua);
    json_within(v, limit).map_err(|e| match e {
        None => mlua::Error::runtime(format!("{what}: the JSON would be over the script's memory limit ({limit} bytes; scripts.memory_limit_mb)")),
        Some(e) => mlua::Error::runtime(format!("{what}: {e}")),
    })
}
