//! The import graph of `src/`: no circle between the files of a folder, nor between the wings
//! (top-level folders and files) of `src/`.
//!
//! Every `use crate::…`, `super::…`, `self::…` and child-module path (in `use` lines and inline)
//! is resolved to the file that defines the name, through `pub use` re-exports, so a `mod.rs`
//! that only lists is never the knot. Each folder is then one graph whose nodes are its files
//! and its subfolders (a subfolder stands for every file below it); a strongly connected set of
//! two or more nodes is a circle, printed with the names that tie it. Test modules
//! (`#[cfg(test)]`) and the binary (`src/main.rs`, which the library cannot import) are left out.
//!
//! Run it alone: `cargo test --test house`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One file of the crate: its path below `src/` (`sim/server.rs`) and its text.
struct Source {
    path: String,
    text: String,
}

/// The module path of a file below `src/`: `sim/server.rs` → `[sim, server]`, `sim/mod.rs` and
/// `sim.rs` → `[sim]`, `lib.rs` → `[]`.
fn module_of(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path.trim_end_matches(".rs").split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The text without comments, string and char literals (so a `crate::` inside a doc or a Lua
/// chunk is not an import), and without `#[cfg(test)]` items (their `super::` is the file itself).
fn code_of(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r' && (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#')) && (i == 0 || !is_ident(c[i - 1])) {
            // A raw string r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' {
            // A char literal ('a', '\n', '\''), or a lifetime ('a), which stays.
            if c.get(i + 1) == Some(&'\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
                out.push_str("' '");
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c[i]);
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    without_test_items(&out)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Cuts every `#[cfg(test)]` item: up to its `;` or to the brace that closes its body.
fn without_test_items(code: &str) -> String {
    let mut out = code.to_string();
    while let Some(at) = out.find("#[cfg(test)]") {
        let rest = &out[at..];
        let semi = rest.find(';');
        let open = rest.find('{');
        let end = match (semi, open) {
            (Some(s), Some(o)) if s < o => at + s + 1,
            (_, Some(o)) => {
                let mut depth = 0;
                let mut end = out.len();
                for (k, ch) in out[at + o..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = at + o + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(s), None) => at + s + 1,
            (None, None) => out.len(),
        };
        out.replace_range(at..end, "");
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Path, // ::
    Open,
    Close,
    Comma,
    Star,
}

fn tokens(s: &str) -> Vec<Tok> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            ':' if c.get(i + 1) == Some(&':') => {
                out.push(Tok::Path);
                i += 2;
            }
            '{' => {
                out.push(Tok::Open);
                i += 1;
            }
            '}' => {
                out.push(Tok::Close);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '*' => {
                out.push(Tok::Star);
                i += 1;
            }
            ch if is_ident(ch) => {
                let start = i;
                while i < c.len() && is_ident(c[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(c[start..i].iter().collect()));
            }
            _ => i += 1,
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d as e, self}}`) into its paths, each with the name it binds.
fn expand(toks: &[Tok], i: &mut usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    let mut path = prefix;
    while *i < toks.len() {
        match &toks[*i] {
            Tok::Ident(id) if id == "as" => {
                *i += 1;
                if let Some(Tok::Ident(alias)) = toks.get(*i) {
                    *i += 1;
                    out.push((path.clone(), alias.clone()));
                }
                return;
            }
            Tok::Ident(id) => {
                path.push(id.clone());
                *i += 1;
                if toks.get(*i) != Some(&Tok::Path) {
                    let last = path.last().cloned().unwrap_or_default();
                    if last == "self" {
                        path.pop();
                    }
                    if toks.get(*i).is_none_or(|t| *t != Tok::Ident("as".into())) {
                        let name = path.last().cloned().unwrap_or_default();
                        out.push((path.clone(), name));
                        return;
                    }
                }
            }
            Tok::Path => *i += 1,
            Tok::Star => {
                *i += 1;
                out.push((path.clone(), "*".into()));
                return;
            }
            Tok::Open => {
                *i += 1;
                loop {
                    match toks.get(*i) {
                        None => return,
                        Some(Tok::Close) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Comma) => *i += 1,
                        Some(_) => expand(toks, i, path.clone(), out),
                    }
                }
            }
            Tok::Close | Tok::Comma => return,
        }
    }
}

/// What one file imports: every path it names, and which of them it re-exports (`pub use`).
struct Imports {
    used: Vec<Vec<String>>,
    reexported: Vec<(Vec<String>, String)>,
}

fn imports_of(code: &str, children: &BTreeSet<String>, listing: bool) -> Imports {
    let mut used = Vec::new();
    let mut reexported = Vec::new();
    let mut listed = Vec::new();
    let mut rest = String::new();
    // `use` items first; what remains is scanned for inline paths.
    let mut cursor = 0;
    let bytes = code.as_bytes();
    while let Some(off) = code[cursor..].find("use ") {
        let at = cursor + off;
        let boundary = at == 0 || !is_ident(bytes[at - 1] as char);
        if !boundary {
            rest.push_str(&code[cursor..at + 4]);
            cursor = at + 4;
            continue;
        }
        let Some(semi) = code[at..].find(';') else { break };
        let line_start = code[..at].rfind(['\n', ';', '}', '{']).map_or(0, |p| p + 1);
        let public = code[line_start..at].trim_start().starts_with("pub");
        rest.push_str(&code[cursor..at]);
        let toks = tokens(&code[at + 4..at + semi]);
        let mut paths = Vec::new();
        let mut i = 0;
        let toks = if toks.first() == Some(&Tok::Path) { toks[1..].to_vec() } else { toks };
        expand(&toks, &mut i, Vec::new(), &mut paths);
        for (path, name) in paths {
            if public {
                reexported.push((path.clone(), name.clone()));
            }
            // A listing file's `pub use` is what it lists, not what it needs, unless its own
            // code uses the name too (checked below, once the rest of the text is known).
            if public && listing {
                listed.push((path, name));
            } else {
                used.push(path);
            }
        }
        cursor = at + semi + 1;
    }
    rest.push_str(&code[cursor..]);
    let toks = tokens(&rest);
    for (path, name) in listed {
        if toks.contains(&Tok::Ident(name)) {
            used.push(path);
        }
    }
    // Inline paths: `crate::a::b`, `super::x`, `self::x`, `child::x`, not preceded by `::`.
    let mut i = 0;
    while i < toks.len() {
        if let Tok::Ident(id) = &toks[i] {
            let after_path = i > 0 && toks[i - 1] == Tok::Path;
            let root = id == "crate" || id == "super" || id == "self" || children.contains(id);
            if !after_path && root && toks.get(i + 1) == Some(&Tok::Path) {
                let mut path = vec![id.clone()];
                let mut j = i + 1;
                while toks.get(j) == Some(&Tok::Path) {
                    match toks.get(j + 1) {
                        Some(Tok::Ident(next)) => {
                            path.push(next.clone());
                            j += 2;
                        }
                        _ => break,
                    }
                }
                used.push(path);
                i = j;
                continue;
            }
        }
        i += 1;
    }
    Imports { used, reexported }
}

/// An arrow between two files, with the names that make it.
type Arrows = BTreeMap<(String, String), BTreeSet<String>>;

/// The crate's file graph: which file imports which, through which names.
fn file_graph(sources: &[Source]) -> Arrows {
    let modules: BTreeMap<Vec<String>, String> = sources.iter().map(|s| (module_of(&s.path), s.path.clone())).collect();
    let children_of = |module: &[String]| -> BTreeSet<String> {
        modules.keys().filter(|m| m.len() == module.len() + 1 && m.starts_with(module)).map(|m| m[module.len()].clone()).collect()
    };
    let mut parsed = Vec::new();
    for s in sources {
        let module = module_of(&s.path);
        let listing = s.path == "lib.rs" || s.path.ends_with("/mod.rs");
        let imports = imports_of(&code_of(&s.text), &children_of(&module), listing);
        parsed.push((s.path.clone(), module, imports));
    }
    // A path as written → absolute segments, or None for another crate.
    let absolute = |module: &[String], path: &[String]| -> Option<Vec<String>> {
        let mut base: Vec<String> = module.to_vec();
        let mut k = 0;
        match path.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                k = 1;
            }
            Some("self") => k = 1,
            Some("super") => {
                while path.get(k).map(String::as_str) == Some("super") {
                    base.pop()?;
                    k += 1;
                }
            }
            Some(first) if children_of(module).contains(first) => {}
            _ => return None,
        }
        base.extend(path[k..].iter().cloned());
        Some(base)
    };
    // Re-exports: (module, name) → the absolute path they stand for.
    let mut reexports: BTreeMap<(Vec<String>, String), Vec<String>> = BTreeMap::new();
    for (_, module, imports) in &parsed {
        for (path, name) in &imports.reexported {
            if let Some(abs) = absolute(module, path) {
                reexports.insert((module.clone(), name.clone()), abs);
            }
        }
    }
    // An absolute path → the file that defines its name, and that name.
    let resolve = |abs: &[String]| -> Option<(String, String)> {
        let mut abs = abs.to_vec();
        for _ in 0..8 {
            let mut n = abs.len();
            while n > 0 && !modules.contains_key(&abs[..n]) {
                n -= 1;
            }
            if n == 0 && !modules.contains_key(&abs[..0]) {
                return None;
            }
            let file = modules[&abs[..n]].clone();
            let Some(name) = abs.get(n).cloned() else {
                return Some((file, abs.last().cloned().unwrap_or_default()));
            };
            match reexports.get(&(abs[..n].to_vec(), name.clone())) {
                Some(target) if target.as_slice() != abs.as_slice() => {
                    let mut next = target.clone();
                    next.extend(abs[n + 1..].iter().cloned());
                    abs = next;
                }
                _ => return Some((file, name)),
            }
        }
        None
    };
    let mut arrows = Arrows::new();
    for (file, module, imports) in &parsed {
        for path in &imports.used {
            let Some(abs) = absolute(module, path) else { continue };
            let Some((target, name)) = resolve(&abs) else { continue };
            // A mod.rs declaring its children, or lib.rs its modules, is a listing, not an import.
            if target != *file && !(target.ends_with("mod.rs") && module.len() + 1 == module_of(&target).len()) {
                arrows.entry((file.clone(), target)).or_default().insert(name);
            }
        }
    }
    arrows
}

/// One circle found in one folder: its nodes and the arrows between them, with their names.
#[derive(Debug)]
struct Circle {
    folder: String,
    nodes: BTreeSet<String>,
    ties: Vec<String>,
}

/// The node of `file` in the graph of `folder`: its own name, or its subfolder's name + `/`.
fn node_in(folder: &str, file: &str) -> Option<String> {
    let rest = if folder.is_empty() { file } else { file.strip_prefix(folder)?.strip_prefix('/')? };
    Some(match rest.split_once('/') {
        Some((dir, _)) => format!("{dir}/"),
        None => rest.to_string(),
    })
}

fn circles(arrows: &Arrows) -> Vec<Circle> {
    let mut folders: BTreeSet<String> = BTreeSet::new();
    for (from, to) in arrows.keys() {
        for f in [from, to] {
            let mut dir = f.as_str();
            while let Some((d, _)) = dir.rsplit_once('/') {
                folders.insert(d.to_string());
                dir = d;
            }
        }
    }
    folders.insert(String::new());
    let mut found = Vec::new();
    for folder in folders {
        let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for ((from, to), names) in arrows {
            let (Some(a), Some(b)) = (node_in(&folder, from), node_in(&folder, to)) else { continue };
            if a != b {
                // Between files the names say it all; between folders, which files too.
                let folders = a.ends_with('/') || b.ends_with('/');
                let ties = edges.entry((a, b)).or_default();
                ties.extend(names.iter().map(|n| if folders { format!("{n} ({from} → {to})") } else { n.clone() }));
            }
        }
        for scc in strongly_connected(&edges) {
            let ties = edges
                .iter()
                .filter(|((a, b), _)| scc.contains(a) && scc.contains(b))
                .map(|((a, b), names)| format!("{a} → {b}: {}", names.iter().cloned().collect::<Vec<_>>().join(", ")))
                .collect();
            found.push(Circle { folder: folder.clone(), nodes: scc, ties });
        }
    }
    found
}

/// Tarjan's strongly connected components of two or more nodes.
fn strongly_connected(edges: &BTreeMap<(String, String), BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let index_of: BTreeMap<&String, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let names: Vec<&String> = nodes.iter().copied().collect();
    let mut next = vec![Vec::new(); names.len()];
    for (a, b) in edges.keys() {
        next[index_of[a]].push(index_of[b]);
    }
    struct T {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        count: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(v: usize, next: &[Vec<usize>], t: &mut T) {
        t.index[v] = Some(t.count);
        t.low[v] = t.count;
        t.count += 1;
        t.stack.push(v);
        t.on[v] = true;
        for &w in &next[v] {
            match t.index[w] {
                None => {
                    visit(w, next, t);
                    t.low[v] = t.low[v].min(t.low[w]);
                }
                Some(i) if t.on[w] => t.low[v] = t.low[v].min(i),
                _ => {}
            }
        }
        if Some(t.low[v]) == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on[w] = false;
                scc.push(w);
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                t.out.push(scc);
            }
        }
    }
    let n = names.len();
    let mut t = T { index: vec![None; n], low: vec![0; n], on: vec![false; n], stack: Vec::new(), count: 0, out: Vec::new() };
    for v in 0..n {
        if t.index[v].is_none() {
            visit(v, &next, &mut t);
        }
    }
    t.out.into_iter().map(|scc| scc.into_iter().map(|i| names[i].clone()).collect()).collect()
}

/// Circles known and not yet untangled: `(folder, its nodes)`. A circle must be one of these;
/// an entry that no longer matches a circle must go. Empty: the house has none.
const ALLOWED: &[(&str, &[&str])] = &[];

fn crate_sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("src/ entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(&root).expect("below src/").to_string_lossy().replace('\\', "/");
                if rel != "main.rs" {
                    let text = std::fs::read_to_string(&path).expect("read a source file");
                    out.push(Source { path: rel, text });
                }
            }
        }
    }
    out
}

fn report(found: &[Circle]) -> String {
    found
        .iter()
        .map(|c| {
            let folder = if c.folder.is_empty() { "src/".to_string() } else { format!("src/{}/", c.folder) };
            let nodes: Vec<&str> = c.nodes.iter().map(String::as_str).collect();
            format!("circle in {folder}: {}\n  {}", nodes.join(" ↔ "), c.ties.join("\n  "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_circle_between_files_of_a_folder_or_between_wings() {
    let sources = crate_sources();
    assert!(sources.len() > 50, "the crate's files were not found ({} read)", sources.len());
    let arrows = file_graph(&sources);
    assert!(arrows.len() > 100, "too few arrows to be the crate's graph ({})", arrows.len());
    let found = circles(&arrows);
    let unexpected: Vec<Circle> = found
        .into_iter()
        .filter(|c| !ALLOWED.iter().any(|(folder, nodes)| *folder == c.folder && c.nodes.iter().all(|n| nodes.contains(&n.as_str()))))
        .collect();
    assert!(unexpected.is_empty(), "import circles in src/:\n{}", report(&unexpected));
}

#[test]
fn every_allowed_circle_still_exists() {
    let found = circles(&file_graph(&crate_sources()));
    for (folder, nodes) in ALLOWED {
        let present = found.iter().any(|c| c.folder == *folder && c.nodes.iter().any(|n| nodes.contains(&n.as_str())));
        assert!(present, "the allowed circle {folder}: {nodes:?} is gone; remove it from ALLOWED");
    }
}

fn fake(files: &[(&str, &str)]) -> Vec<Source> {
    files.iter().map(|(p, t)| Source { path: p.to_string(), text: t.to_string() }).collect()
}

#[test]
fn self_test_a_circle_between_files_is_reported_with_its_names() {
    let sources = fake(&[
        ("lib.rs", "pub mod w;"),
        ("w/mod.rs", "mod a; mod b; mod c;\npub use a::Alpha;"),
        ("w/a.rs", "use super::b::{Beta, other};\npub struct Alpha;"),
        ("w/b.rs", "pub struct Beta; fn f(_: crate::w::c::Gamma) {}\npub fn other() {}"),
        ("w/c.rs", "// use super::a::Alpha; in a comment is no import\nconst S: &str = \"crate::w::b::Beta\";\npub struct Gamma(super::Alpha);"),
    ]);
    let found = circles(&file_graph(&sources));
    assert_eq!(found.len(), 1, "{}", report(&found));
    let text = report(&found);
    assert!(text.contains("circle in src/w/: a.rs ↔ b.rs ↔ c.rs"), "{text}");
    // The re-export in mod.rs is followed to the file that defines Alpha.
    assert!(text.contains("c.rs → a.rs: Alpha"), "{text}");
    assert!(text.contains("a.rs → b.rs: Beta, other"), "{text}");
    assert!(text.contains("b.rs → c.rs: Gamma"), "{text}");
}

#[test]
fn self_test_a_circle_between_wings_is_reported_and_test_modules_are_not_imports() {
    let sources = fake(&[
        ("lib.rs", "pub mod up; pub mod down; pub mod leaf;"),
        ("up/mod.rs", "use crate::down::Low; use crate::leaf::Leaf;"),
        ("down/mod.rs", "mod cli;\npub struct Low;\n#[cfg(test)]\nmod tests { use crate::up::x; }"),
        ("down/cli.rs", "use crate::{leaf::Leaf, up::{self, Config as C}};"),
        ("leaf.rs", "pub struct Leaf;"),
    ]);
    let found = circles(&file_graph(&sources));
    let text = report(&found);
    assert_eq!(found.len(), 1, "{text}");
    assert!(text.contains("circle in src/: down/ ↔ up/"), "{text}");
    assert!(text.contains("down/ → up/: Config (down/cli.rs → up/mod.rs), up (down/cli.rs → up/mod.rs)"), "{text}");
    // Without the arrow back up, no circle; the test module's import does not count.
    let sources = fake(&[
        ("lib.rs", "pub mod up; pub mod down;"),
        ("up/mod.rs", "use crate::down::Low;"),
        ("down/mod.rs", "pub struct Low;\n#[cfg(test)]\nmod tests { use crate::up::x; }"),
    ]);
    assert!(circles(&file_graph(&sources)).is_empty());
}

/// The wings' arrows are the ones docs/ARCHITECTURE.md's table of floors says: a new arrow
/// between wings (or one gone) is drawn there in the same change.
#[test]
fn the_wings_import_what_the_architecture_note_says() {
    let arrows = file_graph(&crate_sources());
    let mut wings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in arrows.keys() {
        let (Some(a), Some(b)) = (node_in("", from), node_in("", to)) else { continue };
        if a != b {
            wings.entry(a).or_default().insert(b);
        }
    }
    // `sim/` → `sim`, `date.rs` → `date`: the note's names.
    let name = |n: &str| n.trim_end_matches('/').trim_end_matches(".rs").to_string();
    let code: BTreeMap<String, BTreeSet<String>> = wings.iter().map(|(w, to)| (name(w), to.iter().map(|t| name(t)).collect())).collect();
    let note = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md")).unwrap();
    let ticked = |cell: &str| cell.split('`').skip(1).step_by(2).map(String::from).collect::<Vec<_>>();
    let mut said: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in note.lines().filter(|l| l.starts_with("| ") && l[2..].starts_with(|c: char| c.is_ascii_digit())) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (Some(wing_cell), Some(imports)) = (cells.get(2), cells.get(3)) else { continue };
        for wing in ticked(wing_cell).into_iter().filter(|w| w != "main.rs") {
            let to: BTreeSet<String> = ticked(imports).into_iter().collect();
            if !to.is_empty() {
                said.insert(wing, to);
            }
        }
    }
    assert!(!said.is_empty(), "docs/ARCHITECTURE.md has no table of floors");
    assert_eq!(code, said, "the wings' imports (left) and docs/ARCHITECTURE.md's table of floors (right) differ");
}
