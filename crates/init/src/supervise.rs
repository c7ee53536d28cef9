//! Supervision mode: the loop that carries out the [`Supervisor`]'s actions. One thread, one
//! `poll(2)` over the signalfd and the programs' output pipes, with the supervisor's next
//! deadline as the timeout; every wake-up reaps whatever exited.
//!
//! Signals: SIGTERM and SIGINT stop every program (reverse start order, each with its grace
//! period) and then init exits; SIGCHLD only wakes the loop; every other signal (SIGHUP,
//! SIGUSR1, SIGWINCH, real-time signals...) is forwarded to every running program's group.

use crate::config::{Check, Program};
use crate::output::{Streams, Target};
use crate::signals;
use crate::status::ExitStatus;
use crate::supervisor::{Action, StopSignal, Supervisor};
use crate::{config::Config, InitError};
use nix::poll::{PollFd, PollFlags};
use nix::sys::signal::Signal;
use peapod_sys::init::Terminal;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Supervises `config`'s programs until they are all done or stopped; returns init's exit code.
pub fn run(config: Config) -> Result<i32, InitError> {
    let signals = signals::setup()?;
    let mut supervisor = Supervisor::new(config);
    let mut streams = Streams::default();
    loop {
        let actions = supervisor.step(Instant::now());
        let acted = !actions.is_empty();
        for action in actions {
            if let Some(code) = act(&mut supervisor, &mut streams, action) {
                streams.drain();
                return Ok(code);
            }
        }
        // After acting, step again at once: a start can make another program's turn come.
        let timeout = if acted {
            Some(Duration::ZERO)
        } else {
            supervisor
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()))
        };
        let readable = {
            let mut fds: Vec<PollFd> = std::iter::once(signals.as_fd())
                .chain(streams.fds())
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            signals::wait(&mut fds, timeout)?;
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<_>>()
        };
        let ready_pipes: Vec<usize> = readable
            .iter()
            .skip(1)
            .enumerate()
            .filter_map(|(i, &r)| r.then_some(i))
            .collect();
        streams.read(&ready_pipes);
        for signo in signals::drain(&signals)? {
            on_signal(&mut supervisor, signo);
        }
        let now = Instant::now();
        for (pid, exit) in peapod_sys::process::reap_exited() {
            supervisor.exited(pid, ExitStatus::from(exit), now);
        }
    }
}

fn on_signal(supervisor: &mut Supervisor, signo: i32) {
    match Signal::try_from(signo) {
        Ok(Signal::SIGCHLD) => {}
        Ok(Signal::SIGTERM | Signal::SIGINT) => supervisor.stop(),
        _ => {
            for pgid in supervisor.running_groups() {
                signals::forward(pgid, signo);
            }
        }
    }
}

/// Carries out one action; `Some(code)` when init must exit.
fn act(supervisor: &mut Supervisor, streams: &mut Streams, action: Action) -> Option<i32> {
    match action {
        Action::Spawn(i) => {
            let program = &supervisor.programs()[i];
            let pid = spawn(program, streams).map_err(|e| {
                eprintln!(
                    "peapod-init: {}: cannot start {}: {e}",
                    program.name, program.command[0]
                );
            });
            supervisor.spawned(i, pid, Instant::now());
        }
        Action::Signal { pgid, signal } => {
            let signal = match signal {
                StopSignal::Term => Signal::SIGTERM,
                StopSignal::Kill => Signal::SIGKILL,
            };
            // A group that is already gone is fine: that is what was wanted.
            if let Err(e) = peapod_sys::init::signal_group(pgid, signal as i32) {
                eprintln!("peapod-init: {e}");
            }
        }
        Action::StartCheck(i) => {
            let program = &supervisor.programs()[i];
            let Some(ready) = &program.ready else {
                return None;
            };
            match &ready.check {
                Check::Tcp(port) => {
                    let passed = tcp_check(*port, ready.timeout);
                    supervisor.check_result(i, passed, Instant::now());
                }
                Check::Exec(argv) => match spawn_check(argv) {
                    Ok(pid) => supervisor.check_started(i, pid, Instant::now()),
                    Err(_) => supervisor.check_result(i, false, Instant::now()),
                },
            }
        }
        Action::KillCheck { pgid } => {
            let _ = peapod_sys::init::signal_group(pgid, Signal::SIGKILL as i32);
        }
        Action::Note(note) => eprintln!("peapod-init: {note}"),
        Action::Exit(code) => return Some(code),
    }
    None
}

/// Starts a program in its own process group (so signals reach what it starts too), stdin
/// from /dev/null, stdout and stderr through pipes init copies with a prefix.
fn spawn(program: &Program, streams: &mut Streams) -> std::io::Result<i32> {
    let (path, args) = program
        .command
        .split_first()
        .ok_or(std::io::ErrorKind::InvalidInput)?;
    let mut command = Command::new(path);
    command
        .args(args)
        .stdin(null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    peapod_sys::init::prepare_child(&mut command, Terminal::Leave);
    let mut child = command.spawn()?;
    let name = program.name.as_str();
    if let Some(out) = child.stdout.take() {
        streams.add(out, name, Target::Stdout);
    }
    if let Some(err) = child.stderr.take() {
        streams.add(err, name, Target::Stderr);
    }
    pid(&child)
}

/// Starts an exec readiness check in its own process group, output discarded.
fn spawn_check(argv: &[String]) -> std::io::Result<i32> {
    let (path, args) = argv.split_first().ok_or(std::io::ErrorKind::InvalidInput)?;
    let mut command = Command::new(path);
    command
        .args(args)
        .stdin(null())
        .stdout(null())
        .stderr(null());
    peapod_sys::init::prepare_child(&mut command, Terminal::Leave);
    let child = command.spawn()?;
    pid(&child)
}

/// /dev/null, or init's own stream where there is none (an image without /dev, run in a bare
/// chroot rather than by a container runtime, which always provides it).
fn null() -> Stdio {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_or_else(|_| Stdio::inherit(), Stdio::from)
}

/// The child's pid; it is reaped by the loop's waitpid(-1), never through `Child`.
fn pid(child: &std::process::Child) -> std::io::Result<i32> {
    i32::try_from(child.id()).map_err(|_| std::io::ErrorKind::InvalidData.into())
}

/// Whether something accepts TCP connections on `port` of the IPv4 or IPv6 loopback address.
fn tcp_check(port: u16, timeout: Duration) -> bool {
    [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ]
    .iter()
    .any(|addr| TcpStream::connect_timeout(addr, timeout).is_ok())
}
