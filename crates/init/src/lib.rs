//! peapod-init: a small PID 1 for containers, in the spirit of tini and `docker run --init`.
//!
//! Two modes. `peapod-init -- CMD...` runs one command: it forwards every catchable signal to
//! the command's process group, reaps every zombie and exits with the command's status.
//! `peapod-init --config FILE` / `--run NAME=CMD` supervises several programs with restart
//! policies, readiness checks, start ordering and name-prefixed output. See docs/init.md.
//!
//! The decisions are pure and tested with tables: [`cli`], [`config`], [`restart`],
//! [`supervisor`], [`lines`]. The loops that act on them ([`pid1`], [`supervise`]) are
//! single-threaded, around one `poll(2)` on a signalfd and the programs' output pipes; they
//! write the programs' output to init's own stdout and stderr, which is their job.

use peapod_sys::SysError;

pub mod cli;
pub mod config;
pub mod lines;
pub mod note;
mod output;
pub mod pid1;
pub mod restart;
mod signals;
pub mod status;
pub mod supervise;
pub mod supervisor;

/// Why init itself failed (as opposed to a program it runs).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("set up signal handling")]
    Signals(#[source] SysError),
    #[error("become a child subreaper")]
    Subreaper(#[source] SysError),
    #[error("wait for signals and output")]
    Poll(#[source] nix::Error),
    #[error("read the signalfd")]
    ReadSignal(#[source] nix::Error),
    #[error("start {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

impl InitError {
    /// Init's exit code for this failure: 127 or 126 for a command that cannot be started (as
    /// a shell reports it), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            InitError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            InitError::Spawn { .. } => 126,
            _ => 1,
        }
    }
}

/// Runs what the command line asked for and returns init's exit code.
pub fn run(invocation: cli::Invocation) -> Result<i32, InitError> {
    match invocation {
        cli::Invocation::Help | cli::Invocation::Version => Ok(0),
        cli::Invocation::Single { argv } => pid1::run(&argv),
        cli::Invocation::Supervise { config, runs } => {
            let config = config::load(config.as_deref(), &runs)?;
            supervise::run(config)
        }
    }
}
