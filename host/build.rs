//! Build facts for `platform-gateway --version`: the git commit the binary was built from and
//! the plugin contract versions it serves, read from the `package` declarations under `wit/`
//! (its `deps/` excluded), so that adding a contract version there is the only change needed.
//!
//! Without git (a source tarball), the commit is `PLATFORM_GATEWAY_BUILD_COMMIT` if set, else
//! `unknown`. Cargo reruns this script only when `wit/`, `.git/HEAD` or the branch it names
//! moves, not on every edit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest
        .parent()
        .expect("host/ lives in the workspace root");

    let wit = root.join("wit");
    // A directory: cargo looks at every file under it.
    println!("cargo:rerun-if-changed={}", wit.display());
    let mut contracts = BTreeSet::new();
    collect_contracts(&wit, &mut contracts);
    if contracts.is_empty() {
        panic!(
            "no `package replicante:platform@VERSION;` declaration under {}",
            wit.display()
        );
    }
    let contracts: Vec<String> = contracts.into_iter().collect();
    println!(
        "cargo:rustc-env=PLATFORM_GATEWAY_CONTRACTS={}",
        contracts.join(", ")
    );

    // Not the name of the output below: cargo hands that one to the programs it runs (the
    // tests), whose own builds would then see it set and rebuild.
    println!("cargo:rerun-if-env-changed=PLATFORM_GATEWAY_BUILD_COMMIT");
    let commit = std::env::var("PLATFORM_GATEWAY_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git_commit(root))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=PLATFORM_GATEWAY_COMMIT={commit}");
}

/// Every `replicante:platform@VERSION` declared by a `.wit` file under `dir`, `deps/` excluded.
fn collect_contracts(dir: &Path, found: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if entry.file_name() != "deps" {
                collect_contracts(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "wit") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("package ")
                    && let Some(name) = rest.trim_end_matches(';').split_whitespace().next()
                    && name.starts_with("replicante:platform@")
                {
                    found.insert(name.to_string());
                }
            }
        }
    }
}

/// The short commit of `HEAD` (with `-dirty` never guessed: that would need a rerun on every
/// file), watching `.git/HEAD` and the ref it points to so a commit or checkout reruns this.
fn git_commit(root: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let git_dir = PathBuf::from(git(&["rev-parse", "--absolute-git-dir"])?);
    let head = git_dir.join("HEAD");
    if head.is_file() {
        println!("cargo:rerun-if-changed={}", head.display());
    }
    // A branch's ref: its loose file if there is one, else packed-refs (watching a file that
    // does not exist would rerun this script on every build).
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
            .map(PathBuf::from)
            .unwrap_or_else(|| git_dir.clone());
        let loose = common.join(&branch);
        let packed = common.join("packed-refs");
        if loose.is_file() {
            println!("cargo:rerun-if-changed={}", loose.display());
        } else if packed.is_file() {
            println!("cargo:rerun-if-changed={}", packed.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
