//! The code's layout rules, checked on the sources themselves so that they hold after every
//! change: imports only point down the layers of README's "Layout" (no cycles between
//! modules), no function in `src/` longer than 80 lines (test modules aside), and every file
//! opens with a comment of what it owns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// README "Layout", top to bottom: a module may refer to its own layer or the layers below.
const LAYERS: &[&[&str]] = &[
    &["cli", "manual"],
    &["daemon", "status", "demo"],
    &["sync", "standin"],
    &["store", "dingtalk", "notify"],
    &[
        "config",
        "lock",
        "failure",
        "telemetry",
        "signal",
        "metrics",
        "budget",
        "http",
    ],
];

/// The longest function allowed, from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 80;

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// One source file of `src/`, with its comments and literals blanked out.
struct Source {
    path: PathBuf,
    /// The top-level module the file belongs to (`sync` for `src/sync/fetch.rs`); None for
    /// the crate root files.
    module: Option<String>,
    /// Directory depth below `src/` plus one for a non-`mod.rs` file inside a directory: how
    /// many `super::` reach the crate root.
    depth: usize,
    raw: String,
    code: Vec<char>,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&root).unwrap().to_path_buf();
            let parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            let first = parts[0].trim_end_matches(".rs").to_string();
            let module = (!matches!(first.as_str(), "lib" | "main")).then_some(first);
            let depth = if parts.last().is_some_and(|f| f == "mod.rs") {
                parts.len() - 1
            } else {
                parts.len()
            };
            let raw = std::fs::read_to_string(&path).unwrap();
            let code = blank_out(&raw);
            Source {
                path: rel,
                module,
                depth,
                raw,
                code,
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text with comments, string and char literals replaced by spaces (newlines kept), so
/// that braces and paths in them are not mistaken for code.
fn blank_out(text: &str) -> Vec<char> {
    let s: Vec<char> = text.chars().collect();
    let mut out = s.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(s.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let mut i = 0;
    while i < s.len() {
        let at = |k: usize| s.get(i + k).copied().unwrap_or('\0');
        let ident_before = i > 0 && (s[i - 1].is_alphanumeric() || s[i - 1] == '_');
        if at(0) == '/' && at(1) == '/' {
            let end = s[i..]
                .iter()
                .position(|c| *c == '\n')
                .map_or(s.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if at(0) == '/' && at(1) == '*' {
            let (mut depth, mut j) = (1, i + 2);
            while j < s.len() && depth > 0 {
                if s[j] == '/' && s.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if s[j] == '*' && s.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if !ident_before && (at(0) == 'r' || (at(0) == 'b' && at(1) == 'r')) && {
            let start = if at(0) == 'r' { 1 } else { 2 };
            let hashes = s[i + start..].iter().take_while(|c| **c == '#').count();
            s.get(i + start + hashes) == Some(&'"')
        } {
            let start = if at(0) == 'r' { 1 } else { 2 };
            let hashes = s[i + start..].iter().take_while(|c| **c == '#').count();
            let body = i + start + hashes + 1;
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let text: String = s[body..].iter().collect();
            let end = text.find(&closing).map_or(s.len(), |p| {
                body + text[..p].chars().count() + closing.len()
            });
            blank(&mut out, i, end);
            i = end;
        } else if at(0) == '"' || (at(0) == 'b' && at(1) == '"' && !ident_before) {
            let mut j = i + if at(0) == 'b' { 2 } else { 1 };
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if at(0) == '\'' && (at(1) == '\\' || at(2) == '\'') {
            // A char literal ('x', '\n', '\''); anything else after a quote is a lifetime.
            let mut j = i + 1;
            if s[j] == '\\' {
                j += 2;
            }
            while j < s.len() && s[j] != '\'' {
                j += 1;
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn word_at(code: &[char], i: usize, word: &str) -> bool {
    let w: Vec<char> = word.chars().collect();
    code.get(i..i + w.len()) == Some(&w[..])
        && (i == 0 || !is_ident(code[i - 1]))
        && !code.get(i + w.len()).copied().is_some_and(is_ident)
}

fn ident_at(code: &[char], mut i: usize) -> (String, usize) {
    while i < code.len() && code[i].is_whitespace() {
        i += 1;
    }
    let start = i;
    while i < code.len() && is_ident(code[i]) {
        i += 1;
    }
    (code[start..i].iter().collect(), i)
}

fn matching_brace(code: &[char], open: usize) -> usize {
    let mut depth = 0;
    for (j, c) in code.iter().enumerate().skip(open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return j;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces");
}

fn line_of(code: &[char], i: usize) -> usize {
    code[..i].iter().filter(|c| **c == '\n').count() + 1
}

/// The ranges of `#[cfg(test)] mod name { ... }` blocks.
fn test_modules(code: &[char]) -> Vec<(usize, usize)> {
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut ranges = Vec::new();
    for at in 0..code.len().saturating_sub(marker.len()) {
        if code[at..at + marker.len()] != marker[..] {
            continue;
        }
        let (word, next) = ident_at(code, at + marker.len());
        if word == "mod" {
            let (_, next) = ident_at(code, next);
            if let Some(open) = code[next..].iter().position(|c| *c == '{') {
                let open = next + open;
                ranges.push((open, matching_brace(code, open)));
            }
        }
    }
    ranges
}

/// The top-level modules a file refers to through `crate::` and `super::` paths.
fn references(src: &Source) -> BTreeSet<String> {
    let code = &src.code;
    // Inside an inline test module, `super::` first reaches the file's own module.
    let tests = test_modules(code);
    let depth_at =
        |i: usize| src.depth + usize::from(tests.iter().any(|(a, b)| (*a..=*b).contains(&i)));
    let mut found = BTreeSet::new();
    let mut i = 0;
    while i < code.len() {
        if word_at(code, i, "crate") && code.get(i + 5..i + 7) == Some(&[':', ':']) {
            heads(code, i + 7, &mut found);
            i += 7;
        } else if word_at(code, i, "super") && code.get(i + 5..i + 7) == Some(&[':', ':']) {
            let mut ups = 0;
            let mut j = i;
            while word_at(code, j, "super") && code.get(j + 5..j + 7) == Some(&[':', ':']) {
                ups += 1;
                j += 7;
            }
            if ups >= depth_at(i) {
                heads(code, j, &mut found);
            }
            i = j;
        } else {
            i += 1;
        }
    }
    found.retain(|m| m != "self" && !m.is_empty());
    found
}

/// The first segment of a path at `i`, or of each path in a `{a::b, c}` group.
fn heads(code: &[char], i: usize, found: &mut BTreeSet<String>) {
    if code.get(i) == Some(&'{') {
        let close = matching_brace(code, i);
        let mut depth = 0;
        let mut item_start = i + 1;
        for j in i + 1..=close {
            match code[j] {
                '{' => depth += 1,
                '}' if depth > 0 => depth -= 1,
                ',' | '}' if depth == 0 => {
                    found.insert(ident_at(code, item_start).0);
                    item_start = j + 1;
                }
                _ => {}
            }
        }
    } else {
        found.insert(ident_at(code, i).0);
    }
}

#[test]
fn imports_point_down_the_layers_and_modules_form_no_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for src in sources() {
        let Some(module) = &src.module else { continue };
        let Some(from) = layer_of(module) else {
            problems.push(format!(
                "{}: module {module} is not in the layer table (README Layout, LAYERS)",
                src.path.display()
            ));
            continue;
        };
        for target in references(&src) {
            if &target == module {
                continue;
            }
            match layer_of(&target) {
                None => problems.push(format!(
                    "{}: refers to {target}, which is not in the layer table",
                    src.path.display()
                )),
                Some(to) if to < from => problems.push(format!(
                    "{}: {module} refers to {target}, a layer above it",
                    src.path.display()
                )),
                Some(_) => {
                    graph
                        .entry(module.clone())
                        .or_default()
                        .insert(target.clone());
                }
            }
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!("import cycle: {}", cycle.join(" -> ")));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|p| p == node) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_cycle_check_sees_grouped_and_inline_paths() {
    let src = Source {
        path: "sync/x.rs".into(),
        module: Some("sync".into()),
        depth: 2,
        raw: String::new(),
        code: blank_out(
            "use crate::{config::Settings, store::{a, b}};\n\
             // crate::cli::main in a comment\n\
             let s = \"crate::daemon::run\";\n\
             fn f() { crate::lock::lock_path(p); super::super::status::x(); super::ledger::y() }\n\
             #[cfg(test)]\nmod tests { use super::super::Thing; use super::super::super::telemetry; }",
        ),
    };
    let found: Vec<String> = references(&src).into_iter().collect();
    assert_eq!(found, ["config", "lock", "status", "store", "telemetry"]);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("cli", vec!["daemon"]),
        ("daemon", vec!["sync"]),
        ("sync", vec!["daemon"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph).unwrap(),
        ["daemon", "sync", "daemon"].map(String::from)
    );
}

/// `(first line, last line)` of every function outside test modules.
fn functions(code: &[char]) -> Vec<(usize, usize)> {
    let tests = test_modules(code);
    let mut found = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if tests.iter().any(|(a, b)| (*a..=*b).contains(&i)) || !word_at(code, i, "fn") {
            i += 1;
            continue;
        }
        // The body opens at the first `{` outside parentheses; a `;` first means no body.
        let mut parens = 0i32;
        let mut j = i + 2;
        let mut body = None;
        while j < code.len() {
            match code[j] {
                '(' | '[' | '<' => parens += 1,
                ')' | ']' | '>' => parens -= 1,
                '{' if parens <= 0 => {
                    body = Some(j);
                    break;
                }
                ';' if parens <= 0 => break,
                _ => {}
            }
            j += 1;
        }
        if let Some(open) = body {
            found.push((line_of(code, i), line_of(code, matching_brace(code, open))));
        }
        i += 2;
    }
    found
}

#[test]
fn no_function_is_longer_than_80_lines_and_every_file_says_what_it_owns() {
    let mut problems = Vec::new();
    for src in sources() {
        if !src.raw.starts_with("//!") {
            problems.push(format!(
                "{}: does not open with a //! comment",
                src.path.display()
            ));
        }
        for (first, last) in functions(&src.code) {
            let lines = last - first + 1;
            if lines > MAX_FN_LINES {
                problems.push(format!(
                    "{}:{first}: function of {lines} lines (at most {MAX_FN_LINES})",
                    src.path.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn function_lengths_ignore_literals_and_test_modules() {
    let code = blank_out(
        "fn a() {\n let s = \"}\";\n let c = '{';\n}\n\
         trait T { fn decl(&self) -> Vec<u8>; }\n\
         #[cfg(test)]\nmod tests {\n fn long() {\n\n\n }\n}\n\
         fn b<'x>(v: &'x [u8]) -> Option<&'x u8> where u8: Copy {\n v.first()\n}\n",
    );
    assert_eq!(functions(&code), vec![(1, 4), (13, 15)]);
}

/// Every HTTP client is built by `src/http.rs`, which installs rustls' crypto provider first:
/// a reqwest client built any other way panics at its first use (reqwest 0.13 is built with
/// `rustls-no-provider`). Checked over src/, tests/ and benches/.
#[test]
fn every_http_client_comes_from_the_http_module() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        collect(&manifest.join(dir), &mut files);
    }
    let forbidden = ["reqwest::get(", "Client::builder()", "Client::new()"];
    let mut offenders = Vec::new();
    for path in files.iter().filter(|p| !p.ends_with("src/http.rs")) {
        let code: String = blank_out(&std::fs::read_to_string(path).unwrap())
            .into_iter()
            .collect();
        for (n, line) in code.lines().enumerate() {
            if forbidden.iter().any(|f| line.contains(f)) {
                offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "build HTTP clients with roomsync::http::client_builder():\n{}",
        offenders.join("\n")
    );
}
