//! No unused dependency: every crate a workspace member declares is named in its code.
//!
//! For each member listed in the root `Cargo.toml`, its `[dependencies]` must be named in its
//! `src/` (a dependency only the tests or examples use belongs in `[dev-dependencies]`), its
//! `[dev-dependencies]` in `src/` (`#[cfg(test)]` modules), `tests/`, `examples/` or `benches/`,
//! and its `[build-dependencies]` in `build.rs`. "Named" means a path that starts with the crate
//! (`name::…`), `use name` or `extern crate name`, outside comments and string literals, the
//! crate name being the dependency's key with `-` turned into `_`.
//!
//! Not seen: `#[cfg]` (a crate named only under a disabled cfg counts as used) and a local
//! module that has a dependency's name (its paths count as uses of the crate). A crate needed
//! without being named (pulled in for a feature, linked for a symbol) goes in [`UNUSED_ALLOWED`].

#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};

/// Dependencies declared but not named in the code, on purpose: (member dir, key as declared,
/// why). An entry whose crate is named after all is reported too, so the list stays true.
const UNUSED_ALLOWED: &[(&str, &str, &str)] = &[];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Normal,
    Dev,
    Build,
}

#[test]
fn every_declared_dependency_is_used() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for member in workspace_members(root) {
        let allowed: Vec<&str> = UNUSED_ALLOWED
            .iter()
            .filter(|(dir, _, _)| *dir == member)
            .map(|(_, name, _)| *name)
            .collect();
        problems.extend(
            check_member(&root.join(&member), &allowed)
                .into_iter()
                .map(|p| format!("{member}: {p}")),
        );
    }
    for (dir, name, _) in UNUSED_ALLOWED {
        let declared = dependencies(&root.join(dir).join("Cargo.toml"));
        if !declared.iter().any(|(declared, _)| declared == name) {
            problems.push(format!(
                "{dir}: `{name}` is in UNUSED_ALLOWED but not declared: remove the entry"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "unused dependencies (remove them, or see UNUSED_ALLOWED in tests/dependencies.rs):\n  {}",
        problems.join("\n  ")
    );
}

/// The check against a member made up for it, so a change that blinds it shows here.
#[test]
fn a_made_up_member_shows_each_kind_of_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path();
    let write = |rel: &str, text: &str| {
        let path = m.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        r#"[package]
name = "made-up"

[dependencies]
used-crate = "1"
"quoted" = { version = "1", features = [
    "multi-line",
    "array",
] }
unused-crate = "1"
only-in-tests = { version = "1" }
in-a-comment = "1"
in-a-string = "1"
method-only = "1"
allowed-crate = "1"
allowed-but-used = "1"
renamed.workspace = true

[dependencies.table-form]
version = "1"

[target.'cfg(target_os = "linux")'.dependencies]
linux-only = "1"

[dev-dependencies]
dev-used = "1"
dev-unused = "1"

[build-dependencies]
build-used = "1"
"#,
    );
    write(
        "src/lib.rs",
        r##"use used_crate::Thing;
use std::io::{self, quoted};
// in_a_comment::nothing()
/* a /* nested */ in_a_comment::block */
const S: &str = "in_a_string::not_code";
const R: &str = r#"in_a_string::raw"#;
fn f<'a>(x: &'a str) -> char { x.method_only::<u8>(); 'x' }
extern crate renamed;
fn g() { allowed_but_used::go(); let _ = ('\'', "\"", b'"'); }
"##,
    );
    write("tests/t.rs", "use only_in_tests::X;\n");
    write("examples/e.rs", "fn main() { dev_used::go() }\n");
    write("build.rs", "fn main() { build_used::go() }\n");
    let problems = check_member(m, &["allowed-crate", "allowed-but-used"]);
    assert_eq!(
        problems,
        [
            "`allowed-but-used` is named in the code: remove it from UNUSED_ALLOWED",
            "`in-a-comment` is never named in src/",
            "`in-a-string` is never named in src/",
            "`linux-only` is never named in src/",
            "`method-only` is never named in src/",
            "`only-in-tests` is named only in tests, examples or benches: make it a dev-dependency",
            "`quoted` is never named in src/",
            "`table-form` is never named in src/",
            "`unused-crate` is never named in src/",
            "`dev-unused` (dev) is never named in src/, tests/, examples/ or benches/",
        ]
    );
}

/// The problems of one member: unused dependencies, and allowed ones that are used.
fn check_member(dir: &Path, allowed: &[&str]) -> Vec<String> {
    let src = crate_paths(&rust_files(&[dir.join("src")]));
    let others = crate_paths(&rust_files(&[
        dir.join("tests"),
        dir.join("examples"),
        dir.join("benches"),
    ]));
    let build = crate_paths(&rust_files(&[dir.join("build.rs")]));
    let mut problems = Vec::new();
    let mut deps: Vec<(Kind, String)> = dependencies(&dir.join("Cargo.toml"))
        .into_iter()
        .map(|(name, kind)| (kind, name))
        .collect();
    deps.sort();
    for (kind, name) in deps {
        let ident = name.replace('-', "_");
        let (in_src, in_others) = (src.contains(&ident), others.contains(&ident));
        let problem = match kind {
            Kind::Normal if in_src => None,
            Kind::Normal if in_others => Some(format!(
                "`{name}` is named only in tests, examples or benches: make it a dev-dependency"
            )),
            Kind::Normal => Some(format!("`{name}` is never named in src/")),
            Kind::Dev if in_src || in_others => None,
            Kind::Dev => Some(format!(
                "`{name}` (dev) is never named in src/, tests/, examples/ or benches/"
            )),
            Kind::Build if build.contains(&ident) => None,
            Kind::Build => Some(format!("`{name}` (build) is never named in build.rs")),
        };
        match (problem, allowed.contains(&name.as_str())) {
            (Some(p), false) => problems.push(p),
            (None, true) => problems.push(format!(
                "`{name}` is named in the code: remove it from UNUSED_ALLOWED"
            )),
            _ => {}
        }
    }
    problems
}

/// The member dirs of the workspace, relative to the root (`.` for the root package).
fn workspace_members(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut members = Vec::new();
    if text.lines().any(|l| l.trim() == "[package]") {
        members.push(".".to_string());
    }
    let start = text
        .find("members")
        .expect("the root Cargo.toml lists its members");
    let list = &text[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    for quoted in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let dir = quoted.trim_matches('"');
        assert!(
            !dir.contains('*'),
            "member globs are not supported here: {dir}"
        );
        if dir != "." && !members.iter().any(|m| m == dir) {
            members.push(dir.to_string());
        }
    }
    members
}

/// The dependencies a `Cargo.toml` declares, by key, from the tables `[dependencies]`,
/// `[dependencies.NAME]` and their `dev-`, `build-` and `[target.CFG.…]` forms. A small line
/// parser: a table header, then `key = value` lines, a value spanning lines until its brackets
/// close.
fn dependencies(manifest: &Path) -> Vec<(String, Kind)> {
    let text =
        std::fs::read_to_string(manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut deps = Vec::new();
    let mut table: Option<Kind> = None;
    let mut depth = 0i32;
    for line in text.lines() {
        let line = strip_toml_comment(line).trim();
        if depth > 0 {
            depth += bracket_balance(line);
            continue;
        }
        if line.starts_with('[') {
            let header = line.trim_start_matches('[').trim_end_matches(']');
            let keys = dotted_keys(header);
            let keys: Vec<&str> = match keys.first().map(String::as_str) {
                Some("target") if keys.len() >= 3 => keys[2..].iter().map(String::as_str).collect(),
                _ => keys.iter().map(String::as_str).collect(),
            };
            let kind = match keys.first().copied() {
                Some("dependencies") => Some(Kind::Normal),
                Some("dev-dependencies") => Some(Kind::Dev),
                Some("build-dependencies") => Some(Kind::Build),
                _ => None,
            };
            table = None;
            match (kind, keys.get(1)) {
                (Some(kind), Some(name)) => {
                    deps.push((name.to_string(), kind));
                }
                (Some(kind), None) => table = Some(kind),
                (None, _) => {}
            }
            continue;
        }
        let (Some(kind), Some(eq)) = (table, line.find('=')) else {
            continue;
        };
        let name = dotted_keys(&line[..eq]).remove(0);
        deps.push((name, kind));
        depth += bracket_balance(&line[eq + 1..]);
    }
    deps
}

/// The parts of a dotted TOML key, unquoted: `target.'cfg(unix)'.dependencies` gives three.
fn dotted_keys(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote = None;
    for c in key.trim().chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '.') => parts.push(String::new()),
            (None, c) if c.is_whitespace() => {}
            _ => parts.last_mut().unwrap().push(c),
        }
    }
    parts
}

/// Opening minus closing brackets and braces outside strings.
fn bracket_balance(text: &str) -> i32 {
    let mut quote = None;
    let mut balance = 0;
    for c in text.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '[' | '{') => balance += 1,
            (None, ']' | '}') => balance -= 1,
            _ => {}
        }
    }
    balance
}

fn strip_toml_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The `.rs` files at or under the given paths (missing ones skipped).
fn rust_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_file() {
            files.push(path.clone());
        } else if path.is_dir() {
            for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
                let entry = entry.unwrap();
                if entry.file_type().is_file() && entry.path().extension() == Some("rs".as_ref()) {
                    files.push(entry.into_path());
                }
            }
        }
    }
    files
}

/// The identifiers that start a path in these files: `name::…` (not after `::` or `.`),
/// `use name` and `extern crate name`.
fn crate_paths(files: &[PathBuf]) -> Vec<String> {
    let mut names = Vec::new();
    for file in files {
        let tokens = tokens(&std::fs::read_to_string(file).unwrap());
        for (i, token) in tokens.iter().enumerate() {
            let Token::Ident(name) = token else { continue };
            let before = |n: usize| i.checked_sub(n).map(|j| &tokens[j]);
            let path_start = tokens.get(i + 1..i + 3)
                == Some(&[Token::Punct(':'), Token::Punct(':')])
                && !matches!(before(1), Some(Token::Punct(':' | '.')));
            let after_use = before(1) == Some(&Token::Ident("use".into()));
            let extern_crate = before(1) == Some(&Token::Ident("crate".into()))
                && before(2) == Some(&Token::Ident("extern".into()));
            if path_start || after_use || extern_crate {
                names.push(name.clone());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[derive(Debug, PartialEq)]
enum Token {
    /// An identifier, keyword or number.
    Ident(String),
    Punct(char),
}

/// Rust source as identifiers and punctuation, without comments, strings and char literals.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime or label ('a).
            if next == Some('\\') {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if is_ident(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // Raw strings: r"…", r#"…"#, br"…", cr"…".
            let hashes = chars[i..].iter().take_while(|&&c| c == '#').count();
            if matches!(word.as_str(), "r" | "br" | "cr") && chars.get(i + hashes) == Some(&'"') {
                let end: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                i += hashes + 1;
                while i < chars.len() && !chars[i..].starts_with(&end) {
                    i += 1;
                }
                i += end.len();
            } else {
                tokens.push(Token::Ident(word));
            }
        } else {
            if !c.is_whitespace() {
                tokens.push(Token::Punct(c));
            }
            i += 1;
        }
    }
    tokens
}
