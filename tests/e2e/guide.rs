//! The plugin author's guide (`docs/plugins.md` and its page per language,
//! `docs/plugins-<language>.md`) shows the commands and code CI runs: the Rust example's source
//! and the build `cargo xtask plugins` runs, the Python and JavaScript examples' `build.sh` line
//! for line, and conformance-kit commands that pass when run as written on the built examples.

use std::path::PathBuf;

use crate::support::{example_plugin, plugin, run_cli, shared_cache};

/// The guide's page for the language `title` (`Rust` is `docs/plugins-rust.md`), by lines.
fn page(title: &str) -> Vec<String> {
    let path = format!("docs/plugins-{}.md", title.to_lowercase());
    std::fs::read_to_string(xtask::root().join(&path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(str::to_string)
        .collect()
}

const EXAMPLES: [(&str, &str); 2] = [
    ("Python", "python-inventory"),
    ("JavaScript", "js-inventory"),
];

/// The component of the guide's example in `title`, and its folder.
fn example(title: &str) -> (PathBuf, PathBuf) {
    let name = match title {
        "Rust" => "rust-inventory",
        _ => EXAMPLES.iter().find(|(t, _)| *t == title).unwrap().1,
    };
    let wasm = match title {
        "Rust" => plugin("rust_inventory"),
        _ => example_plugin(name),
    };
    (wasm, xtask::root().join("examples/plugins").join(name))
}

#[test]
fn the_plugin_guide_shows_the_commands_ci_runs() {
    let rust = page("Rust");
    let build = format!("cargo {}", xtask::PLUGIN_BUILD.join(" "));
    assert!(rust.contains(&build), "the Rust page shows `{build}`");
    // The Rust example's source, as the guide shows it (the provider, then its tests).
    let source =
        std::fs::read_to_string(xtask::root().join("examples/plugins/rust-inventory/src/lib.rs"))
            .unwrap();
    let rust = rust.join("\n");
    for part in source.split("// Natively only") {
        assert!(
            rust.contains(part.trim()),
            "the Rust page shows examples/plugins/rust-inventory/src/lib.rs as it is"
        );
    }

    for (title, example) in EXAMPLES {
        let lines = page(title);
        let script = xtask::root().join(format!("examples/plugins/{example}/build.sh"));
        let script = std::fs::read_to_string(&script).unwrap();
        for line in script.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            assert!(
                lines.iter().any(|l| l == line),
                "the {title} page quotes {example}/build.sh's line `{line}` verbatim"
            );
        }
    }
}

#[test]
fn the_guides_conformance_kit_commands_pass_on_the_example_plugins() {
    for title in ["Rust", "Python", "JavaScript"] {
        let commands: Vec<Vec<String>> = page(title)
            .iter()
            .filter_map(|line| {
                line.trim_start()
                    .strip_prefix("$ platform-gateway test-plugin ")
            })
            .map(|args| args.split_whitespace().map(str::to_string).collect())
            .collect();
        assert!(
            !commands.is_empty(),
            "the {title} page shows how to run the conformance kit"
        );
        let (wasm, folder) = example(title);
        let wasm = wasm.display().to_string();
        for args in commands {
            // As written, in the example's folder; the component is the one the tests built, and
            // the compiled cache is the tests' own.
            let mut run = vec!["test-plugin".to_string(), wasm.clone()];
            run.extend(args.iter().skip(1).map(|arg| {
                let path = folder.join(arg);
                if arg.ends_with(".toml") && path.is_file() {
                    path.display().to_string()
                } else {
                    arg.clone()
                }
            }));
            run.extend(["--cache".to_string(), shared_cache().display().to_string()]);
            let run: Vec<&str> = run.iter().map(String::as_str).collect();
            let (ok, stdout, stderr) = run_cli(&run);
            assert!(ok, "{title}: {run:?}\n{stdout}\n{stderr}");
            // Every command of the guide runs the whole kit, provisions included: every check
            // passed, none skipped (not "0 passed, 0 failed, 10 skipped").
            crate::support::assert_kit_passed_everything(&(ok, stdout, stderr));
        }
    }
}
