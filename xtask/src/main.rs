//! `cargo xtask`: `plugins` builds the bundled plugins; `serve` builds them and serves
//! `examples/gateway.toml` (or the config given) with the gateway.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("plugins") => xtask::build_plugins().map(|dir| {
            println!("plugins built in {}", dir.display());
        }),
        Some("serve") => serve(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask plugins        build the bundled plugins\n       \
                 cargo xtask serve [ARGS...]  build them and serve examples/gateway.toml\n                                    \
                 (ARGS go to `platform-gateway serve`)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &[String]) -> Result<(), String> {
    xtask::build_plugins()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
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
        Err(format!("the gateway exited with {status}"))
    }
}
