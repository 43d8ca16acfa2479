//! `cargo xtask`: `plugins` builds the bundled plugins; `serve` builds them and serves
//! `examples/gateway.toml` (or the config given) with the gateway; `dist` and `image` build
//! what ships (see `xtask::dist`); `setup` builds the plugins and installs what the tests need
//! that is missing; `test` does the same and `dist`, then runs every test.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "\
usage: cargo xtask plugins          build the bundled plugins
       cargo xtask serve [ARGS...]  build them and serve examples/gateway.toml
                                    (ARGS go to `platform-gateway serve`)
       cargo xtask bench [ARGS...]  the gateway against a native build of the same providers,
                                    same loopback load (ARGS: --seconds N, --only TEXT,
                                    --compare LABEL=BINARY; see bench/)
       cargo xtask soak [--minutes N]  N minutes (default 10) of hostile clients, a log-flooding
                                    and a state-filling plugin and SIGHUP reloads against the
                                    release gateway; prints RSS and fds over time
       cargo xtask dist             the static binary (x86_64-unknown-linux-musl, profile dist),
                                    the bundled plugins and the examples in
                                    target/package/platform-gateway-VERSION-x86_64-linux-musl/
                                    and its .tar.gz, with SHA256SUMS
       cargo xtask image            dist, then the container image localhost/platform-gateway:VERSION
                                    (FROM scratch, with podman)
       cargo xtask setup            build them and the Python and JavaScript example plugins
                                    (examples/plugins/*/build.sh: pinned componentize-py and
                                    componentize-js), and install what the tests need that is
                                    missing: moto, openapi-spec-validator, schemathesis and
                                    selenium (in a virtualenv, target/venv) and, as root, podman,
                                    runc, busybox-static, etcd, protoc, musl-tools,
                                    systemd-analyze, chromium and chromium-driver (apt-get)
       cargo xtask test [ARGS...]   setup, dist, the guest SDKs' own tests (python3 -m unittest,
                                    npm test), then `cargo test --workspace --locked --no-fail-fast [ARGS...]`";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("plugins") => xtask::build_plugins()
            .map(|dir| println!("plugins built in {}", dir.display()))
            .map_err(Failure::from),
        Some("serve") => serve(&args[1..]),
        Some("bench") => xtask::bench::bench(&args[1..]).map_err(Failure::from),
        Some("soak") => xtask::bench::soak(&args[1..]).map_err(Failure::from),
        Some("dist") => xtask::dist::dist()
            .map(|dir| println!("packaged in {}", dir.display()))
            .map_err(Failure::from),
        Some("image") => xtask::dist::image()
            .map(|name| println!("built {name}"))
            .map_err(Failure::from),
        Some("setup") => setup().map(|_| println!("setup: everything the tests need is here")),
        // The deploy tests run the packaged static binary: build it first, once.
        Some("test") => setup().and_then(|tools| {
            xtask::dist::dist()?;
            // Every suite runs; a failure of the guest SDKs' is reported after cargo's.
            let guests = xtask::guest_sdk_tests();
            test(&tools, &args[1..])?;
            guests.map_err(Failure::from)
        }),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Message(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Exit(code)) => ExitCode::from(code),
    }
}

/// Why a command failed: a message to print, or an exit status to pass on (cargo's, which
/// printed its own).
enum Failure {
    Message(String),
    Exit(u8),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Message(message)
    }
}

fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn serve(args: &[String]) -> Result<(), Failure> {
    xtask::build_plugins()?;
    let mut command = Command::new(cargo());
    command.current_dir(xtask::root()).args([
        "run",
        "--release",
        "-p",
        "platform-gateway",
        "--",
        "serve",
    ]);
    if !args.iter().any(|a| a == "--config" || a == "-c") {
        command.args(["--config", "examples/gateway.toml"]);
    }
    let status = command
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the gateway exited with {status}").into())
    }
}

/// The external programs the tests run, and the Debian package of each.
const PACKAGES: &[(&str, &str)] = &[
    ("podman", "podman"),
    // podman's runtime for the tests (crun fails on this project's machine).
    ("runc", "runc"),
    // A static busybox: the podman tests build their container image from it.
    ("/bin/busybox", "busybox-static"),
    ("etcd", "etcd-server"),
    // The etcd client's build compiles etcd's protobuf definitions.
    ("protoc", "protobuf-compiler"),
    // The C code of the static (musl) binary's dependencies (ring) needs musl's compiler.
    ("musl-gcc", "musl-tools"),
    // `systemd-analyze verify` checks the shipped systemd unit.
    ("systemd-analyze", "systemd"),
    // The JavaScript SDK's tests and example (componentize-js comes from npm).
    ("npm", "npm"),
    // The console's browser test: headless Chromium, driven through its WebDriver.
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
];

/// What the tests need from PyPI, installed into the virtualenv: each package with the program
/// of it the tests run (or, for a library, the module they import). moto's EC2 server; the
/// OpenAPI tests' validator and property-based tester, pinned (a new Schemathesis release may
/// generate cases this version does not); Selenium, which drives the console's browser test.
const PYTHON_TOOLS: &[(&str, Provides)] = &[
    ("moto[ec2,server]", Provides::Program("moto_server")),
    (
        "openapi-spec-validator==0.9.0",
        Provides::Program("openapi-spec-validator"),
    ),
    ("schemathesis==4.32.5", Provides::Program("schemathesis")),
    // 4.50: the newest whose dependencies the package mirrors had when it was pinned.
    ("selenium==4.50.0", Provides::Module("selenium")),
];

/// How `setup` sees that a Python package is installed.
#[derive(Clone, Copy)]
enum Provides {
    /// A program in the virtualenv's `bin`.
    Program(&'static str),
    /// A module its Python imports.
    Module(&'static str),
}

impl Provides {
    fn present(self, venv: &Path) -> bool {
        match self {
            Provides::Program(program) => venv.join("bin").join(program).is_file(),
            Provides::Module(module) => succeeds(
                Command::new(venv.join("bin/python")).args(["-c", &format!("import {module}")]),
            ),
        }
    }
}

/// What `setup` found, for the test run.
struct Tools {
    /// The virtualenv's `bin`, which holds `moto_server`, `openapi-spec-validator` and
    /// `schemathesis`.
    venv_bin: PathBuf,
    protoc: Option<PathBuf>,
}

/// Build the plugins, then install what the tests need and the machine lacks: the Debian
/// packages of `PACKAGES` (as root; otherwise print the command and fail) and the
/// `PYTHON_TOOLS`, in a virtualenv under `target/venv` rather than in the system's Python.
fn setup() -> Result<Tools, Failure> {
    xtask::build_plugins()?;

    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(program, _)| find(program).is_none())
        .map(|(_, package)| *package)
        .collect();
    let python = find("python3");
    if python.is_none() {
        missing.push("python3");
    }
    // Debian splits `venv` (and the pip it seeds) out of python3.
    if python.is_none() || !succeeds(Command::new("python3").args(["-c", "import ensurepip, venv"]))
    {
        missing.push("python3-venv");
    }
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    // The Python and JavaScript examples, each with its pinned toolchain (componentize-py from
    // PyPI, componentize-js from npm) installed by its build script.
    xtask::build_example_plugins()?;

    let venv = xtask::root().join("target/venv");
    let venv_bin = venv.join("bin");
    install_python_tools(&venv)?;
    Ok(Tools {
        venv_bin,
        protoc: find("protoc"),
    })
}

/// `apt-get install` the `packages` as root; anyone else gets the command to run.
fn apt_install(packages: &[&str]) -> Result<(), Failure> {
    let list = packages.join(" ");
    if !is_root() {
        return Err(format!(
            "the tests need Debian packages that are missing; install them with\n  \
             sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y {list}\n\
             then run this command again"
        )
        .into());
    }
    println!("setup: apt-get install {list}");
    // Wait for the dpkg lock rather than fail if something else is installing.
    let lock = ["-o", "DPkg::Lock::Timeout=300"];
    xtask::run(Command::new("apt-get").args(lock).args(["update", "-qq"]))?;
    // dpkg reports every file it unpacks on stdout, whatever the quiet flags; errors go to stderr.
    xtask::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(lock)
            .args(["install", "-y", "-qq"])
            .args(packages)
            .stdout(Stdio::null()),
    )?;
    Ok(())
}

/// Make sure the programs of `PYTHON_TOOLS` exist in `venv/bin`: create the virtualenv (again,
/// if its Python no longer runs) and install the packages that are missing.
fn install_python_tools(venv: &Path) -> Result<(), Failure> {
    let python = venv.join("bin/python");
    let healthy = succeeds(Command::new(&python).args(["-c", ""]));
    let missing: Vec<&str> = PYTHON_TOOLS
        .iter()
        .filter(|(_, provides)| !healthy || !provides.present(venv))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !healthy {
        println!("setup: python3 -m venv {}", venv.display());
        xtask::run(
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(venv),
        )?;
    }
    println!(
        "setup: pip install '{}' (into {})",
        missing.join("' '"),
        venv.display()
    );
    xtask::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(&missing),
    )?;
    for (package, provides) in PYTHON_TOOLS {
        if !provides.present(venv) {
            return Err(format!(
                "installed {package}, but it is missing from {}",
                venv.display()
            )
            .into());
        }
    }
    Ok(())
}

/// `cargo test --workspace --locked ARGS`, with the virtualenv's `bin` first on `PATH` (the
/// tests start `moto_server`, `openapi-spec-validator` and `schemathesis` by name) and `PROTOC` set to the `protoc` found.
fn test(tools: &Tools, args: &[String]) -> Result<(), Failure> {
    let mut path = vec![tools.venv_bin.clone()];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(path).map_err(|e| format!("cannot build PATH: {e}"))?;
    let mut command = Command::new(cargo());
    command
        .current_dir(xtask::root())
        .args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .args(args)
        .env("PATH", path);
    // The same builds as a `cargo test` typed in a shell, not ones keyed to xtask's own env.
    xtask::clear_cargo_run_env(&mut command);
    if let Some(protoc) = &tools.protoc
        && std::env::var_os("PROTOC").is_none()
    {
        command.env("PROTOC", protoc);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    match status.code() {
        Some(0) => Ok(()),
        // Killed by a signal: no code.
        code => Err(Failure::Exit(
            code.and_then(|c| u8::try_from(c).ok()).unwrap_or(1),
        )),
    }
}

/// `program` if it is a path to a file, else the first `program` on `PATH`.
fn find(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return path.is_file().then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Whether `command` runs and exits successfully, its output discarded.
fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
