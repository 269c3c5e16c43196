//! The crate's structure: no import cycle between its top-level modules (a cycle means two
//! modules that cannot be understood, tested or changed apart), commands apart from the core
//! (no command imports another, nothing but the command line imports a command), and the
//! utilities in `support/` free of everything else. Read from the source text: every
//! `crate::name` a module's files mention is an edge to module `name`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level modules (`src/x.rs` or `src/x/`) and the others each one refers to.
fn module_edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        collect_rust_files(&path, &mut files);
        let mut targets = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (at, _) in text.match_indices("crate::") {
                for target in referenced_modules(&text[at + "crate::".len()..]) {
                    if target != name {
                        targets.insert(target);
                    }
                }
            }
        }
        edges.insert(name, targets);
    }
    edges
}

/// The modules named right after `crate::`: one (`crate::optim::cg`) or a group
/// (`crate::{data, optim::{self, cg}}`).
fn referenced_modules(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
    };
    let (mut depth, mut start, mut names) = (0usize, 0usize, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                names.push(ident(&group[start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                names.push(ident(&group[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    names.into_iter().filter(|s| !s.is_empty()).collect()
}

fn collect_rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            collect_rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// A cycle through the graph, as the modules in order, if there is one (depth-first search).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let edges = module_edges(&crate::common::repository_root().join("src"));
    assert!(edges.len() > 15, "modules found: {:?}", edges.keys());
    // The reader sees what it must: a module known to use another is an edge.
    assert!(edges["train"].contains("optim") && edges["curvature"].contains("optim"));
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
    // Grouped imports count too.
    assert_eq!(
        referenced_modules("{data::Dataset, optim::{self, cg}, model};"),
        ["data", "optim", "model"]
    );
    // And the search finds a cycle where there is one.
    let mut with_cycle = edges.clone();
    with_cycle
        .get_mut("optim")
        .unwrap()
        .insert("train".to_string());
    assert!(find_cycle(&with_cycle).is_some());
}

/// The `crate::commands::<name>` and `super::<name>` modules a file's text refers to.
fn commands_referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["crate::commands::", "super::"] {
        for (at, _) in text.match_indices(prefix) {
            names.extend(referenced_modules(&text[at + prefix.len()..]));
        }
    }
    names
}

#[test]
fn commands_stand_apart_from_each_other_and_from_the_core() {
    let src = crate::common::repository_root().join("src");
    let commands: BTreeSet<String> = std::fs::read_dir(src.join("commands"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_stem().unwrap() != "mod")
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "train",
        "eval",
        "predict",
        "export",
        "compare",
        "plot",
        "curvature",
    ] {
        assert!(commands.contains(expected), "commands found: {commands:?}");
    }
    // No command imports another: what two commands share belongs to the core.
    let mut files = Vec::new();
    collect_rust_files(&src.join("commands"), &mut files);
    for file in &files {
        let own = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(file).unwrap();
        let others: Vec<String> = commands_referenced(&text)
            .into_iter()
            .filter(|name| commands.contains(name) && *name != own)
            .collect();
        assert!(
            others.is_empty(),
            "{} imports the commands {others:?}",
            file.display()
        );
    }
    // The core never imports a command; only the command line (cli.rs) dispatches to them.
    let mut files = Vec::new();
    collect_rust_files(&src, &mut files);
    for file in files
        .iter()
        .filter(|f| !f.starts_with(src.join("commands")))
    {
        let name = file.file_name().unwrap();
        let text = std::fs::read_to_string(file).unwrap();
        if name != "cli.rs" && name != "lib.rs" {
            assert!(
                !text.contains("crate::commands"),
                "{} imports a command",
                file.display()
            );
        }
    }
    // The check sees an import where there is one.
    assert_eq!(
        commands_referenced("use crate::commands::bench::run; super::eval::x"),
        BTreeSet::from(["bench".to_string(), "eval".to_string()])
    );
}

#[test]
fn support_modules_know_nothing_of_training() {
    let edges = module_edges(&crate::common::repository_root().join("src"));
    let support = &edges["support"];
    assert!(
        support.is_empty(),
        "support/ imports {support:?}: a utility that needs those belongs beside them"
    );
}

/// The longest a function may be, from its `fn` line to its closing brace: longer ones do
/// several things that have names of their own.
const MAX_FUNCTION_LINES: usize = 100;

/// `text` with its comments, string literals and character literals blanked out (line
/// breaks kept), so that only the code's `fn`s and braces are left to count.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, span: &[char]| {
        out.extend(span.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
    };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let rest = &chars[i..];
        let after_ident = i > 0 && ident(chars[i - 1]);
        let end = if rest.starts_with(&['/', '/']) {
            i + rest.iter().position(|&c| c == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            // Block comments nest.
            let (mut depth, mut j) = (0usize, i);
            while j < chars.len() {
                if chars[j..].starts_with(&['/', '*']) {
                    depth += 1;
                    j += 2;
                } else if chars[j..].starts_with(&['*', '/']) {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if !after_ident && (rest.starts_with(&['r', '"']) || rest.starts_with(&['r', '#'])) {
            // A raw string: r"..." or r#"..."#, ended by the quote and as many hashes.
            let hashes = rest[1..].iter().take_while(|&&c| c == '#').count();
            if rest.get(1 + hashes) != Some(&'"') {
                out.push(chars[i]);
                i += 1;
                continue;
            }
            let mut j = i + 2 + hashes;
            while j < chars.len()
                && !(chars[j] == '"' && chars[j + 1..].iter().take(hashes).all(|&c| c == '#'))
            {
                j += 1;
            }
            j + 1 + hashes
        } else if rest[0] == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if rest[0] == '\'' && rest.get(1) == Some(&'\\') {
            // An escaped character literal: '\n', '\'', '\u{1F600}'.
            let close = rest
                .get(3..)
                .and_then(|r| r.iter().position(|&c| c == '\''));
            i + 3 + close.map_or(0, |p| p + 1)
        } else if rest[0] == '\'' && rest.get(2) == Some(&'\'') {
            i + 3
        } else {
            // Code, a lifetime among it.
            out.push(chars[i]);
            i += 1;
            continue;
        };
        let end = end.min(chars.len());
        blank(&mut out, &chars[i..end]);
        i = end;
    }
    out
}

/// Each function with a body in `text`: its name, the line of its `fn` and its length in
/// lines up to its closing brace. Declarations without a body (`fn f();`) and `fn` pointer
/// types (`fn(u8) -> u8`) are not functions.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let code = code_only(text);
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    for (at, _) in code.match_indices("fn") {
        let before_ok = at == 0 || !ident(bytes[at - 1]);
        let after = &code[at + 2..];
        let name: String = after
            .trim_start()
            .chars()
            .take_while(|&c| c.is_alphanumeric() || c == '_')
            .collect();
        if !before_ok || !after.starts_with(char::is_whitespace) || name.is_empty() {
            continue;
        }
        // The body's opening brace: the first `{` outside the signature's brackets, unless a
        // `;` ends a declaration first.
        let mut depth = 0i64;
        let mut open = None;
        for (i, b) in after.bytes().enumerate() {
            match b {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => break,
                b'{' if depth == 0 => {
                    open = Some(at + 2 + i);
                    break;
                }
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let mut braces = 0i64;
        let close = code[open..].bytes().position(|b| {
            match b {
                b'{' => braces += 1,
                b'}' => braces -= 1,
                _ => {}
            }
            braces == 0
        });
        let close = open + close.expect("every opening brace of a function is closed");
        let first = line_of(at);
        found.push((name, first, line_of(close) - first + 1));
    }
    found
}

#[test]
fn no_function_is_longer_than_100_lines() {
    let root = crate::common::repository_root();
    let mut files = Vec::new();
    collect_rust_files(&root.join("src"), &mut files);
    files.sort();
    let (mut counted, mut offenders) = (0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (name, line, lines) in functions(&text) {
            counted += 1;
            if lines > MAX_FUNCTION_LINES {
                let path = file.strip_prefix(&root).unwrap_or(file);
                offenders.push(format!("{}:{line} {name}: {lines} lines", path.display()));
            }
        }
    }
    assert!(counted > 300, "only {counted} functions found in src/");
    // The count sees through what is not code: braces in strings, comments and character
    // literals, lifetimes, declarations without a body, `fn` pointer types.
    let sample = "/// fn doc() {\nfn a<'x>(s: &'x str, f: fn(u8) -> u8) -> char {\n    \
                  let _ = (\"}\", r#\"{\"#, '{', '\\'', '\\n', /* } /* } */ */ 1);\n    '}'\n}\n\
                  trait T { fn b(&self); }\nfn c() {}\n";
    assert_eq!(
        functions(sample),
        [("a".to_string(), 2, 4), ("c".to_string(), 7, 1)]
    );
    assert!(
        offenders.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (from `fn` to the closing brace); split \
         each where its pieces have names of their own:\n  {}",
        offenders.join("\n  ")
    );
}
