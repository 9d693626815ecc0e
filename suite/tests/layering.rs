//! The cache engine is a layer of its own: `runtime/src/cache/` names nothing of sessions, the
//! runtime or configuration, and neither do the leaf modules it uses (errors, statistics,
//! scopes), so it can be read, tested and benchmarked alone. Checked on the source: every
//! `crate::…` path in code (doc comments aside) must stay inside the layer.

use std::path::{Path, PathBuf};

const LAYER: &[&str] = &["cache", "error", "stats", "scope"];

fn runtime_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src")
}

/// The first segment of every `crate::` path outside doc comments, with its line.
fn crate_paths(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("///") || code.starts_with("//!") || code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let segment: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            // `crate::{a, b}`: each name in the braces.
            if segment.is_empty() && rest.starts_with('{') {
                let inner = &rest[1..rest.find('}').unwrap_or(rest.len())];
                found.extend(
                    inner.split(',').map(|s| (n + 1, s.trim().split("::").next().unwrap().to_owned())),
                );
            } else {
                found.push((n + 1, segment));
            }
        }
    }
    found
}

#[test]
fn the_cache_engine_imports_nothing_of_sessions_the_runtime_or_configuration() {
    let src = runtime_src();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(src.join("cache")).unwrap().map(|e| e.unwrap().path()).collect();
    files.extend(["error.rs", "stats.rs", "scope.rs"].map(|f| src.join(f)));
    assert!(files.len() > 10, "{files:?}");
    let mut outside = Vec::new();
    for file in &files {
        for (line, segment) in crate_paths(file) {
            if !LAYER.contains(&segment.as_str()) {
                outside.push(format!("{}:{line}: crate::{segment}", file.display()));
            }
        }
    }
    assert!(outside.is_empty(), "the cache layer reaches outside itself:\n{}", outside.join("\n"));
}

#[test]
fn the_check_sees_imports_and_paths_but_not_docs() {
    let dir = std::env::temp_dir().join(format!("connscope-layering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probe.rs");
    std::fs::write(
        &file,
        "/// [`x`](crate::session::Session)\nuse crate::{error::Error, runtime::Runtime};\nfn f() { crate::session::x(); }\n",
    )
    .unwrap();
    let found: Vec<String> = crate_paths(&file).into_iter().map(|(_, s)| s).collect();
    assert_eq!(found, ["error", "runtime", "session"]);
    let _ = std::fs::remove_dir_all(dir);
}
