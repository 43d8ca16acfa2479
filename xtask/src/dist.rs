//! What ships: `cargo xtask dist` (a static musl binary, the bundled plugins, the example configs
//! and the deploy files in one folder and one tarball, with SHA-256 sums) and `cargo xtask
//! image` (a `FROM scratch` container image of them, built with podman).
//!
//! The package goes to `target/package/`, not `target/dist/`: that one is cargo's own output
//! folder for the `dist` profile (its `deps/`, `build/`...).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{root, run, without_outer_cargo};

/// The target of the shipped binary: statically linked, so it runs on any x86-64 Linux and in
/// an image with nothing else in it.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// The plugins that ship with the gateway (the test fixtures do not).
pub const BUNDLED_PLUGINS: &[&str] = &["pool", "static_clusters", "aws_ec2", "podman"];

/// The image `cargo xtask image` builds, without its tag (the version).
pub const IMAGE: &str = "localhost/platform-gateway";

/// The numeric user and group the image runs as.
pub const IMAGE_USER: u32 = 65532;

/// The gateway's version (the workspace's).
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// `platform-gateway-VERSION-x86_64-linux-musl`: the package folder's and tarball's name.
pub fn package_name() -> String {
    format!("platform-gateway-{}-x86_64-linux-musl", version())
}

/// `target/package`.
pub fn package_root() -> PathBuf {
    root().join("target/package")
}

/// The unpacked package: `target/package/platform-gateway-VERSION-x86_64-linux-musl/`.
pub fn package_dir() -> PathBuf {
    package_root().join(package_name())
}

/// The packaged static binary.
pub fn binary() -> PathBuf {
    package_dir().join("platform-gateway")
}

/// The package as a tarball, next to its folder.
pub fn tarball() -> PathBuf {
    package_root().join(format!("{}.tar.gz", package_name()))
}

/// `localhost/platform-gateway:VERSION`, the image's full name.
pub fn image_name() -> String {
    format!("{IMAGE}:{}", version())
}

/// Build the static binary (`[profile.dist]`, musl) and the plugins, and lay out the package:
///
/// ```text
/// target/package/platform-gateway-VERSION-x86_64-linux-musl/
///   platform-gateway        the binary
///   plugins/*.wasm          the bundled plugins
///   examples/               the example configs, their plugin paths pointing at plugins/
///   deploy/                 the container, Kubernetes and systemd files
///   README.md
///   docs/                   the documentation the README links to
///   SHA256SUMS              of every file above
/// target/package/platform-gateway-VERSION-x86_64-linux-musl.tar.gz (+ .sha256)
/// ```
///
/// Files are rewritten only when their content changed; a no-op when nothing did.
pub fn dist() -> Result<PathBuf, String> {
    ensure_musl_target();
    crate::build_plugins()?;
    build_binary()?;

    // One packager at a time (two test processes, a test and a shell): each rewrites files the
    // other reads.
    let _lock = Lock::take()?;
    let dir = package_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut changed = false;
    let built = root().join(format!("target/{TARGET}/dist/platform-gateway"));
    changed |= install(&built, &dir.join("platform-gateway"))?;
    for plugin in BUNDLED_PLUGINS {
        changed |= install(
            &crate::plugin_path(plugin),
            &dir.join(format!("plugins/{plugin}.wasm")),
        )?;
    }
    for entry in read_dir(&root().join("examples"))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let from = entry.path();
        let to = dir.join("examples").join(&name);
        changed |= if name.ends_with(".toml") {
            let text =
                read(&from)?.replace("../target/plugins/wasm32-wasip2/release/", "../plugins/");
            write_if_changed(&to, text.as_bytes())?
        } else if from.is_file() {
            install(&from, &to)?
        } else {
            false
        };
    }
    for sub in ["kubernetes", "systemd", "container"] {
        for entry in read_dir(&root().join("deploy").join(sub))? {
            if entry.path().is_file() {
                changed |= install(
                    &entry.path(),
                    &dir.join("deploy").join(sub).join(entry.file_name()),
                )?;
            }
        }
    }
    changed |= install(&root().join("README.md"), &dir.join("README.md"))?;
    // The README is the front page of a book in docs/: ship the book with it.
    let mut docs = Vec::new();
    list_files(&root(), &root().join("docs"), &mut docs)?;
    for doc in docs {
        changed |= install(&root().join(&doc), &dir.join(&doc))?;
    }

    let sums = dir.join("SHA256SUMS");
    if changed || !sums.is_file() {
        let mut files = Vec::new();
        list_files(&dir, &dir, &mut files)?;
        files.retain(|f| f != "SHA256SUMS");
        files.sort();
        let out = Command::new("sha256sum")
            .current_dir(&dir)
            .args(&files)
            .output()
            .map_err(|e| format!("cannot run sha256sum: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "sha256sum failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        write_if_changed(&sums, &out.stdout)?;
    }

    let tarball = tarball();
    if changed || !tarball.is_file() {
        // Owner and order fixed, so the same files make the same tarball.
        run(Command::new("tar")
            .current_dir(package_root())
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "-czf",
            ])
            .arg(&tarball)
            .arg(package_name()))?;
        let out = Command::new("sha256sum")
            .current_dir(package_root())
            .arg(tarball.file_name().expect("a file name"))
            .output()
            .map_err(|e| format!("cannot run sha256sum: {e}"))?;
        let sum = tarball.with_extension("gz.sha256");
        std::fs::write(&sum, &out.stdout)
            .map_err(|e| format!("cannot write {}: {e}", sum.display()))?;
    }
    Ok(dir)
}

/// Build the package ([`dist`]), then the image `localhost/platform-gateway:VERSION` from
/// `deploy/container/Containerfile`: the static binary, the bundled plugins and the example
/// platform's config, on nothing (`FROM scratch`, so there is no base image to pull).
pub fn image() -> Result<String, String> {
    build_image(&dist()?)
}

/// The image of [`image`], from the package folder `dir` that [`dist`] made.
pub fn build_image(dir: &Path) -> Result<String, String> {
    let _lock = Lock::take()?;
    let context = package_root().join("image");
    if context.exists() {
        std::fs::remove_dir_all(&context)
            .map_err(|e| format!("cannot clear {}: {e}", context.display()))?;
    }
    install(
        &dir.join("platform-gateway"),
        &context.join("platform-gateway"),
    )?;
    for plugin in BUNDLED_PLUGINS {
        let name = format!("plugins/{plugin}.wasm");
        install(&dir.join(&name), &context.join(&name))?;
    }
    write_if_changed(
        &context.join("gateway.toml"),
        image_config(&read(&root().join("examples/gateway.toml"))?)?.as_bytes(),
    )?;
    // The state volume's mount point, owned by the image's user so that a fresh volume is too.
    std::fs::create_dir_all(context.join("state"))
        .map_err(|e| format!("cannot create the image's state folder: {e}"))?;
    let containerfile = root().join("deploy/container/Containerfile");
    let name = image_name();
    let previous = image_id(&name);
    let commit = git_commit().unwrap_or_else(|| "unknown".into());
    run(Command::new("podman")
        .args(["build", "--quiet", "--format", "docker", "--tag", &name])
        .arg("--file")
        .arg(&containerfile)
        .args([
            "--label",
            &format!("org.opencontainers.image.version={}", version()),
            "--label",
            &format!("org.opencontainers.image.revision={commit}"),
        ])
        .arg(&context)
        .stdout(std::process::Stdio::null()))?;
    // The build the tag left is of no use: drop it (unless a container still uses it).
    if let Some(previous) = previous
        && image_id(&name).is_some_and(|id| id != previous)
    {
        let _ = Command::new("podman")
            .args(["image", "rm", &previous])
            .output();
    }
    Ok(name)
}

/// The ID of the image `name`, if podman has it.
fn image_id(name: &str) -> Option<String> {
    let out = Command::new("podman")
        .args(["image", "inspect", "--format", "{{.Id}}", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The image's config: `examples/gateway.toml` with its listener on every address, its state
/// in the volume and its plugin from `/plugins`, plus the admin API on the container's
/// loopback (reach it with `podman exec`; on any other address it needs a token, which only
/// the operator's config can hold).
pub fn image_config(example: &str) -> Result<String, String> {
    let mut text = String::from(
        "# The image's default config: the example platform of examples/gateway.toml (one pool of\n\
         # five machines), made for the container. Mount your own at\n\
         # /etc/platform-gateway/gateway.toml to replace it.\n\n",
    );
    let mut rest = example.to_string();
    for (from, to) in [
        ("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\""),
        ("dir = \"state\"", "dir = \"/var/lib/platform-gateway\""),
        (
            "plugin = \"../target/plugins/wasm32-wasip2/release/pool.wasm\"",
            "plugin = \"/plugins/pool.wasm\"",
        ),
    ] {
        if !rest.contains(from) {
            return Err(format!(
                "examples/gateway.toml no longer has `{from}`: update the image's config in xtask/src/dist.rs"
            ));
        }
        rest = rest.replacen(from, to, 1);
    }
    text.push_str(&rest);
    text.push_str(
        "\n# The admin API and /metrics, inside the container only: \
         `podman exec CONTAINER platform-gateway status`.\n\
         [admin]\nlisten = \"127.0.0.1:9090\"\n",
    );
    Ok(text)
}

/// `cargo build --profile dist --target x86_64-unknown-linux-musl -p platform-gateway`.
fn build_binary() -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root()).args([
        "build",
        "--locked",
        "--profile",
        "dist",
        "--target",
        TARGET,
        "-p",
        "platform-gateway",
    ]);
    // Settings of an outer cargo (when called from a test) are not this build's.
    without_outer_cargo(&mut command);
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo to build the static binary: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the static binary failed ({status}); is the {TARGET} target installed \
             (`rustup target add {TARGET}`) and a musl C compiler (`apt-get install musl-tools`)?"
        ))
    }
}

/// Add the musl standard library to the pinned toolchain if it is missing.
fn ensure_musl_target() {
    let installed = Command::new("rustup")
        .current_dir(root())
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(out) = installed
        && !String::from_utf8_lossy(&out.stdout).contains(TARGET)
    {
        let _ = Command::new("rustup")
            .current_dir(root())
            .args(["target", "add", TARGET])
            .status();
    }
}

/// An exclusive `flock` on `target/package/.lock`, released when dropped.
struct Lock(std::fs::File);

impl Lock {
    fn take() -> Result<Lock, String> {
        use std::os::fd::AsRawFd;
        let path = package_root().join(".lock");
        std::fs::create_dir_all(package_root())
            .map_err(|e| format!("cannot create {}: {e}", package_root().display()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!(
                "cannot lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Lock(file))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as in `take`.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, String> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// Copy `from` to `to` (keeping its permissions) unless `to` already holds the same bytes;
/// whether it wrote.
fn install(from: &Path, to: &Path) -> Result<bool, String> {
    let bytes = std::fs::read(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let wrote = write_if_changed(to, &bytes)?;
    let permissions = std::fs::metadata(from)
        .map_err(|e| format!("cannot stat {}: {e}", from.display()))?
        .permissions();
    std::fs::set_permissions(to, permissions)
        .map_err(|e| format!("cannot set the mode of {}: {e}", to.display()))?;
    Ok(wrote)
}

/// Write `bytes` to `path` unless it holds them already; whether it wrote.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, String> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    // A new file moved into place: a running copy of the old binary is left alone.
    let temp = path.with_extension("partial");
    std::fs::write(&temp, bytes).map_err(|e| format!("cannot write {}: {e}", temp.display()))?;
    std::fs::rename(&temp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(true)
}

/// Every file under `dir`, relative to `base`, with `/` separators.
fn list_files(base: &Path, dir: &Path, files: &mut Vec<String>) -> Result<(), String> {
    for entry in read_dir(dir)? {
        let path = entry.path();
        if path.is_dir() {
            list_files(base, &path, files)?;
        } else {
            let relative = path.strip_prefix(base).expect("under base");
            files.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}
