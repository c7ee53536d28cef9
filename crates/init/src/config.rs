//! The supervision config: a YAML (or JSON, which is YAML too) file and/or `--run NAME=CMD`
//! arguments, decoded strictly and validated once into [`Config`].
//!
//! The file format is documented in docs/init.md. Names follow docker-compose where it has one
//! (`restart`, `command` as a string for the shell or a list for `execve`), durations are in
//! seconds like Kubernetes' `terminationGracePeriodSeconds`.

use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a program gets between SIGTERM and SIGKILL when none is set.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// How many restarts in a row (each after less than a minute up) before a program gives up.
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
/// How often a readiness check runs until it passes.
pub const DEFAULT_CHECK_PERIOD: Duration = Duration::from_secs(1);
/// How long one readiness check may take.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// A config error, with the program or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parse config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_saphyr::Error,
    },
    #[error("--run {arg:?}: expected NAME=COMMAND")]
    Run { arg: String },
    #[error("no programs to run: give --config FILE or --run NAME=COMMAND")]
    NoPrograms,
    #[error("program name {name:?}: use 1 to 63 letters, digits, '.', '_' or '-'")]
    Name { name: String },
    #[error("program {name} is defined twice")]
    Duplicate { name: String },
    #[error("program {program}: empty command")]
    EmptyCommand { program: String },
    #[error("program {program}: after {after}, which is not a program")]
    UnknownAfter { program: String, after: String },
    #[error("program {program}: its `after` chain comes back to it")]
    Cycle { program: String },
    #[error("program {program}: ready needs exactly one of exec or tcp")]
    ReadyCheck { program: String },
    #[error("{field}: {value} is not a number of seconds from 0 to 1000000")]
    Seconds { field: String, value: f64 },
}

/// A validated program name: safe to print as a line prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProgramName(String);

impl ProgramName {
    pub fn new(name: &str) -> Result<Self, ConfigError> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(ProgramName(name.to_owned()))
        } else {
            Err(ConfigError::Name {
                name: name.to_owned(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProgramName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a program is started again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

/// What the container does when one program gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnGiveUp {
    /// Stop the other programs gracefully and exit non-zero, so the container's restart policy
    /// (and `kubectl get pods`) sees the failure.
    #[default]
    Exit,
    /// Keep the others running; exit (non-zero) once every program has ended.
    Continue,
}

/// How a readiness check runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Ready when this command exits 0.
    Exec(Vec<String>),
    /// Ready when a TCP connection to this port on the loopback address succeeds.
    Tcp(u16),
}

/// A readiness check, polled from the program's start until it first passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub check: Check,
    pub period: Duration,
    pub timeout: Duration,
}

/// One supervised program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub name: ProgramName,
    /// The argv given to execve; a string command becomes `/bin/sh -c STRING`.
    pub command: Vec<String>,
    pub restart: Restart,
    pub max_restarts: u32,
    pub grace: Duration,
    /// Indices (into [`Config::programs`]) of the programs that must be ready first.
    pub after: Vec<usize>,
    pub ready: Option<Ready>,
}

/// A validated supervision config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub on_give_up: OnGiveUp,
    /// In the order they were written; start order follows it, subject to `after`.
    pub programs: Vec<Program>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    grace_seconds: Option<f64>,
    on_give_up: Option<OnGiveUp>,
    #[serde(default)]
    programs: Vec<RawProgram>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    name: String,
    command: RawCommand,
    restart: Option<Restart>,
    max_restarts: Option<u32>,
    grace_seconds: Option<f64>,
    after: Option<RawCommand>,
    ready: Option<RawReady>,
}

/// A string or a list of strings.
#[derive(Debug)]
enum RawCommand {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for RawCommand {
    // By hand rather than `#[serde(untagged)]`, whose error says only "did not match any
    // variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawCommand;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::One(v.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawCommand, A::Error> {
                let mut v = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    v.push(item);
                }
                Ok(RawCommand::Many(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    exec: Option<RawCommand>,
    tcp: Option<u16>,
    period_seconds: Option<f64>,
    timeout_seconds: Option<f64>,
}

/// Reads and validates a config file, with `runs` (`NAME=COMMAND`) appended as programs that
/// use the defaults.
pub fn load(file: Option<&Path>, runs: &[String]) -> Result<Config, ConfigError> {
    let raw = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            parse_raw(&text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?
        }
        None => RawConfig::default(),
    };
    validate(raw, runs)
}

/// Parses and validates config text (YAML or JSON) plus `--run` arguments.
pub fn parse(text: &str, runs: &[String]) -> Result<Config, ConfigError> {
    let raw = parse_raw(text).map_err(|source| ConfigError::Parse {
        path: PathBuf::from("<text>"),
        source,
    })?;
    validate(raw, runs)
}

fn parse_raw(text: &str) -> Result<RawConfig, serde_saphyr::Error> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    // YAML 1.2 booleans only: `command: y` or `after: on` are strings, not YAML 1.1 booleans.
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(text, options)
}

/// Splits one `--run NAME=COMMAND` argument.
pub fn parse_run(arg: &str) -> Result<(ProgramName, String), ConfigError> {
    let bad = || ConfigError::Run {
        arg: arg.to_owned(),
    };
    let (name, command) = arg.split_once('=').ok_or_else(bad)?;
    if command.trim().is_empty() {
        return Err(bad());
    }
    Ok((ProgramName::new(name)?, command.to_owned()))
}

fn validate(raw: RawConfig, runs: &[String]) -> Result<Config, ConfigError> {
    let default_grace = seconds("grace_seconds", raw.grace_seconds, DEFAULT_GRACE)?;
    let mut raws = raw.programs;
    for arg in runs {
        let (name, command) = parse_run(arg)?;
        raws.push(RawProgram {
            name: name.as_str().to_owned(),
            command: RawCommand::One(command),
            restart: None,
            max_restarts: None,
            grace_seconds: None,
            after: None,
            ready: None,
        });
    }
    if raws.is_empty() {
        return Err(ConfigError::NoPrograms);
    }
    let mut index = HashMap::new();
    for (i, p) in raws.iter().enumerate() {
        let name = ProgramName::new(&p.name)?;
        if index.insert(name.as_str().to_owned(), i).is_some() {
            return Err(ConfigError::Duplicate {
                name: p.name.clone(),
            });
        }
    }
    let mut programs = Vec::with_capacity(raws.len());
    for p in raws {
        programs.push(program(p, default_grace, &index)?);
    }
    check_cycles(&programs)?;
    Ok(Config {
        on_give_up: raw.on_give_up.unwrap_or_default(),
        programs,
    })
}

fn program(
    p: RawProgram,
    default_grace: Duration,
    index: &HashMap<String, usize>,
) -> Result<Program, ConfigError> {
    let name = ProgramName::new(&p.name)?;
    let field = |f: &str| format!("program {name}: {f}");
    let command = argv(p.command).ok_or_else(|| ConfigError::EmptyCommand {
        program: p.name.clone(),
    })?;
    let after_names = match p.after {
        None => Vec::new(),
        Some(RawCommand::One(one)) => vec![one],
        Some(RawCommand::Many(many)) => many,
    };
    let mut after = Vec::with_capacity(after_names.len());
    for a in after_names {
        match index.get(&a) {
            Some(&i) => after.push(i),
            None => {
                return Err(ConfigError::UnknownAfter {
                    program: p.name.clone(),
                    after: a,
                })
            }
        }
    }
    let ready = match p.ready {
        None => None,
        Some(r) => {
            let check = match (r.exec, r.tcp) {
                (Some(exec), None) => {
                    Check::Exec(argv(exec).ok_or_else(|| ConfigError::ReadyCheck {
                        program: p.name.clone(),
                    })?)
                }
                (None, Some(port)) => Check::Tcp(port),
                _ => {
                    return Err(ConfigError::ReadyCheck {
                        program: p.name.clone(),
                    })
                }
            };
            Some(Ready {
                check,
                period: seconds(
                    &field("ready.period_seconds"),
                    r.period_seconds,
                    DEFAULT_CHECK_PERIOD,
                )?,
                timeout: seconds(
                    &field("ready.timeout_seconds"),
                    r.timeout_seconds,
                    DEFAULT_CHECK_TIMEOUT,
                )?,
            })
        }
    };
    Ok(Program {
        command,
        restart: p.restart.unwrap_or(Restart::Always),
        max_restarts: p.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS),
        grace: seconds(&field("grace_seconds"), p.grace_seconds, default_grace)?,
        after,
        ready,
        name,
    })
}

/// A string runs through `/bin/sh -c`, a list is the argv itself.
fn argv(command: RawCommand) -> Option<Vec<String>> {
    match command {
        RawCommand::One(s) if s.trim().is_empty() => None,
        RawCommand::One(s) => Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), s]),
        RawCommand::Many(v) if v.first().is_none_or(|a| a.is_empty()) => None,
        RawCommand::Many(v) => Some(v),
    }
}

fn seconds(field: &str, value: Option<f64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && (0.0..=1_000_000.0).contains(&v) => {
            Ok(Duration::from_secs_f64(v))
        }
        Some(v) => Err(ConfigError::Seconds {
            field: field.to_owned(),
            value: v,
        }),
    }
}

/// Rejects `after` chains that loop, which would leave their programs waiting forever.
fn check_cycles(programs: &[Program]) -> Result<(), ConfigError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Visiting,
        Done,
    }
    fn visit(i: usize, programs: &[Program], marks: &mut [Mark]) -> Result<(), ConfigError> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Visiting => {
                return Err(ConfigError::Cycle {
                    program: programs[i].name.to_string(),
                })
            }
            Mark::New => {}
        }
        marks[i] = Mark::Visiting;
        for &dep in &programs[i].after {
            visit(dep, programs, marks)?;
        }
        marks[i] = Mark::Done;
        Ok(())
    }
    let mut marks = vec![Mark::New; programs.len()];
    for i in 0..programs.len() {
        visit(i, programs, &mut marks)?;
    }
    Ok(())
}
