//! The command line, parsed by hand: init is copied into images, so it carries no argument
//! parser. Like tini, the first argument that is not an option starts the command, so
//! `peapod-init CMD ARGS...` and `peapod-init -- CMD ARGS...` are the same.

use std::ffi::OsString;
use std::path::PathBuf;

/// What init was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Help,
    Version,
    /// Run one command as the child of PID 1 (tini mode).
    Single {
        argv: Vec<OsString>,
    },
    /// Supervise the programs of a config file and/or `--run` arguments.
    Supervise {
        config: Option<PathBuf>,
        runs: Vec<String>,
    },
}

/// A command line init does not understand.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("{option} needs a value")]
    MissingValue { option: String },
    #[error("unknown option {option}")]
    UnknownOption { option: String },
    #[error("{option} must be valid UTF-8")]
    NotUtf8 { option: String },
    #[error("give a command or --config/--run, not both")]
    Both,
    #[error("nothing to run: give a command, --config FILE or --run NAME=COMMAND")]
    Nothing,
}

pub const USAGE: &str = "\
usage: peapod-init [--] COMMAND [ARG...]
       peapod-init [--config FILE] [--run NAME=COMMAND]...

As PID 1 (or as a child subreaper): forwards signals to the command's process group, reaps
every zombie and exits with the command's status (128+N if signal N killed it).

With --config (YAML or JSON) and/or --run, supervises several programs: restart policies with
backoff, readiness checks, start ordering, output prefixed with each program's name.
See docs/init.md.

  --config FILE        programs to supervise
  --run NAME=COMMAND   one more program (COMMAND runs with /bin/sh -c; restart: always)
  -h, --help           this text
  -V, --version        the version
";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, UsageError> {
    let mut args = args.into_iter();
    let mut config = None;
    let mut runs = Vec::new();
    let mut argv = Vec::new();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            argv.push(arg);
            break;
        };
        let (option, inline) = match text.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v.to_owned())),
            _ => (text, None),
        };
        match option {
            "--" => break,
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            "--config" => {
                config = Some(PathBuf::from(value(option, inline, &mut args)?));
            }
            "--run" => {
                let v = value(option, inline, &mut args)?;
                let v = v.into_string().map_err(|_| UsageError::NotUtf8 {
                    option: option.to_owned(),
                })?;
                runs.push(v);
            }
            o if o.starts_with('-') && o.len() > 1 => {
                return Err(UsageError::UnknownOption {
                    option: text.to_owned(),
                })
            }
            _ => {
                argv.push(arg);
                break;
            }
        }
    }
    argv.extend(args);
    match (argv.is_empty(), config.is_none() && runs.is_empty()) {
        (false, true) => Ok(Invocation::Single { argv }),
        (true, false) => Ok(Invocation::Supervise { config, runs }),
        (false, false) => Err(UsageError::Both),
        (true, true) => Err(UsageError::Nothing),
    }
}

fn value(
    option: &str,
    inline: Option<String>,
    args: &mut impl Iterator<Item = OsString>,
) -> Result<OsString, UsageError> {
    match inline {
        Some(v) => Ok(v.into()),
        None => args.next().ok_or_else(|| UsageError::MissingValue {
            option: option.to_owned(),
        }),
    }
}
