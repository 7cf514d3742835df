//! The minimum Rust version is true and kept true: Cargo.toml's `rust-version` covers every
//! package that Cargo.lock pins, and the Dockerfile builds with that very toolchain.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// A `rust-version` ("1.91", "1.91.0") as numbers, for comparing: missing parts are 0.
fn parse_version(v: &str) -> Result<(u64, u64, u64), String> {
    let mut parts = v.trim().split('.').map(|p| p.parse::<u64>().map_err(|_| format!("not a Rust version: {v:?}")));
    let major = parts.next().ok_or_else(|| format!("not a Rust version: {v:?}"))??;
    let minor = parts.next().transpose()?.unwrap_or(0);
    let patch = parts.next().transpose()?.unwrap_or(0);
    if parts.next().is_some() {
        return Err(format!("not a Rust version: {v:?}"));
    }
    Ok((major, minor, patch))
}

/// The packages of a `cargo metadata --format-version 1` document that need a newer Rust than
/// `msrv`, as "name version needs Rust X" (highest first); an error if the document or a
/// version cannot be read.
fn needing_newer_rust(metadata: &Value, msrv: &str) -> Result<Vec<String>, String> {
    let ours = parse_version(msrv)?;
    let packages = metadata["packages"].as_array().ok_or("the metadata has no \"packages\" list")?;
    let mut newer = Vec::new();
    for p in packages {
        let Some(needs) = p["rust_version"].as_str() else {
            continue;
        };
        let version = parse_version(needs).map_err(|e| format!("{}: {e}", p["name"]))?;
        if version > ours {
            newer.push((version, format!("{} {} needs Rust {needs}", p["name"].as_str().unwrap_or("?"), p["version"].as_str().unwrap_or("?"))));
        }
    }
    newer.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(newer.into_iter().map(|(_, line)| line).collect())
}

/// Passes when every package covers `msrv`; otherwise the message names each one that does not.
fn check_msrv(metadata: &Value, msrv: &str) -> Result<(), String> {
    let newer = needing_newer_rust(metadata, msrv)?;
    if newer.is_empty() {
        Ok(())
    } else {
        Err(format!("rust-version = \"{msrv}\" in Cargo.toml, but Cargo.lock pins packages that need a newer Rust (raise rust-version and the Dockerfile's toolchain, or pin older versions): {}", newer.join("; ")))
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `rust-version` from Cargo.toml.
fn our_rust_version() -> String {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml")).unwrap().parse().unwrap();
    manifest["package"]["rust-version"].as_str().expect("Cargo.toml sets package.rust-version").to_string()
}

/// `cargo metadata` of this package, every locked package (all platforms) included. Offline
/// first (from the local registry cache); online if some platform's crate was never downloaded.
fn locked_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = root().join("Cargo.toml");
    let run = |offline: bool| {
        let mut c = Command::new(&cargo);
        c.args(["metadata", "--locked", "--format-version", "1", "--manifest-path"]).arg(&manifest);
        if offline {
            c.arg("--offline");
        }
        c.output().unwrap_or_else(|e| panic!("{cargo}: {e}"))
    };
    let mut out = run(true);
    if !out.status.success() {
        eprintln!("cargo metadata --offline failed, trying online: {}", String::from_utf8_lossy(&out.stderr).trim());
        out = run(false);
    }
    assert!(out.status.success(), "cargo metadata --locked: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn rust_version_covers_every_locked_package() {
    let msrv = our_rust_version();
    let metadata = locked_metadata();
    let packages = metadata["packages"].as_array().unwrap();
    assert!(packages.len() > 100, "every locked package, all platforms: {}", packages.len());
    // The metadata's own view of Cargo.toml agrees (it is what cargo enforces).
    let ours = packages.iter().find(|p| p["name"] == "ucwa-agent").unwrap();
    assert_eq!(ours["rust_version"].as_str(), Some(msrv.as_str()));
    check_msrv(&metadata, &msrv).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_lockfile_that_needs_a_newer_rust_fails_naming_the_package() {
    let metadata = serde_json::json!({
        "packages": [
            { "name": "ucwa-agent", "version": "0.1.0", "rust_version": "1.91" },
            { "name": "old-crate", "version": "1.0.0", "rust_version": "1.56" },
            { "name": "no-msrv", "version": "0.3.0", "rust_version": null },
            { "name": "notify-types", "version": "2.3.0", "rust_version": "1.91" },
            { "name": "shiny", "version": "3.1.4", "rust_version": "1.92.1" },
            { "name": "shinier", "version": "0.9.0", "rust_version": "1.100" }
        ],
        "workspace_members": []
    });
    assert_eq!(check_msrv(&metadata, "1.91"), Err("rust-version = \"1.91\" in Cargo.toml, but Cargo.lock pins packages that need a newer Rust (raise rust-version and the Dockerfile's toolchain, or pin older versions): shinier 0.9.0 needs Rust 1.100; shiny 3.1.4 needs Rust 1.92.1".into()));
    // 1.91.0 is 1.91; 1.92.1 is newer than 1.92 but not than 1.92.1.
    assert_eq!(needing_newer_rust(&metadata, "1.91.0").unwrap().len(), 2);
    assert_eq!(needing_newer_rust(&metadata, "1.92").unwrap(), ["shinier 0.9.0 needs Rust 1.100", "shiny 3.1.4 needs Rust 1.92.1"]);
    assert!(check_msrv(&metadata, "1.100").is_ok());
    // The real lockfile's case: 1.89 declared, notify-types 2.3.0 locked.
    let e = check_msrv(&metadata, "1.89").unwrap_err();
    assert!(e.contains("notify-types 2.3.0 needs Rust 1.91") && e.contains("ucwa-agent 0.1.0 needs Rust 1.91"), "{e}");
    assert!(check_msrv(&serde_json::json!({ "packages": [{ "name": "x", "version": "1", "rust_version": "one" }] }), "1.91").is_err());
    assert!(check_msrv(&serde_json::json!({}), "1.91").is_err());
}

#[test]
fn the_dockerfile_builds_with_rust_version_and_everything_the_build_reads() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let from: Vec<&str> = dockerfile.lines().filter_map(|l| l.trim().strip_prefix("FROM rust:")).collect();
    assert_eq!(from.len(), 1, "one Rust build stage: {from:?}");
    let tag = from[0].split_whitespace().next().unwrap();
    let toolchain = tag.split('-').next().unwrap();
    assert_eq!(toolchain, our_rust_version(), "the Dockerfile's FROM rust:{tag} is not Cargo.toml's rust-version");
    let copies: Vec<&str> = dockerfile.lines().map(str::trim).filter(|l| l.starts_with("COPY ")).collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src", "benches", ".cargo"] {
        assert!(
            copies.iter().any(|l| l.split_whitespace().any(|w| w == needed || w.starts_with(&format!("{needed}/")))),
            "the build needs {needed}: {copies:?}"
        );
    }
    // .cargo/config.toml is in the build context (sets LIBSQLITE3_FLAGS for the bundled SQLite).
    let ignored = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for line in ignored.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        assert!(!".cargo/config.toml".starts_with(line.trim_end_matches(['/', '*'])), ".dockerignore leaves out .cargo: {line}");
    }
    // Test scripts stay out of the image's scripts folder.
    assert!(!copies.iter().any(|l| l.contains("scripts/*.lua")), "COPY scripts/*.lua takes the *_test.lua files too: {copies:?}");
    assert!(dockerfile.contains("-name '*_test.lua' -delete"), "the build stage removes *_test.lua before the scripts are copied");
}
