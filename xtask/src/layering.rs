//! The host's layering: imports go one way, from the binary down to the foundations, and no two
//! top-level modules import each other. [`LAYERS`] is the table; [`check`] reads `host/src` and
//! names every import that goes up a layer, every cycle, and every module the table does not
//! place. A test runs it over the real tree, so `cargo test --workspace` (CI) fails on an
//! upward import.
//!
//! The sources are read by plain text scanning, not by a Rust parser: `crate::...` paths (and
//! `platform_gateway::...` in the binary) are all the check needs, and a scanner keeps xtask
//! free of dependencies. The scanner drops comments (so doc links do not count), string and
//! character literals, and every item under `#[cfg(test)]`: a test may reach up a layer to
//! check a behaviour end to end, the product may not. `super::` paths are not followed: below a
//! top-level module they stay inside it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers of the host library and its binary, top first: a module may import from its own
/// layer and from the layers below. Each entry is a module path (`state`, or `config::file` for
/// a module inside another); a module belongs to the longest entry that is a prefix of its path.
/// A top-level module that no entry names is an error: place it here.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("the binary and its subcommands", &["main", "cli"]),
    ("the wiring (lib.rs)", &["lib"]),
    // The kit drives one plugin as the gateway would and answers in the API's shapes.
    ("the conformance kit", &["kit"]),
    ("the HTTP API", &["api"]),
    (
        "the operations over a generation",
        &["gateway", "reload", "rollout", "replay"],
    ),
    ("the config, assembled from its sections", &["config"]),
    (
        "the plugin runtime, contracts and recordings",
        &["runtime", "contract", "recording"],
    ),
    ("the host capabilities", &["capability"]),
    (
        "the services",
        &["state", "metrics", "routing", "telemetry", "server"],
    ),
    ("the foundations", &["model", "config_file", "pem"]),
];

/// What [`check`] found wrong, one line each.
pub type Problems = Vec<String>;

/// Check the crate whose sources are under `src` (`lib.rs`, `main.rs`, modules).
pub fn check(src: &Path) -> Problems {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    collect(src, src, &mut files, &mut problems);
    problems.extend(check_sources(&files));
    problems
}

fn collect(src: &Path, dir: &Path, files: &mut Vec<(PathBuf, String)>, problems: &mut Problems) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return problems.push(format!("cannot read {}: {e}", dir.display())),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect(src, &path, files, problems);
        } else if path.extension().is_some_and(|e| e == "rs") {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let relative = path.strip_prefix(src).unwrap_or(&path).to_path_buf();
                    files.push((relative, text));
                }
                Err(e) => problems.push(format!("cannot read {}: {e}", path.display())),
            }
        }
    }
}

/// A file read for the check: its path, its module path, its code without comments, literals
/// and test items, and the modules it declares for tests only.
type Scanned = (PathBuf, Vec<String>, String, Vec<Vec<String>>);

/// Check `files`: (path relative to the crate's `src`, content).
pub fn check_sources(files: &[(PathBuf, String)]) -> Problems {
    let mut problems = Vec::new();
    let code: Vec<Scanned> = files
        .iter()
        .map(|(path, text)| {
            let (code, test_modules) = without_tests(&strip(text));
            (path.clone(), module_path(path), code, test_modules)
        })
        .collect();
    // Modules declared `#[cfg(test)] mod name;` live in files of their own: skip those too.
    let test_only: Vec<Vec<String>> = code
        .iter()
        .flat_map(|(path, module, _, declared)| {
            declared.iter().map(move |name| {
                let mut child = module.clone();
                if module.is_empty() && path.file_stem().is_some_and(|s| s == "main") {
                    child.push("main".into());
                }
                child.extend(name.iter().cloned());
                child
            })
        })
        .collect();
    let binary = declared_modules(files, "main.rs");
    let modules: BTreeSet<String> = code
        .iter()
        .filter_map(|(_, module, _, _)| module.first().cloned())
        .chain(declared_modules(files, "lib.rs"))
        .chain(binary.iter().cloned())
        .collect();
    // (from, to) -> the first place it happens.
    let mut edges: BTreeMap<(&'static str, &'static str), String> = BTreeMap::new();
    for (path, module, code, _) in &code {
        if test_only.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        let root = if module.is_empty() {
            if path.file_stem().is_some_and(|s| s == "main") {
                "main"
            } else {
                "lib"
            }
        } else if binary.contains(&module[0]) {
            "main"
        } else {
            "lib"
        };
        let own = if module.is_empty() {
            vec![root.to_string()]
        } else {
            module.clone()
        };
        let Some((from, from_layer)) = place(&own) else {
            problems.push(format!(
                "{}: module `{}` is in no layer: add it to LAYERS in xtask/src/layering.rs",
                path.display(),
                own.join("::")
            ));
            continue;
        };
        for (line, library, target) in references(code) {
            let target = match target.first() {
                Some(first) if modules.contains(first) => target,
                // An item of the crate root (`crate::serve`).
                _ if library => vec!["lib".to_string()],
                _ => vec![root.to_string()],
            };
            let Some((to, to_layer)) = place(&target) else {
                continue;
            };
            if to == from {
                continue;
            }
            let at = format!("{}:{line}", path.display());
            if to_layer < from_layer {
                problems.push(format!(
                    "{at}: `{from}` ({}) imports `{}` from `{to}` ({}), a higher layer",
                    LAYERS[from_layer].0,
                    target.join("::"),
                    LAYERS[to_layer].0,
                ));
            }
            if to_layer == from_layer {
                edges.entry((from, to)).or_insert(at);
            }
        }
    }
    problems.extend(cycles(&edges));
    problems
}

/// The layer entry of module `path` (its longest prefix in [`LAYERS`]) and the layer's index.
fn place(path: &[String]) -> Option<(&'static str, usize)> {
    let mut best: Option<(&'static str, usize, usize)> = None;
    for (index, (_, entries)) in LAYERS.iter().enumerate() {
        for entry in *entries {
            let parts: Vec<&str> = entry.split("::").collect();
            let matches = parts.len() <= path.len() && parts.iter().zip(path).all(|(a, b)| a == b);
            if matches && best.is_none_or(|(_, _, len)| parts.len() > len) {
                best = Some((entry, index, parts.len()));
            }
        }
    }
    best.map(|(entry, index, _)| (entry, index))
}

/// Groups of modules of one layer that import each other, directly or not (`edges` are the
/// imports inside a layer: a cycle through an upward import is reported as that import).
fn cycles(edges: &BTreeMap<(&'static str, &'static str), String>) -> Problems {
    let reach = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_string()];
        while let Some(node) = todo.pop() {
            for (from, to) in edges.keys() {
                if *from == node && seen.insert(to.to_string()) {
                    todo.push(to.to_string());
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<&str> = edges.keys().flat_map(|(a, b)| [*a, *b]).collect();
    let reachable: BTreeMap<&str, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut reported = BTreeSet::new();
    let mut problems = Vec::new();
    for node in &nodes {
        let group: BTreeSet<&str> = nodes
            .iter()
            .copied()
            .filter(|other| reachable[node].contains(*other) && reachable[other].contains(*node))
            .collect();
        if group.len() < 2 || !reported.insert(group.clone()) {
            continue;
        }
        let how: Vec<String> = edges
            .iter()
            .filter(|((a, b), _)| group.contains(a) && group.contains(b))
            .map(|((a, b), at)| format!("`{a}` imports `{b}` ({at})"))
            .collect();
        problems.push(format!(
            "import cycle among {}: {}",
            group
                .iter()
                .map(|m| format!("`{m}`"))
                .collect::<Vec<_>>()
                .join(", "),
            how.join("; ")
        ));
    }
    problems
}

/// The module path of a file: `state/etcd/codec.rs` is `state::etcd::codec`; `lib.rs`,
/// `main.rs` (the crate roots) are empty.
fn module_path(path: &Path) -> Vec<String> {
    let mut parts: Vec<String> = path
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod")
        || parts.len() == 1 && matches!(parts[0].as_str(), "lib" | "main")
    {
        parts.pop();
    }
    parts
}

/// The top-level modules that the crate root `root` (`lib.rs`, `main.rs`) declares.
fn declared_modules(files: &[(PathBuf, String)], root: &str) -> BTreeSet<String> {
    let Some((_, text)) = files.iter().find(|(p, _)| p == Path::new(root)) else {
        return BTreeSet::new();
    };
    let code = strip(text);
    let mut names = BTreeSet::new();
    for statement in code.split(';') {
        let words: Vec<&str> = statement.split_whitespace().collect();
        if let [.., "mod", name] = words.as_slice() {
            names.insert(name.to_string());
        }
    }
    names
}

/// Every `crate::` (or `platform_gateway::`) path of `code`, with its line and whether it names
/// the library from the binary: `use crate::{a, b::c}` gives `a` and `b::c`.
fn references(code: &str) -> Vec<(usize, bool, Vec<String>)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    for prefix in ["crate", "platform_gateway"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(prefix).map(|i| i + from) {
            from = at + prefix.len();
            let before = at.checked_sub(1).map(|i| bytes[i]);
            if before
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'$')
            {
                continue;
            }
            let rest = code[from..].trim_start();
            let Some(rest) = rest.strip_prefix("::") else {
                continue;
            };
            let line = code[..at].matches('\n').count() + 1;
            let mut paths = Vec::new();
            tree(rest, Vec::new(), &mut paths);
            let library = prefix == "platform_gateway";
            found.extend(paths.into_iter().map(|p| (line, library, p)));
        }
    }
    found
}

/// The paths of a use tree that starts `text` (after `prefix::`), each after `prefix`.
fn tree<'a>(text: &'a str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> &'a str {
    let mut path = prefix;
    let mut rest = text.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut inner = group;
            loop {
                inner = tree(inner, path.clone(), out).trim_start();
                match inner.strip_prefix(',') {
                    Some(next) => inner = next,
                    None => break,
                }
                if let Some(end) = inner.trim_start().strip_prefix('}') {
                    return end;
                }
            }
            return inner.trim_start().strip_prefix('}').unwrap_or(inner);
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        path.push(rest[..end].to_string());
        rest = rest[end..].trim_start();
        match rest.strip_prefix("::") {
            Some(next) => rest = next.trim_start(),
            None => break,
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
    rest
}

/// `text` with comments, string literals and character literals blanked out (newlines kept,
/// so lines still count), so that a brace or a path inside them is not read as code.
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
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
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let raw = matches!(word.as_str(), "r" | "br" | "cr")
                && matches!(chars.get(i), Some('"' | '#'));
            out.push_str(&word);
            if raw {
                let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
                if chars.get(i + hashes) == Some(&'"') {
                    let close: String = std::iter::once('"')
                        .chain(std::iter::repeat_n('#', hashes))
                        .collect();
                    let body_start = i + hashes + 1;
                    let rest: String = chars[body_start..].iter().collect();
                    let len = rest
                        .find(&close)
                        .map_or(rest.len(), |n| rest[..n].chars().count());
                    for ch in &chars[i..(body_start + len + 1 + hashes).min(chars.len())] {
                        out.push(blank(*ch));
                    }
                    i = (body_start + len + 1 + hashes).min(chars.len());
                }
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('{', '\n', '\''); a lifetime ('a) has no closing quote.
            out.push(' ');
            i += 1;
            if chars.get(i) == Some(&'\\') {
                // The backslash and the character it escapes (which may be a quote).
                out.push_str("  ");
                i += 2;
            }
            while i < chars.len() {
                let ch = chars[i];
                out.push(' ');
                i += 1;
                if ch == '\'' {
                    break;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` (stripped) without the items under `#[cfg(test)]`, and the names of the modules such
/// items declare in files of their own (`#[cfg(test)] mod contract;`).
fn without_tests(code: &str) -> (String, Vec<Vec<String>>) {
    const ATTRIBUTE: &str = "#[cfg(test)]";
    let mut out: Vec<char> = code.chars().collect();
    let text: String = out.iter().collect();
    let mut modules = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(ATTRIBUTE).map(|i| i + from) {
        let mut k = ATTRIBUTE.len();
        // Further attributes of the item.
        loop {
            let rest = &text[at + k..];
            let trimmed = rest.trim_start();
            k += rest.len() - trimmed.len();
            if trimmed.starts_with("#[") {
                let mut depth = 0;
                for (n, ch) in trimmed.char_indices() {
                    match ch {
                        '[' => depth += 1,
                        ']' => {
                            depth -= 1;
                            if depth == 0 {
                                k += n + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            } else {
                break;
            }
        }
        let item = &text[at + k..];
        let end = match item.find(['{', ';']) {
            Some(n) if item[n..].starts_with(';') => {
                let words: Vec<&str> = item[..n].split_whitespace().collect();
                if let [.., "mod", name] = words.as_slice() {
                    modules.push(vec![name.to_string()]);
                }
                at + k + n + 1
            }
            Some(n) => {
                let mut depth = 0;
                let mut end = text.len();
                for (m, ch) in item[n..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = at + k + n + m + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            None => text.len(),
        };
        let start_char = text[..at].chars().count();
        let len = text[at..end].chars().count();
        for ch in &mut out[start_char..start_char + len] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        from = end;
    }
    (out.into_iter().collect(), modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(files: &[(&str, &str)]) -> Problems {
        let files: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        check_sources(&files)
    }

    const LIB: &str = "pub mod api;\npub mod state;\npub mod model;\npub mod routing;\n";

    #[test]
    fn an_upward_import_is_named_with_its_file_line_and_layers() {
        let problems = sources(&[
            ("lib.rs", LIB),
            ("api/mod.rs", "use crate::state::StateStore;\n"),
            (
                "state/mod.rs",
                "//! The store.\nuse crate::model::BackendId;\nuse crate::api::error::ApiError;\n",
            ),
        ]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let problem = &problems[0];
        assert!(problem.starts_with("state/mod.rs:3: `state`"), "{problem}");
        assert!(
            problem.contains("imports `api::error::ApiError` from `api`"),
            "{problem}"
        );
        assert!(problem.contains("a higher layer"), "{problem}");
    }

    #[test]
    fn grouped_imports_and_paths_in_code_count_too() {
        let problems = sources(&[
            ("lib.rs", LIB),
            (
                "state/embedded.rs",
                "use crate::{\n    model::BackendId,\n    api::{self, error::ApiError},\n};\n",
            ),
            ("model.rs", "fn f() { let _ = crate::api::router(); }\n"),
            ("routing.rs", "fn g() { crate::serve(); }\n"),
        ]);
        let found: Vec<&str> = problems
            .iter()
            .map(|p| p.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            found,
            [
                "state/embedded.rs:1",
                "state/embedded.rs:1",
                "model.rs:1",
                "routing.rs:1",
            ],
            "{problems:#?}"
        );
        assert!(problems[3].contains("from `lib`"), "{problems:#?}");
    }

    #[test]
    fn comments_literals_and_test_items_are_not_imports() {
        let state = r####"
//! Links to [`crate::api`] are docs, not imports.
/* crate::api::Router, /* nested */ still a comment */
const A: &str = "crate::api::x {";
const B: &str = r#"crate::api "}" {"#;
const C: char = '{';
const E: (char, char) = ('\'', '\\');
fn life<'a>(x: &'a str) -> &'a str { x }

#[cfg(test)]
#[allow(unused)]
mod tests {
    use crate::api::error::ApiError;
    const D: char = '}';
    fn f() { let _ = "}"; }
}

#[cfg(test)]
mod contract;

use crate::api::Late;
"####;
        let problems = sources(&[
            ("lib.rs", LIB),
            ("state/mod.rs", state),
            ("state/contract.rs", "use crate::api::Router;\n"),
        ]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].starts_with("state/mod.rs:21:"), "{problems:#?}");
    }

    #[test]
    fn a_module_in_no_layer_is_an_error() {
        let problems = sources(&[("lib.rs", "pub mod mystery;\n"), ("mystery.rs", "")]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("module `mystery` is in no layer")
                && problems[0].contains("LAYERS"),
            "{problems:#?}"
        );
    }

    #[test]
    fn modules_of_one_layer_may_not_import_each_other_in_a_cycle() {
        let problems = sources(&[
            ("lib.rs", LIB),
            ("state/mod.rs", "use crate::routing::RouteTable;\n"),
            ("routing.rs", "use crate::state::StateStore;\n"),
        ]);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("import cycle among `routing`, `state`"),
            "{problems:#?}"
        );
    }

    #[test]
    fn the_binary_may_import_anything() {
        let main =
            "mod cli;\nuse platform_gateway::api::router;\nfn main() { crate::cli::run(); }\n";
        let problems = sources(&[
            ("lib.rs", LIB),
            ("main.rs", main),
            ("cli.rs", "use platform_gateway::state::StateStore;\n"),
        ]);
        assert_eq!(problems, Problems::new());
    }

    #[test]
    fn the_host_imports_go_one_way() {
        let problems = check(&crate::root().join("host/src"));
        assert!(
            problems.is_empty(),
            "the host's layering (xtask/src/layering.rs) is broken:\n{}",
            problems.join("\n")
        );
    }
}
