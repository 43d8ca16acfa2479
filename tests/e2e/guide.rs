//! The plugin author's guide (`docs/plugins.md`) shows the commands CI runs: the example plugins'
//! `build.sh` line for line, the Rust build `cargo xtask plugins` runs, and conformance-kit
//! commands that pass when run as written on the built examples.

use std::path::PathBuf;

use crate::support::{example_plugin, run_cli, shared_cache};

fn guide() -> String {
    std::fs::read_to_string(xtask::root().join("docs/plugins.md")).expect("docs/plugins.md")
}

/// The lines of the guide's section `## {title}`, up to the next `## ` heading.
fn section(guide: &str, title: &str) -> Vec<String> {
    let heading = format!("## {title}");
    guide
        .lines()
        .skip_while(|line| *line != heading)
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .map(str::to_string)
        .collect()
}

const EXAMPLES: [(&str, &str); 2] = [
    ("Python", "python-inventory"),
    ("JavaScript", "js-inventory"),
];

#[test]
fn the_plugin_guide_shows_the_commands_ci_runs() {
    let guide = guide();
    let rust = section(&guide, "Rust");
    let build = format!("cargo {}", xtask::PLUGIN_BUILD.join(" "));
    assert!(rust.contains(&build), "the Rust section shows `{build}`");

    for (title, example) in EXAMPLES {
        let lines = section(&guide, title);
        assert!(
            !lines.is_empty(),
            "docs/plugins.md has a `## {title}` section"
        );
        let script = xtask::root().join(format!("examples/plugins/{example}/build.sh"));
        let script = std::fs::read_to_string(&script).unwrap();
        for line in script.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            assert!(
                lines.iter().any(|l| l == line),
                "the {title} section quotes {example}/build.sh's line `{line}` verbatim"
            );
        }
    }
}

#[test]
fn the_guides_conformance_kit_commands_pass_on_the_example_plugins() {
    let guide = guide();
    for (title, example) in EXAMPLES {
        let commands: Vec<Vec<String>> = section(&guide, title)
            .iter()
            .filter_map(|line| {
                line.trim_start()
                    .strip_prefix("$ platform-gateway test-plugin ")
            })
            .map(|args| args.split_whitespace().map(str::to_string).collect())
            .collect();
        assert!(
            !commands.is_empty(),
            "the {title} section shows how to run the conformance kit"
        );
        let wasm = example_plugin(example).display().to_string();
        let folder: PathBuf = xtask::root().join("examples/plugins").join(example);
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
            assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
        }
    }
}
