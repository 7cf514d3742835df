//! Chunks that declare `<close>` variables are refused. mlua raises a limit's error from the
//! hook after `lua_settop(L, 0)`, which in Lua 5.4 closes the interrupted function's pending
//! `<close>` variables there and then, inside the hook, where Lua runs no hook: their
//! `__close` ran outside every limit. One that looped kept its thread and a core for ever
//! (`local x <close> = setmetatable({}, {__close = function() while true do end end})` and a
//! loop in the handler); one that allocated after the memory limit grew the process until it
//! was killed (every account with it). Found in the compiled chunk (the `TBC` instruction),
//! so no spelling of the attribute in the text gets past.

use mlua::Function;

/// Lua 5.4's `OP_TBC` (lopcodes.h): "mark variable A to be closed".
const OP_TBC: u32 = 55;

/// The bytes of a `lua_dump` header before the main function's upvalue count (ldump.c
/// `dumpHeader`: signature, version, format, LUAC_DATA, three sizes, LUAC_INT, LUAC_NUM).
const HEADER: usize = 4 + 1 + 1 + 6 + 3 + 8 + 8;

/// What a script is told.
pub(crate) const REFUSED: &str = "`<close>` variables are not supported: a limit that stops the code around one would run its `__close` outside every limit";

/// An error when the compiled chunk `f` (or a function in it) declares a `<close>` variable.
pub(crate) fn refuse(f: &Function) -> mlua::Result<()> {
    if declares_close(f) {
        return Err(mlua::Error::runtime(REFUSED));
    }
    Ok(())
}

/// Whether `f`'s code, or that of a function defined in it, has a `TBC` instruction. A dump
/// that does not read as expected counts as one: no chunk is let through unread.
pub(crate) fn declares_close(f: &Function) -> bool {
    let dump = f.dump(true);
    let mut r = Reader { bytes: &dump, at: HEADER + 1 };
    !dump.starts_with(b"\x1bLua\x54") || function(&mut r).is_none_or(|tbc| tbc)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let b = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(b)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// ldump.c `dumpSize`: 7 bits a byte, most significant first, the last byte marked.
    fn size(&mut self) -> Option<usize> {
        let mut x: usize = 0;
        loop {
            let b = self.byte()?;
            x = x.checked_mul(128)? | usize::from(b & 0x7f);
            if b & 0x80 != 0 {
                return Some(x);
            }
        }
    }

    fn string(&mut self) -> Option<()> {
        let n = self.size()?;
        self.take(n.saturating_sub(1)).map(|_| ())
    }
}

/// ldump.c `dumpFunction`: whether it or a nested function has a `TBC` instruction.
fn function(r: &mut Reader) -> Option<bool> {
    r.string()?; // source
    r.size()?; // linedefined
    r.size()?; // lastlinedefined
    r.take(3)?; // numparams, is_vararg, maxstacksize
    let n = r.size()?;
    let code = r.take(n.checked_mul(4)?)?;
    let mut tbc = code.chunks_exact(4).any(|i| u32::from_ne_bytes([i[0], i[1], i[2], i[3]]) & 0x7f == OP_TBC);
    for _ in 0..r.size()? {
        match r.byte()? {
            3 | 19 => drop(r.take(8)?), // integer, float
            4 | 20 => r.string()?,      // short, long string
            _ => {}                     // nil, false, true
        }
    }
    let upvalues = r.size()?;
    r.take(upvalues.checked_mul(3)?)?;
    for _ in 0..r.size()? {
        tbc |= function(r)?;
    }
    // Debug information (none once stripped, read all the same).
    let n = r.size()?;
    r.take(n)?;
    for _ in 0..r.size()? {
        r.size()?;
        r.size()?;
    }
    for _ in 0..r.size()? {
        r.string()?;
        r.size()?;
        r.size()?;
    }
    for _ in 0..r.size()? {
        r.string()?;
    }
    Some(tbc)
}

#[cfg(test)]
mod tests {
    use super::declares_close;

    #[test]
    fn a_close_variable_is_found_wherever_it_is_and_nothing_else_is() {
        let lua = mlua::Lua::new();
        let found = |src: &str| declares_close(&lua.load(src).into_function().unwrap());
        for src in [
            "local x <close> = nil",
            "local x < close > = nil",
            "local x <--[[ a comment ]] close> = nil",
            "local t = {1, 2.5, 'short', ('long'):rep(10) .. string.rep('x', 100), true, false} local function f() local function g() local y <close> = nil end end",
            "return function(a, ...) local s = 'x' .. [[\nlong\n]] local z <const> = 3 do local w <close> = nil end return a end",
        ] {
            assert!(found(src), "{src}");
        }
        for src in [
            "",
            "local x <const> = 1",
            "local s = '<close>' -- local x <close> = nil",
            "local t = {1, 2.5, 'x', true, false, nil} local function f(...) return function() return t end end return f",
            &"a = a + 1\n".repeat(5000),
        ] {
            assert!(!found(src), "{src}");
        }
    }
}
