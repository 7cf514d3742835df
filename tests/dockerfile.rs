//! The container image's build stage has every file the release build reads: each `COPY` of
//! the Dockerfile's first stage against the files `src/` pulls in with `include_str!` or
//! `include_bytes!` (outside its tests). A file the build reads and the stage does not copy
//! fails `docker build` with "couldn't read …", which no other test would see (CI has no
//! Docker daemon).

use std::path::{Component, Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The sources of the `COPY` lines before the build stage's `RUN cargo build`, as paths from
/// the repository's root; `COPY --from=…` copies from another stage and is left out.
fn build_stage_copies(dockerfile: &str) -> Vec<PathBuf> {
    let mut copies = Vec::new();
    let mut stages = 0;
    for line in dockerfile.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next().map(str::to_ascii_uppercase).as_deref() {
            Some("FROM") => {
                stages += 1;
                if stages > 1 {
                    break;
                }
            }
            Some("RUN") if line.contains("cargo build") => break,
            Some("COPY") => {
                let args: Vec<&str> = words.collect();
                if args.iter().any(|a| a.starts_with("--from")) {
                    continue;
                }
                let sources = args.iter().filter(|a| !a.starts_with("--"));
                let n = sources.clone().count();
                // The last argument is the destination.
                copies.extend(sources.take(n.saturating_sub(1)).map(|s| PathBuf::from(s.trim_end_matches('/'))));
            }
            _ => {}
        }
    }
    copies
}

/// `a/b/../c` as `a/c`, without touching the disk.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The files `file` (a path from the root) includes before its first `#[cfg(test)]`, as paths
/// from the root.
fn included_by(file: &Path, text: &str) -> Vec<PathBuf> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = Vec::new();
    for mac in ["include_str!(\"", "include_bytes!(\""] {
        for (at, _) in code.match_indices(mac) {
            let rest = &code[at + mac.len()..];
            let rel = &rest[..rest.find('"').expect("an include's path ends")];
            found.push(normalise(&file.parent().unwrap().join(rel)));
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_build_stage_copies_every_file_the_build_includes() {
    let copies = build_stage_copies(&std::fs::read_to_string(root().join("Dockerfile")).unwrap());
    assert!(copies.contains(&PathBuf::from("src")), "the build stage copies src: {copies:?}");
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut included = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root()).unwrap().to_path_buf();
        included.extend(included_by(&rel, &std::fs::read_to_string(&file).unwrap()));
    }
    assert!(included.contains(&PathBuf::from("src/agent/console/assets/index.html")), "the includes are found: {included:?}");
    let missing: Vec<_> = included.iter().filter(|f| !copies.iter().any(|c| f.starts_with(c))).collect();
    assert!(missing.is_empty(), "the Dockerfile's build stage does not COPY {missing:?}, which the build includes (it copies {copies:?})");
}

#[test]
fn copies_are_read_from_the_build_stage_only() {
    let dockerfile = "FROM rust AS build\nCOPY Cargo.toml Cargo.lock ./\ncopy src ./src\nCOPY --from=x /a /b\nRUN cargo build --release\nCOPY scripts ./scripts\nFROM debian\nCOPY deploy/x.toml /etc/\n";
    assert_eq!(build_stage_copies(dockerfile), [PathBuf::from("Cargo.toml"), PathBuf::from("Cargo.lock"), PathBuf::from("src")]);
    let text = "const A: &str = include_str!(\"../../README.md\");\n#[cfg(test)]\nmod t { const B: &[u8] = include_bytes!(\"x.json\"); }";
    assert_eq!(included_by(Path::new("src/tools/manual.rs"), text), [PathBuf::from("README.md")]);
}
