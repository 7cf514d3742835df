//! `check`'s look for `agent.*` names that do not exist (`agent.calls.reject`, `agent.onn`):
//! they load fine and fail only when the line runs, often inside a handler on the first call.
//!
//! The known names come from the real `agent` table a script gets (a state built as the loader
//! builds one, walked), so the list cannot drift from the API. A table holding at least one
//! function (`agent`, `agent.calls`, `agent.ucwa`, …) is *closed*: a name it lacks is an error.
//! A table of data (`agent.state`, `agent.config`, `agent.account`) is *open*: any name may be
//! there at run time, so nothing below it is checked.
//!
//! The uses come from a token-level scan of the script's source: chains `agent.a.b` and
//! `agent.a:b` outside strings and comments, with the line of each name. Its limits, by design
//! of a scan that does not run the code: an alias (`local calls = agent.calls; calls.reject()`),
//! an index with brackets (`agent["calls"]`) and `require`d modules are not followed; a script
//! that declares its own `agent` (`local agent = …`, a parameter named `agent`) is not checked; a
//! name a script assigns itself (`agent.helper = function … end`) counts as known.

use mlua::{Lua, Table, Value};
use std::collections::BTreeMap;

/// A node of the `agent` table: a closed table knows its names.
#[derive(Debug, Clone)]
pub enum Node {
    Closed(BTreeMap<String, Node>),
    /// A function, a value, or a table of data: anything below it may exist.
    Open,
}

/// Walks the `agent` global of `lua`.
pub fn walk(lua: &Lua) -> mlua::Result<Node> {
    // Areas installed at a script's first use are installed now, to be walked whole.
    crate::script::install_all_areas(lua)?;
    let agent: Table = lua.globals().raw_get("agent")?;
    Ok(walk_table(&agent, 0))
}

fn walk_table(t: &Table, depth: usize) -> Node {
    // A table that answers names through a metatable may have any of them.
    if depth > 4 || t.metatable().is_some_and(|m| m.raw_get::<Value>("__index").is_ok_and(|v| !v.is_nil())) {
        return Node::Open;
    }
    let mut names = BTreeMap::new();
    let mut functions = 0;
    for (k, v) in t.clone().pairs::<Value, Value>().flatten() {
        let Value::String(k) = k else { continue };
        let Ok(k) = k.to_str().map(|s| s.to_string()) else {
            continue;
        };
        let node = match &v {
            Value::Function(_) => {
                functions += 1;
                Node::Open
            }
            Value::Table(sub) => walk_table(sub, depth + 1),
            _ => Node::Open,
        };
        names.insert(k, node);
    }
    if functions == 0 && !names.values().any(|n| matches!(n, Node::Closed(_))) {
        return Node::Open;
    }
    Node::Closed(names)
}

/// A name of the agent table that does not exist: `agent.calls.reject` on line 15.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub line: usize,
    /// The chain up to and including the unknown name: `agent.calls.reject`.
    pub path: String,
    /// A known name close to it.
    pub hint: Option<String>,
}

/// Names people reach for that the API spells otherwise (too far apart for an edit distance).
const SYNONYMS: &[(&str, &str)] = &[
    ("reject", "decline"),
    ("refuse", "decline"),
    ("deny", "decline"),
    ("answer", "accept_on_phone"),
    ("accept", "accept_on_phone"),
    ("hang_up", "hangup"),
    ("end", "hangup"),
    ("dial", "start"),
    ("call", "start"),
    ("subscribe", "on"),
    ("listen", "on"),
    ("timer", "after"),
    ("set_timeout", "after"),
    ("interval", "every"),
    ("set_interval", "every"),
    ("schedule", "cron"),
    ("crontab", "cron"),
    ("timezone", "time"),
    ("tz", "time"),
    ("print", "log"),
];

fn hint(name: &str, known: &BTreeMap<String, Node>) -> Option<String> {
    let names: Vec<&str> = known.keys().map(|k| k.as_str()).collect();
    if let Some((_, to)) = SYNONYMS.iter().find(|(from, to)| from.eq_ignore_ascii_case(name) && known.contains_key(*to)) {
        return Some(to.to_string());
    }
    crate::ucwa::rels::closest(name, &names).map(|s| s.to_string())
}

/// The unknown `agent.*` names `source` uses, in order.
pub fn unknown_names(source: &str, agent: &Node) -> Vec<Unknown> {
    let tokens = tokenize(source);
    // A script that binds its own `agent` means something else by it.
    let own = tokens.windows(2).any(|w| matches!((&w[0].kind, &w[1].kind), (Tok::Name(a), Tok::Name(b)) if (a == "local" || a == "function") && b == "agent"))
        || params_named_agent(&tokens);
    if own {
        return Vec::new();
    }
    let chains = chains(&tokens);
    // Names the script sets itself: `agent.helper = …` (not `==`).
    let assigned: Vec<Vec<String>> = chains.iter().filter(|c| c.assigned).map(|c| c.names.iter().map(|(n, _)| n.clone()).collect()).collect();
    let mut found = Vec::new();
    for chain in &chains {
        let mut node = agent;
        let mut path = String::from("agent");
        for (i, (name, line)) in chain.names.iter().enumerate() {
            let Node::Closed(known) = node else { break };
            path.push('.');
            path.push_str(name);
            match known.get(name) {
                Some(next) => node = next,
                None => {
                    let prefix: Vec<&String> = chain.names[..=i].iter().map(|(n, _)| n).collect();
                    let set_by_script = assigned.iter().any(|a| a.len() <= prefix.len() && a.iter().zip(&prefix).all(|(x, y)| x == *y));
                    if !set_by_script {
                        found.push(Unknown { line: *line, path, hint: hint(name, known) });
                    }
                    break;
                }
            }
        }
    }
    found
}

/// `function(e, agent)`: a parameter list naming `agent`.
fn params_named_agent(tokens: &[Token]) -> bool {
    let (mut after_function, mut in_params) = (false, false);
    for t in tokens {
        match &t.kind {
            Tok::Name(n) if n == "function" => after_function = true,
            Tok::Punct('(') if after_function => {
                in_params = true;
                after_function = false;
            }
            Tok::Punct(')') => in_params = false,
            Tok::Name(n) if in_params && n == "agent" => return true,
            _ => {}
        }
    }
    false
}

struct Chain {
    /// The names after `agent`, each with its line.
    names: Vec<(String, usize)>,
    /// Followed by `=` (an assignment).
    assigned: bool,
}

fn chains(tokens: &[Token]) -> Vec<Chain> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let is_agent = matches!(&tokens[i].kind, Tok::Name(n) if n == "agent");
        // `x.agent` or `x:agent` is some other table's field; `{agent = …}` is a key.
        let after_dot = i > 0 && matches!(tokens[i - 1].kind, Tok::Punct('.') | Tok::Punct(':'));
        if !is_agent || after_dot {
            i += 1;
            continue;
        }
        let mut names = Vec::new();
        let mut j = i + 1;
        while j + 1 < tokens.len() {
            match (&tokens[j].kind, &tokens[j + 1].kind) {
                (Tok::Punct('.'), Tok::Name(n)) => names.push((n.clone(), tokens[j + 1].line)),
                // A method call ends the chain.
                (Tok::Punct(':'), Tok::Name(n)) => {
                    names.push((n.clone(), tokens[j + 1].line));
                    j += 2;
                    break;
                }
                _ => break,
            }
            j += 2;
        }
        let assigned = matches!(tokens.get(j).map(|t| &t.kind), Some(Tok::Punct('=')));
        if !names.is_empty() {
            out.push(Chain { names, assigned });
        }
        i = j.max(i + 1);
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    /// `.`, `:`, `(`, `)`, `,`, `=` (a lone one: `==`, `~=`, `<=`, `>=` are Other).
    Punct(char),
    /// Anything else: strings, numbers, other operators.
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    line: usize,
}

/// Lua tokens, enough to find name chains: comments and strings (short and long) are skipped,
/// `..` and `...` are not dots.
fn tokenize(src: &str) -> Vec<Token> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // `[[`, `[==[`: the level, when a long bracket opens at `at`.
    let long_open = |at: usize| -> Option<usize> {
        if b.get(at) != Some(&b'[') {
            return None;
        }
        let mut k = at + 1;
        while b.get(k) == Some(&b'=') {
            k += 1;
        }
        (b.get(k) == Some(&b'[')).then_some(k - at - 1)
    };
    // Skips a long bracket of `level` opened at `at`; gives the index after it.
    let skip_long = |at: usize, level: usize, line: &mut usize| -> usize {
        let close = format!("]{}]", "=".repeat(level));
        let start = at + level + 2;
        let rest = &src[start.min(src.len())..];
        let end = rest.find(&close).map_or(src.len(), |p| start + p + close.len());
        *line += src[at..end].matches('\n').count();
        end
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => match long_open(i + 2) {
                Some(level) => i = skip_long(i + 2, level, &mut line),
                None => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                }
            },
            b'[' if long_open(i).is_some() => {
                let level = long_open(i).unwrap_or(0);
                i = skip_long(i, level, &mut line);
                out.push(Token { kind: Tok::Other, line });
            }
            b'"' | b'\'' => {
                let at = line;
                i += 1;
                while i < b.len() && b[i] != c {
                    match b[i] {
                        b'\\' => {
                            if b.get(i + 1) == Some(&b'\n') {
                                line += 1;
                            }
                            i += 2;
                        }
                        // An unfinished string ends at the line's end, as Lua says.
                        b'\n' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                out.push(Token { kind: Tok::Other, line: at });
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Token { kind: Tok::Name(src[start..i].to_string()), line });
            }
            c if c.is_ascii_digit() => {
                // Numbers, with their exponents and hex digits: `1e5`, `0x1p4`, `3.14`.
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                    i += 1;
                }
                out.push(Token { kind: Tok::Other, line });
            }
            b'.' => {
                let mut n = 1;
                while b.get(i + n) == Some(&b'.') {
                    n += 1;
                }
                out.push(Token { kind: if n == 1 { Tok::Punct('.') } else { Tok::Other }, line });
                i += n;
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                out.push(Token { kind: Tok::Other, line });
                i += 2;
            }
            b'=' | b'~' | b'<' | b'>' if b.get(i + 1) == Some(&b'=') => {
                out.push(Token { kind: Tok::Other, line });
                i += 2;
            }
            b':' | b'(' | b')' | b',' | b'=' => {
                out.push(Token { kind: Tok::Punct(c as char), line });
                i += 1;
            }
            _ => {
                // One token per character (UTF-8 continuation bytes included): only names and
                // the punctuation above matter.
                out.push(Token { kind: Tok::Other, line });
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Node {
        let mut calls = BTreeMap::new();
        for n in ["decline", "hangup", "start"] {
            calls.insert(n.to_string(), Node::Open);
        }
        let mut agent = BTreeMap::new();
        agent.insert("calls".to_string(), Node::Closed(calls));
        agent.insert("on".to_string(), Node::Open);
        agent.insert("state".to_string(), Node::Open);
        Node::Closed(agent)
    }

    fn found(src: &str) -> Vec<(usize, String, Option<String>)> {
        unknown_names(src, &tree()).into_iter().map(|u| (u.line, u.path, u.hint)).collect()
    }

    #[test]
    fn unknown_names_are_found_with_their_line_and_a_hint() {
        let src = "agent.onn('x', function(e)\n  agent.calls\n    .reject(e)\n  agent.calls.decline(e)\n  agent.state.anything.goes = 1\nend)\n";
        assert_eq!(found(src), [(1, "agent.onn".to_string(), Some("on".to_string())), (3, "agent.calls.reject".to_string(), Some("decline".to_string()))]);
    }

    #[test]
    fn strings_comments_other_tables_and_own_names_are_not_uses() {
        let src = "-- agent.nope()\n--[==[ agent.nope\n]==] local s = \"agent.nope\" .. 'agent.nope' .. [[agent.nope]]\nlocal t = {} t.agent.nope = 1\nagent.helper = function() end\nagent.helper()\nagent.calls:start()\nlocal x = agent.calls.hangup\n";
        assert_eq!(found(src), []);
        assert_eq!(found("local agent = {}\nagent.nope()\n"), []);
        assert_eq!(found("return function(e, agent) agent.nope() end\n"), []);
        // Line numbers count the lines inside long strings and comments.
        assert_eq!(found("--[[\n\n]] local s = [[\n\n]]\nagent.calls.nope()\n"), [(6, "agent.calls.nope".to_string(), None)]);
    }
}
