//! `string.find`, `string.match`, `string.gmatch` and `string.gsub` on the Rust matcher
//! (`pattern.rs`), so that matching counts against the script's instruction limit and a
//! `gsub` result counts against its memory limit before it is built. Same arguments, results
//! and error texts as Lua 5.4's (raised as mlua errors, whose `tostring` is the text).

use super::budget::Budget;
use super::pattern::{find_plain, no_specials, Captured, Matcher, PatternError};
use mlua::{Function, Lua, LuaString, MultiValue, Table, Value};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

/// Installs the four functions in `string` (and so as string methods).
pub(crate) fn register(lua: &Lua) -> mlua::Result<()> {
    let string: Table = lua.globals().get("string")?;
    string.set(
        "find",
        lua.create_function(|lua, (s, p, init, plain): (LuaString, LuaString, Option<i64>, Value)| {
            find_aux(lua, &s, &p, init, plain.as_boolean().unwrap_or(false) || !matches!(plain, Value::Nil | Value::Boolean(_)), true)
        })?,
    )?;
    string.set("match", lua.create_function(|lua, (s, p, init): (LuaString, LuaString, Option<i64>)| find_aux(lua, &s, &p, init, false, false))?)?;
    string.set("gmatch", lua.create_function(gmatch)?)?;
    string.set("gsub", lua.create_function(gsub)?)?;
    Ok(())
}

/// Lua's `posrelatI`: a 1-based start from a possibly negative one.
fn start_at(init: Option<i64>, len: usize) -> usize {
    match init.unwrap_or(1) {
        i if i > 0 => i as usize,
        0 => 1,
        i if i < -(len as i64) => 1,
        i => (len as i64 + i + 1) as usize,
    }
}

/// Runs `f` with the steps the script has left; the steps used are charged to it.
fn metered<T>(lua: &Lua, f: impl FnOnce(&mut u64, Option<Instant>) -> Result<T, PatternError>) -> mlua::Result<T> {
    let budget = lua.app_data_ref::<Arc<Budget>>();
    let mut steps = budget.as_ref().map_or(u64::MAX, |b| b.available());
    let deadline = budget.as_ref().and_then(|b| b.deadline());
    let before = steps;
    let r = f(&mut steps, deadline);
    if let Some(b) = &budget {
        b.spend(before - steps);
    }
    r.map_err(|e| match e {
        PatternError::Budget => {
            if let Some(b) = &budget {
                b.exhaust();
            }
            mlua::Error::runtime("instruction limit exceeded (scripts.instruction_limit)")
        }
        PatternError::Time => {
            if let Some(b) = &budget {
                b.exhaust();
            }
            mlua::Error::runtime("time limit exceeded (scripts.handler_timeout_ms)")
        }
        // Lua's own words (`malformed pattern (missing ']')`); the traceback says where.
        PatternError::Bad(msg) => mlua::Error::runtime(msg),
    })
}

fn captured(lua: &Lua, c: Captured<'_>) -> mlua::Result<Value> {
    match c {
        Captured::Text(t) => Ok(Value::String(lua.create_string(t)?)),
        Captured::Position(p) => Ok(Value::Integer(p as i64)),
    }
}

/// The values of a match `s..e`: its captures, or the whole match (`whole`) when it has none.
fn captures(lua: &Lua, m: &Matcher<'_>, s: usize, e: usize, whole: bool) -> mlua::Result<Vec<Value>> {
    (0..m.capture_count(whole))
        .map(|i| {
            let c = m.get_capture(i, s, e).map_err(|e| match e {
                PatternError::Bad(msg) => mlua::Error::runtime(msg),
                _ => mlua::Error::runtime("instruction limit exceeded (scripts.instruction_limit)"),
            })?;
            captured(lua, c)
        })
        .collect()
}

fn find_aux(lua: &Lua, s: &LuaString, p: &LuaString, init: Option<i64>, plain: bool, find: bool) -> mlua::Result<MultiValue> {
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let init = start_at(init, src.len()) - 1;
    if init > src.len() {
        return Ok(MultiValue::from_iter([Value::Nil]));
    }
    if find && (plain || no_specials(&pat)) {
        let at = metered(lua, |steps, _| find_plain(&src[init..], &pat, steps))?;
        return Ok(match at {
            Some(at) => MultiValue::from_iter([Value::Integer((init + at + 1) as i64), Value::Integer((init + at + pat.len()) as i64)]),
            None => MultiValue::from_iter([Value::Nil]),
        });
    }
    let (anchor, pat) = match pat.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, &pat[..]),
    };
    let found = metered(lua, |steps, deadline| {
        let mut m = Matcher::new(&src, pat, *steps).until(deadline);
        let mut at = init;
        let r = loop {
            m.reset();
            match m.do_match(at, 0) {
                Ok(Some(e)) => break Ok(Some((at, e, m.level, m.capture))),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            at += 1;
            if anchor || at > src.len() {
                break Ok(None);
            }
        };
        *steps = m.steps;
        r
    })?;
    let Some((start, end, level, capture)) = found else {
        return Ok(MultiValue::from_iter([Value::Nil]));
    };
    let m = Matcher::found(&src, pat, level, capture);
    let mut out = Vec::new();
    if find {
        out.push(Value::Integer(start as i64 + 1));
        out.push(Value::Integer(end as i64));
        out.extend(captures(lua, &m, start, end, false)?);
    } else {
        out = captures(lua, &m, start, end, true)?;
    }
    Ok(MultiValue::from_iter(out))
}

fn gmatch(lua: &Lua, (s, p, init): (LuaString, LuaString, Option<i64>)) -> mlua::Result<Function> {
    let len = s.as_bytes().len();
    let start = (start_at(init, len) - 1).min(len + 1);
    let pos = Cell::new(start);
    let last: Cell<Option<usize>> = Cell::new(None);
    lua.create_function(move |lua, ()| {
        let (src, pat) = (s.as_bytes(), p.as_bytes());
        let found = metered(lua, |steps, deadline| {
            let mut m = Matcher::new(&src, &pat, *steps).until(deadline);
            let mut at = pos.get();
            let r = loop {
                if at > src.len() {
                    break Ok(None);
                }
                m.reset();
                match m.do_match(at, 0) {
                    Ok(Some(e)) if Some(e) != last.get() => break Ok(Some((at, e, m.level, m.capture))),
                    Ok(_) => at += 1,
                    Err(e) => break Err(e),
                }
            };
            *steps = m.steps;
            r
        })?;
        let Some((start, end, level, capture)) = found else {
            pos.set(src.len() + 1);
            return Ok(MultiValue::from_iter([Value::Nil]));
        };
        pos.set(end);
        last.set(Some(end));
        let m = Matcher::found(&src, &pat, level, capture);
        Ok(MultiValue::from_iter(captures(lua, &m, start, end, true)?))
    })
}

/// The replacement of `gsub`.
enum Repl {
    Text(Vec<u8>),
    Table(Table),
    Func(Function),
}

fn gsub(lua: &Lua, (s, p, repl, max): (LuaString, LuaString, Value, Option<i64>)) -> mlua::Result<(LuaString, i64)> {
    let repl = match repl {
        Value::String(r) => Repl::Text(r.as_bytes().to_vec()),
        v @ (Value::Integer(_) | Value::Number(_)) => Repl::Text(lua.coerce_string(v)?.map(|s| s.as_bytes().to_vec()).unwrap_or_default()),
        Value::Table(t) => Repl::Table(t),
        Value::Function(f) => Repl::Func(f),
        other => return Err(mlua::Error::runtime(format!("bad argument #3 to 'gsub' (string/function/table expected, got {})", other.type_name()))),
    };
    let (src, pat) = (s.as_bytes(), p.as_bytes());
    let (anchor, pat) = match pat.strip_prefix(b"^") {
        Some(rest) => (true, rest),
        None => (false, &pat[..]),
    };
    let max = max.unwrap_or(src.len() as i64 + 1);
    let memory_cap = lua.app_data_ref::<Arc<Budget>>().map_or(usize::MAX, |b| b.memory_limit());
    let mut out: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut last: Option<usize> = None;
    let mut n = 0i64;
    while n < max {
        let found = metered(lua, |steps, deadline| {
            let mut m = Matcher::new(&src, pat, *steps).until(deadline);
            let r = m.do_match(at, 0).map(|e| e.map(|e| (e, m.level, m.capture)));
            *steps = m.steps;
            r
        })?;
        match found {
            Some((e, level, capture)) if Some(e) != last => {
                n += 1;
                let m = Matcher::found(&src, pat, level, capture);
                add_value(lua, &mut out, memory_cap, &m, &repl, &src, at, e)?;
                at = e;
                last = Some(e);
            }
            _ if at < src.len() => {
                append(&mut out, &src[at..at + 1], memory_cap)?;
                at += 1;
            }
            _ => break,
        }
        if anchor {
            break;
        }
    }
    if at < src.len() {
        append(&mut out, &src[at..], memory_cap)?;
    }
    Ok((lua.create_string(&out)?, n))
}

/// The result is built outside Lua's allocator: it is held to the script's memory limit before
/// each piece goes in.
fn append(out: &mut Vec<u8>, bytes: &[u8], cap: usize) -> mlua::Result<()> {
    if out.len() + bytes.len() > cap {
        return Err(mlua::Error::runtime(format!("gsub: the result would exceed the script's memory limit ({cap} bytes; scripts.memory_limit_mb)")));
    }
    out.extend_from_slice(bytes);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn add_value(lua: &Lua, out: &mut Vec<u8>, cap: usize, m: &Matcher<'_>, repl: &Repl, src: &[u8], s: usize, e: usize) -> mlua::Result<()> {
    let value = match repl {
        Repl::Text(r) => {
            let before = out.len();
            let mut i = 0;
            while i < r.len() {
                let c = r[i];
                i += 1;
                if c != b'%' {
                    append(out, &[c], cap)?;
                    continue;
                }
                let d = r.get(i).copied().unwrap_or(0);
                i += 1;
                match d {
                    b'%' => append(out, b"%", cap)?,
                    b'0' => append(out, &src[s..e], cap)?,
                    b'1'..=b'9' => {
                        match m.get_capture((d - b'1') as usize, s, e).map_err(|e| match e {
                            PatternError::Bad(msg) => mlua::Error::runtime(msg),
                            _ => mlua::Error::runtime("instruction limit exceeded"),
                        })? {
                            Captured::Text(t) => append(out, t, cap)?,
                            Captured::Position(p) => append(out, p.to_string().as_bytes(), cap)?,
                        }
                    }
                    _ => return Err(mlua::Error::runtime("invalid use of '%' in replacement string")),
                }
            }
            // Copying costs like VM instructions do: one step per 16 bytes written.
            let cost = ((out.len() - before) as u64 + r.len() as u64) / 16 + 1;
            metered(lua, |steps, _| {
                *steps = steps.checked_sub(cost).ok_or(PatternError::Budget)?;
                Ok(())
            })?;
            return Ok(());
        }
        Repl::Table(t) => {
            let key = captures(lua, m, s, e, true)?.into_iter().next().unwrap_or(Value::Nil);
            t.get::<Value>(key)?
        }
        Repl::Func(f) => f.call::<Value>(MultiValue::from_iter(captures(lua, m, s, e, true)?))?,
    };
    match value {
        Value::Nil | Value::Boolean(false) => append(out, &src[s..e], cap)?,
        v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => {
            if let Some(text) = lua.coerce_string(v)? {
                append(out, &text.as_bytes(), cap)?;
            }
        }
        other => return Err(mlua::Error::runtime(format!("invalid replacement value (a {})", other.type_name()))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::budget::Limits;
    use super::super::sandbox::new_state;
    use mlua::Lua;

    /// Each expression's results, as text, or `error` (messages differ in their position prefix).
    const PROBE: &str = r#"
local cases = ...
local out = {}
for i, src in ipairs(cases) do
  local f = load("return " .. src)
  local r = table.pack(pcall(f))
  local parts = {}
  if not r[1] then parts[1] = "error" else
    for k = 2, r.n do parts[#parts + 1] = type(r[k]) .. ":" .. tostring(r[k]) end
  end
  out[i] = table.concat(parts, ",")
end
return out
"#;

    const CASES: &[&str] = &[
        r#"string.find("hello world", "o", 5)"#,
        r#"string.find("hello world", "o", -3)"#,
        r#"string.find("hello world", "o", 100)"#,
        r#"string.find("hello", "", 6)"#,
        r#"string.find("hello", "", 7)"#,
        r#"string.find("a.b.c", ".", 1, true)"#,
        r#"string.find("a+b", "+", 1, true)"#,
        r#"string.find("key = value", "(%w+)%s*=%s*(%w+)")"#,
        r#"string.find("abc", "()b()")"#,
        r#"string.find(12345, 34)"#,
        r#"string.match("  trim  ", "^%s*(.-)%s*$")"#,
        r#"string.match("2026-11-27", "(%d+)-(%d+)-(%d+)")"#,
        r#"string.match("hello", "xyz")"#,
        r#"string.match("hello", "l", -2)"#,
        r#"string.match("[[x]]", "%[(%b[])%]")"#,
        r#"string.match("THE (quick) fox", "%f[%a]%a+", 5)"#,
        r#"string.match("sip:alice@example.com", "^sip:([^@]+)@(.+)$")"#,
        r#"string.match("abc", "((a)(b))")"#,
        r#"string.match("x", "(()")"#,
        r#"string.match("x", "%")"#,
        r#"string.match("x", "[x")"#,
        r#"string.match("aaa", "a-b")"#,
        r#"string.match("aaab", "a-b")"#,
        r#"string.match("\0a\0", "%z")"#,
        r#"string.match("a\0b", "[\0]")"#,
        r#"string.gsub("hello world", "o", "0")"#,
        r#"string.gsub("hello world", "o", "0", 1)"#,
        r#"string.gsub("hello", "", "-")"#,
        r#"string.gsub("abc", "%w", "%0%0")"#,
        r#"string.gsub("abc", "(%w)", "%1-")"#,
        r#"string.gsub("abc", "%w", "%2")"#,
        r#"string.gsub("abc", "%w", "%x")"#,
        r#"string.gsub("abc", "%w", "%%")"#,
        r#"string.gsub("$name is $age", "%$(%w+)", {name = "Ann", age = 7})"#,
        r#"string.gsub("$name", "%$(%w+)", {name = false})"#,
        r#"string.gsub("$name", "%$(%w+)", {name = {}})"#,
        r#"string.gsub("abc", ".", function(c) return c:upper() end)"#,
        r#"string.gsub("abc", "()", function(p) return p end)"#,
        r#"string.gsub("abc", "^.", "X")"#,
        r#"string.gsub("abc", "b*", "-")"#,
        r#"string.gsub("abc", "x*", "-")"#,
        r#"string.gsub("a b c", "%s", 5)"#,
        r#"string.gsub("abc", "b", true)"#,
        r#"(function() local t = {} for k, v in string.gmatch("a=1, b=2", "(%w+)=(%w+)") do t[#t+1] = k .. v end return table.concat(t, ";") end)()"#,
        r#"(function() local t = {} for w in ("one two  three"):gmatch("%a+") do t[#t+1] = w end return table.concat(t, ";") end)()"#,
        r#"(function() local t = {} for w in ("abc"):gmatch("") do t[#t+1] = "." end return #t end)()"#,
        r#"(function() local t = {} for a, b in ("abc"):gmatch("()(.)") do t[#t+1] = a .. b end return table.concat(t) end)()"#,
        r#"(function() local t = {} for w in ("a,b,,c"):gmatch("([^,]*)") do t[#t+1] = "<" .. w .. ">" end return table.concat(t) end)()"#,
        r#"(function() local t = {} for w in ("hello"):gmatch("l", 4) do t[#t+1] = w end return #t end)()"#,
        r#"(function() local t = {} for w in ("^a^b"):gmatch("^.") do t[#t+1] = w end return table.concat(t) end)()"#,
        r#"("x"):rep(3, ",")"#,
        r#"table.concat({1, 2, 3}, "-")"#,
        r#"table.unpack({1, 2, 3}, 2)"#,
        r#"(function() local t = {1, 2, 3} table.insert(t, 1, 0) table.insert(t, 9) return table.concat(t) end)()"#,
        r#"(function() local t = {1, 2, 3} return table.remove(t, 1), table.remove(t), #t end)()"#,
        r#"(function() local t = {3, 1, 2} table.sort(t) return table.concat(t) end)()"#,
        r#"table.concat(table.move({1, 2, 3}, 1, 3, 2), ",")"#,
    ];

    fn probe(lua: &Lua) -> Vec<String> {
        let cases = lua.create_sequence_from(CASES.iter().copied()).expect("cases");
        lua.load(PROBE).call::<Vec<String>>(cases).expect("probe runs")
    }

    /// The Rust matcher and the wrapped table and string functions give what Lua's C library
    /// gives, case by case.
    #[test]
    fn same_results_as_lua() {
        let c = probe(&Lua::new());
        let ours = probe(&new_state(&Limits::default()).expect("sandbox"));
        for ((case, want), got) in CASES.iter().zip(&c).zip(&ours) {
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn matching_is_held_to_the_instruction_limit() {
        let lua = new_state(&Limits { instructions: 1_000_000, ..Limits::default() }).expect("sandbox");
        super::super::budget::budget(&lua).expect("budget").arm(&Limits { instructions: 1_000_000, ..Limits::default() });
        let err = lua.load(r#"return string.find(("a"):rep(40), ("a*"):rep(40) .. "b")"#).exec().expect_err("stopped");
        assert!(err.to_string().contains("instruction limit exceeded"), "{err}");
        for hog in [r#"string.rep("", math.maxinteger)"#, r#"table.move({}, 1, 2^62, 1)"#, r#"table.concat({}, "", 1, 2^60)"#] {
            super::super::budget::budget(&lua).expect("budget").arm(&Limits { instructions: 1_000_000, ..Limits::default() });
            let err = lua.load(hog).exec().expect_err(hog);
            assert!(err.to_string().contains("limit"), "{hog}: {err}");
        }
    }
}
