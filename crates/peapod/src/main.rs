//! peapod: Kubernetes pods on one Linux machine, from one binary.
//!
//! The CLI (one file per subcommand under `cli/`), logging setup, and the hidden helper
//! subcommands the runtime re-executes (`__monitor`, `__sandbox`).

#![allow(clippy::print_stdout)]

mod cli;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "peapod",
    version,
    about = "Kubernetes pods on one Linux machine"
)]
struct Args {
    /// Data root: images, pods, containers.
    #[arg(
        long,
        global = true,
        env = "PEAPOD_ROOT",
        default_value = "/var/lib/peapod"
    )]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pods of a manifest in the foreground, streaming their logs
    Run(cli::run::RunArgs),
    /// Manage local images
    #[command(subcommand)]
    Image(cli::image::ImageCommand),
    /// A container's monitor process (internal)
    #[command(name = "__monitor", hide = true)]
    Monitor { dir: PathBuf },
    /// Create or remove a pod sandbox (internal)
    #[command(name = "__sandbox", hide = true)]
    Sandbox { verb: String, dir: PathBuf },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let code = match args.command {
        Command::Monitor { dir } => {
            // Not stderr: libcontainer logs from the container's init process too, where fd 2
            // is already the container's own stderr.
            cli::logging::init_file(&dir.join("monitor.log"));
            peapod_runtime::monitor::main(&dir)
        }
        Command::Sandbox { verb, dir } => peapod_runtime::sandbox::helper_main(&verb, &dir),
        Command::Image(cmd) => report(cli::image::run(cmd, &args.root)),
        Command::Run(run) => {
            cli::logging::init();
            match cli::run::run(run, &args.root) {
                Ok(code) => code,
                Err(e) => report(Err(e)),
            }
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Prints an error once, on one line, with its causes.
fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
