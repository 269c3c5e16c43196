//! The crate's structure: no import cycle between its top-level modules (a cycle means two
//! modules that cannot be understood, tested or changed apart). Read from the source text:
//! every `crate::name` a module's files mention is an edge to module `name`.

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
    assert!(edges.len() > 20, "modules found: {:?}", edges.keys());
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
