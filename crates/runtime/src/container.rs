//! Containers as the daemon sees them: an ID, a directory, and the records the monitor
//! process writes there (`started.json`, `exit.json`).
//!
//! Layout of `<root>/containers/<id>/`: `config.json` (peapod's [`ContainerConfig`]),
//! `bundle/` (OCI `config.json` + `rootfs` overlay mount), `upper/` and `work/` (the writable
//! layer), `state/` (libcontainer's), `monitor.log` (the monitor's own diagnostics).

use crate::atomic;
use crate::error::{io, Result, RuntimeError};
use crate::spec::ContainerConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A container's ID: 32 lowercase hex digits, valid as a libcontainer ID and a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContainerId(String);

impl ContainerId {
    /// A fresh random ID.
    pub fn random() -> ContainerId {
        let mut bytes = [0u8; 16];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = std::io::Read::read_exact(&mut f, &mut bytes);
        }
        ContainerId(hex::encode(bytes))
    }

    /// Parses an existing ID, refusing anything that is not 32 hex digits.
    pub fn parse(s: &str) -> Option<ContainerId> {
        (s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| ContainerId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Written by the monitor once the container's process runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    pub pid: i32,
    pub started_at: String,
    /// The monitor's own PID, so a daemon that re-adopts the container can tell a dead monitor.
    #[serde(default)]
    pub monitor_pid: i32,
}

/// Written by the monitor, atomically, once the container's process has been reaped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Exited {
    /// The exit code, or 128 + signal number when killed by a signal (as the kubelet reports).
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub started_at: String,
    pub finished_at: String,
}

impl Exited {
    /// The kubelet's reason for a terminated container.
    pub fn reason(&self) -> &'static str {
        if self.oom_killed {
            "OOMKilled"
        } else if self.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
    }
}

/// The files of one container.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub id: ContainerId,
    pub path: PathBuf,
}

impl ContainerDir {
    pub fn new(containers_root: &Path, id: ContainerId) -> ContainerDir {
        let path = containers_root.join(id.as_str());
        ContainerDir { id, path }
    }
    pub fn config(&self) -> PathBuf {
        self.path.join("config.json")
    }
    pub fn bundle(&self) -> PathBuf {
        self.path.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.bundle().join("rootfs")
    }
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }
    pub fn state_root(&self) -> PathBuf {
        self.path.join("state")
    }
    pub fn started(&self) -> PathBuf {
        self.path.join("started.json")
    }
    pub fn exited(&self) -> PathBuf {
        self.path.join("exit.json")
    }
    /// Created by the monitor when a log line could not be written (a full disk): the daemon
    /// reports it as an event. The container keeps running.
    pub fn log_failed(&self) -> PathBuf {
        self.path.join("log-failed")
    }
    pub fn monitor_log(&self) -> PathBuf {
        self.path.join("monitor.log")
    }
}

/// The daemon's handle on the containers under one data root.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    exe: PathBuf,
}

/// The hidden subcommand of the peapod binary that runs a container's monitor.
pub const MONITOR_SUBCOMMAND: &str = "__monitor";

impl Runtime {
    /// `root` is the data root; `exe` the peapod binary that holds the monitor subcommand.
    pub fn new(root: &Path, exe: &Path) -> Runtime {
        Runtime {
            root: root.to_path_buf(),
            exe: exe.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn exe(&self) -> &Path {
        &self.exe
    }

    pub fn containers_root(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn dir(&self, id: &ContainerId) -> ContainerDir {
        ContainerDir::new(&self.containers_root(), id.clone())
    }

    /// Writes the container's directory and config, and returns the command that starts its
    /// monitor. The caller spawns it (the monitor prints one line, see [`parse_ready`]) and
    /// reaps it when it exits.
    pub fn prepare(&self, config: &ContainerConfig) -> Result<(ContainerId, Command)> {
        let id = ContainerId::random();
        let dir = self.dir(&id);
        for d in [dir.rootfs(), dir.upper(), dir.work(), dir.state_root()] {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        atomic::write_json(&dir.config(), config)?;
        let log = std::fs::File::create(dir.monitor_log()).map_err(io(dir.monitor_log()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg(MONITOR_SUBCOMMAND)
            .arg(&dir.path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        Ok((id, cmd))
    }

    /// The command that cleans up a container whose monitor died without recording an exit
    /// (see `monitor::cleanup_orphan`); run it to completion, then read `exited`.
    pub fn orphan_cleanup_command(&self, id: &ContainerId) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(MONITOR_SUBCOMMAND)
            .arg(&self.dir(id).path)
            .arg("--orphan")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    pub fn started(&self, id: &ContainerId) -> Result<Option<Started>> {
        atomic::read_json(&self.dir(id).started())
    }

    pub fn exited(&self, id: &ContainerId) -> Result<Option<Exited>> {
        atomic::read_json(&self.dir(id).exited())
    }

    /// Sends `signal` to the container's init process, if it runs.
    pub fn signal(&self, id: &ContainerId, signal: nix::sys::signal::Signal) -> Result<()> {
        if self.exited(id)?.is_some() {
            return Ok(());
        }
        if let Some(started) = self.started(id)? {
            peapod_sys::process::kill(started.pid, signal)?;
        }
        Ok(())
    }

    /// Removes a container whose monitor has exited: any mount left below its directory (after
    /// a crash), then the directory.
    pub fn remove(&self, id: &ContainerId) -> Result<()> {
        let dir = self.dir(id);
        for m in peapod_sys::mount::mounts_under(&dir.path) {
            peapod_sys::mount::unmount(&m)?;
        }
        match std::fs::remove_dir_all(&dir.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir.path)(e)),
        }
    }

    /// The monitor's last error lines (libcontainer explains itself better in its log than in
    /// its error values), for error messages.
    pub fn monitor_diagnostics(&self, id: &ContainerId) -> String {
        let text = std::fs::read_to_string(self.dir(id).monitor_log()).unwrap_or_default();
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" ERROR ") || l.starts_with("monitor: "))
            .map(|l| l.split_once(" ERROR ").map_or(l, |(_, rest)| rest.trim()))
            .collect();
        errors[errors.len().saturating_sub(3)..].join("; ")
    }
}

/// The monitor's one line on stdout: `started <pid>` or `failed <message>`.
pub fn parse_ready(container: &str, line: &str) -> Result<i32> {
    let line = line.trim_end();
    if let Some(pid) = line.strip_prefix("started ") {
        if let Ok(pid) = pid.parse() {
            return Ok(pid);
        }
    }
    let message = line.strip_prefix("failed ").unwrap_or(line);
    let message = if message.is_empty() {
        "monitor exited before starting it"
    } else {
        message
    };
    Err(RuntimeError::StartFailed {
        container: container.to_string(),
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_parse_back() {
        let id = ContainerId::random();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(ContainerId::parse(id.as_str()), Some(id));
        assert_eq!(ContainerId::parse("../etc"), None);
        assert_eq!(ContainerId::parse(&"A".repeat(32)), None);
    }

    #[test]
    fn ready_lines() {
        assert_eq!(parse_ready("c", "started 42\n").ok(), Some(42));
        let err = parse_ready("c", "failed exec: no such file\n").expect_err("fails");
        assert_eq!(
            err.to_string(),
            "container c failed to start: exec: no such file"
        );
        let err = parse_ready("c", "").expect_err("fails");
        assert!(err
            .to_string()
            .contains("monitor exited before starting it"));
    }

    #[test]
    fn reasons() {
        let mut e = Exited {
            exit_code: 0,
            signal: None,
            oom_killed: false,
            started_at: String::new(),
            finished_at: String::new(),
        };
        assert_eq!(e.reason(), "Completed");
        e.exit_code = 137;
        assert_eq!(e.reason(), "Error");
        e.oom_killed = true;
        assert_eq!(e.reason(), "OOMKilled");
    }
}
