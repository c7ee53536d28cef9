//! peapod: Kubernetes pods on one Linux machine, from one binary.
//!
//! The CLI (one file per subcommand under `cli/`), logging setup, and the hidden helper
//! subcommands the runtime re-executes (`__monitor`, `__sandbox`).

#![allow(clippy::print_stdout)]

mod cli;
mod daemon;

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
    /// Serve the Kubernetes API and run the pods it is given (the daemon)
    Serve(cli::serve::ServeArgs),
    /// Print the admin kubeconfig of the data root
    Kubeconfig(cli::serve::KubeconfigArgs),
    /// Manage local images
    #[command(subcommand)]
    Image(cli::image::ImageCommand),
    /// Manage the host side of the pod network (the bridge pods share)
    #[command(subcommand)]
    Network(cli::network::NetworkCommand),
    /// A container's monitor process (internal; dispatched before clap)
    #[command(name = "__monitor", hide = true)]
    Monitor { dir: PathBuf },
    /// Remove a pod sandbox (internal; dispatched before clap)
    #[command(name = "__sandbox", hide = true)]
    Sandbox { verb: String, dir: PathBuf },
}

/// glibc malloc arenas of `peapod serve`: two, instead of up to 8 per core each keeping what
/// was freed into it (47 -> 31 MiB PSS at 50 pods). Not for `peapod run`, which lives as long
/// as its pods and starts many at once: there the limit cost 10-20% on `bench/run`'s scale rows.
const DAEMON_MALLOC_ARENAS: i32 = 2;

fn main() -> ExitCode {
    // The helpers run once per container: dispatch them before clap, so they touch (and keep
    // resident) as little of the binary as possible.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = helper(&argv) {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    // The daemon's start touches pages all over the binary; read what was evicted in one go.
    peapod_sys::process::prefetch_executable();
    let args = Args::parse();
    let code = match args.command {
        Command::Monitor { .. } | Command::Sandbox { .. } => 2,
        Command::Image(cmd) => report(cli::image::run(cmd, &args.root)),
        Command::Network(cmd) => report(cli::network::run(cmd, &args.root)),
        Command::Kubeconfig(_) => report(cli::serve::kubeconfig(&args.root)),
        Command::Serve(serve) => {
            peapod_sys::process::limit_malloc_arenas(DAEMON_MALLOC_ARENAS);
            cli::logging::init();
            report(cli::serve::run(serve, &args.root))
        }
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

/// A monitor `peapod run` forked ahead of its container (`peapod_kubelet::monitor_pool`): it
/// reads its container's directory from stdin, then monitors it; 0 when stdin closed first.
/// It logs into the container's `monitor.log`, as a monitor started for its container does.
pub(crate) fn pooled_monitor() -> i32 {
    let Some(dir) = peapod_runtime::monitor::pooled_dir() else {
        return 0;
    };
    let _logging = cli::logging::init_file_for_thread(&dir.join("monitor.log"));
    peapod_runtime::monitor::main(&dir)
}

fn helper(argv: &[std::ffi::OsString]) -> Option<i32> {
    match argv.get(1)?.to_str()? {
        "__monitor" if argv.len() == 3 => {
            let dir = PathBuf::from(&argv[2]);
            // Not stderr: libcontainer logs from the container's init process too, where fd 2
            // is already the container's own stderr.
            cli::logging::init_file(&dir.join("monitor.log"));
            Some(peapod_runtime::monitor::main(&dir))
        }
        "__monitor" if argv.len() == 8 && argv[3] == "--supervise" => {
            let fd = |i: usize| argv[i].to_str().and_then(|s| s.parse().ok()).unwrap_or(-1);
            Some(peapod_runtime::monitor::supervise_main(
                &PathBuf::from(&argv[2]),
                [fd(4), fd(5), fd(6), fd(7)],
            ))
        }
        "__attach" if argv.len() == 3 || argv.len() == 4 => {
            use peapod_runtime::attach::{AttachInput, NO_STDIN_FLAG};
            use peapod_runtime::exec::TTY_FLAG;
            let input = match argv.get(3).and_then(|a| a.to_str()) {
                None => AttachInput::Raw,
                Some(TTY_FLAG) => AttachInput::Terminal,
                Some(NO_STDIN_FLAG) => AttachInput::Nothing,
                Some(_) => return None,
            };
            Some(peapod_runtime::attach::helper_main(
                &PathBuf::from(&argv[2]),
                input,
            ))
        }
        "__monitor" if argv.len() == 4 && argv[3] == "--orphan" => Some(
            peapod_runtime::monitor::cleanup_orphan(&PathBuf::from(&argv[2])),
        ),
        "__exec" if argv.len() >= 5 => {
            use peapod_runtime::exec::{ExecStdio, TTY_FLAG};
            let (stdio, rest) = match argv[3].to_str() {
                Some("--") => (ExecStdio::Inherited, 4),
                Some(TTY_FLAG) if argv.len() >= 6 && argv[4] == "--" => (ExecStdio::Terminal, 5),
                _ => return None,
            };
            let args = argv[rest..]
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            Some(peapod_runtime::exec::helper_main(
                &PathBuf::from(&argv[2]),
                stdio,
                args,
            ))
        }
        peapod_runtime::pod_init::POD_INIT_SUBCOMMAND if argv.len() == 2 => {
            Some(peapod_runtime::pod_init::main())
        }
        "__sandbox" if argv.len() == 4 => {
            let verb = argv[2].to_string_lossy();
            Some(peapod_runtime::sandbox::helper_main(
                &verb,
                &PathBuf::from(&argv[3]),
            ))
        }
        _ => None,
    }
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
