//! The supervisor's decisions, as a state machine over plain data: which program to start,
//! when to run a readiness check, when to signal what, and when init exits. No I/O here: the
//! loop in `supervise.rs` reports what happened (a spawn, an exit, a check result, a stop
//! request) with the time, calls [`Supervisor::step`] and carries out the actions it returns.
//!
//! Start order: the config's order, except that a program with `after: NAME` starts only once
//! NAME has been ready (or has completed). Stop order: the reverse of the order programs were
//! first started, one at a time, each with SIGTERM and, after its grace period, SIGKILL to its
//! process group, as supervisord and systemd do for dependent services.

use crate::config::{Config, OnGiveUp, Program};
pub use crate::note::{Note, StopReason};
use crate::restart::{self, Decision};
use crate::status::ExitStatus;
use std::time::{Duration, Instant};

/// A program's state, named for what `ps` would show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Not started yet: waiting for the programs it comes `after`.
    Waiting,
    /// A [`Action::Spawn`] was handed out; [`Supervisor::spawned`] follows.
    Spawning,
    /// Running as `pid` (also its process group) since `since`; `ready` once its check passed.
    Up {
        pid: i32,
        since: Instant,
        ready: bool,
    },
    /// Exited; starts again at `until`.
    BackOff { until: Instant },
    /// Sent SIGTERM while stopping; SIGKILL at `kill_at`.
    Terminating { pid: i32, kill_at: Instant },
    /// Sent SIGKILL; waiting to reap it.
    Killed { pid: i32 },
    /// Exited successfully and its policy does not restart it.
    Completed,
    /// Will not be started again; init's exit code if this ends the container.
    GaveUp { code: i32 },
    /// Ended because init is stopping.
    Stopped,
}

impl Run {
    fn ended(self) -> bool {
        matches!(self, Run::Completed | Run::GaveUp { .. } | Run::Stopped)
    }
}

/// A readiness check's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CheckRun {
    /// No check pending (none configured, or it already passed).
    None,
    /// Run the next one at `next_at`.
    Idle { next_at: Instant },
    /// An [`Action::StartCheck`] was handed out.
    Asked,
    /// The check command runs as `pid`; kill it at `deadline`.
    Running { pid: i32, deadline: Instant },
    /// Killed for taking too long; waiting to reap it.
    Killing { pid: i32 },
}

#[derive(Debug)]
struct Slot {
    run: Run,
    /// Consecutive restarts, for the backoff and `max_restarts`.
    restarts: u32,
    /// Has been ready at least once: programs `after` it may start.
    ever_ready: bool,
    started: bool,
    check: CheckRun,
}

/// The signal sent to a program's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Kill,
}

/// What the loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start program `i`, then report with [`Supervisor::spawned`].
    Spawn(usize),
    /// Signal a process group (a program, or what it left behind when it exited).
    Signal { pgid: i32, signal: StopSignal },
    /// Run program `i`'s readiness check, then report with [`Supervisor::check_started`] or
    /// [`Supervisor::check_result`].
    StartCheck(usize),
    /// Kill a readiness check's process group.
    KillCheck { pgid: i32 },
    /// Tell the user.
    Note(Note),
    /// Exit init with this code.
    Exit(i32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping { code: i32 },
    Done,
}

/// Every program's state and what init is doing as a whole.
#[derive(Debug)]
pub struct Supervisor {
    programs: Vec<Program>,
    on_give_up: OnGiveUp,
    slots: Vec<Slot>,
    /// Program indices in the order they first started; stopping goes backwards.
    start_order: Vec<usize>,
    phase: Phase,
    /// The first give-up's code: init's exit code when the programs end on their own.
    failure: Option<i32>,
    pending: Vec<Action>,
}

impl Supervisor {
    pub fn new(config: Config) -> Self {
        let slots = config
            .programs
            .iter()
            .map(|_| Slot {
                run: Run::Waiting,
                restarts: 0,
                ever_ready: false,
                started: false,
                check: CheckRun::None,
            })
            .collect();
        Supervisor {
            programs: config.programs,
            on_give_up: config.on_give_up,
            slots,
            start_order: Vec::new(),
            phase: Phase::Running,
            failure: None,
            pending: Vec::new(),
        }
    }

    pub fn programs(&self) -> &[Program] {
        &self.programs
    }

    /// Program `i`'s state.
    pub fn run(&self, i: usize) -> Run {
        self.slots[i].run
    }

    /// Program indices in the order they first started.
    pub fn start_order(&self) -> &[usize] {
        &self.start_order
    }

    /// The process groups of running programs, to forward signals to.
    pub fn running_groups(&self) -> Vec<i32> {
        self.slots
            .iter()
            .filter_map(|s| match s.run {
                Run::Up { pid, .. } | Run::Terminating { pid, .. } | Run::Killed { pid } => {
                    Some(pid)
                }
                _ => None,
            })
            .collect()
    }

    /// The earliest time [`Supervisor::step`] has something to do without any new event.
    pub fn next_deadline(&self) -> Option<Instant> {
        let running = self.phase == Phase::Running;
        self.slots
            .iter()
            .flat_map(|s| {
                let run = match s.run {
                    Run::BackOff { until } if running => Some(until),
                    Run::Terminating { kill_at, .. } => Some(kill_at),
                    _ => None,
                };
                let check = match s.check {
                    CheckRun::Idle { next_at } if running => Some(next_at),
                    CheckRun::Running { deadline, .. } => Some(deadline),
                    _ => None,
                };
                [run, check]
            })
            .flatten()
            .min()
    }

    /// SIGTERM or SIGINT: stop every program (once), then exit 0 (or with the code of a program
    /// that gave up earlier under `on_give_up: continue`).
    pub fn stop(&mut self) {
        if self.phase == Phase::Running {
            self.begin_stop(self.failure.unwrap_or(0), StopReason::Requested);
        }
    }

    /// Program `i` was started as `pid` (`Err` if it could not be started at all, which counts
    /// as an exit with code 127, as in a shell).
    pub fn spawned(&mut self, i: usize, pid: Result<i32, ()>, now: Instant) {
        let Ok(pid) = pid else {
            self.ended(i, ExitStatus::Code(127), Duration::ZERO, now);
            return;
        };
        let slot = &mut self.slots[i];
        let has_check = self.programs[i].ready.is_some();
        slot.run = Run::Up {
            pid,
            since: now,
            ready: !has_check,
        };
        slot.check = if has_check {
            CheckRun::Idle { next_at: now }
        } else {
            slot.ever_ready = true;
            CheckRun::None
        };
        if !slot.started {
            slot.started = true;
            self.start_order.push(i);
        }
        self.note(Note::Started {
            program: self.programs[i].name.to_string(),
            pid,
        });
    }

    /// A readiness check for program `i` runs as `pid`.
    pub fn check_started(&mut self, i: usize, pid: i32, now: Instant) {
        if let Some(ready) = &self.programs[i].ready {
            self.slots[i].check = CheckRun::Running {
                pid,
                deadline: now + ready.timeout,
            };
        }
    }

    /// Program `i`'s readiness check passed or failed.
    pub fn check_result(&mut self, i: usize, passed: bool, now: Instant) {
        let Some(ready) = &self.programs[i].ready else {
            return;
        };
        let slot = &mut self.slots[i];
        let Run::Up {
            ready: false,
            pid,
            since,
        } = slot.run
        else {
            return;
        };
        if passed {
            slot.run = Run::Up {
                pid,
                since,
                ready: true,
            };
            slot.ever_ready = true;
            slot.check = CheckRun::None;
            let program = self.programs[i].name.to_string();
            self.note(Note::Ready { program });
        } else {
            slot.check = CheckRun::Idle {
                next_at: now + ready.period,
            };
        }
    }

    /// A child was reaped. Unknown pids (orphans init adopted) need nothing more.
    pub fn exited(&mut self, pid: i32, status: ExitStatus, now: Instant) {
        for i in 0..self.slots.len() {
            match self.slots[i].check {
                CheckRun::Running { pid: p, .. } | CheckRun::Killing { pid: p } if p == pid => {
                    // Nothing the check started outlives it.
                    self.pending.push(Action::KillCheck { pgid: pid });
                    self.slots[i].check = CheckRun::None;
                    self.check_result(i, status.success(), now);
                    return;
                }
                _ => {}
            }
            match self.slots[i].run {
                Run::Up { pid: p, since, .. } if p == pid => {
                    // Whatever it left in its process group goes with it, so a restart never
                    // races an old copy for its port (systemd's KillMode=control-group).
                    self.pending.push(Action::Signal {
                        pgid: pid,
                        signal: StopSignal::Kill,
                    });
                    self.cancel_check(i);
                    self.ended(i, status, now.saturating_duration_since(since), now);
                    return;
                }
                Run::Terminating { pid: p, .. } | Run::Killed { pid: p } if p == pid => {
                    self.pending.push(Action::Signal {
                        pgid: pid,
                        signal: StopSignal::Kill,
                    });
                    self.slots[i].run = Run::Stopped;
                    let program = self.programs[i].name.to_string();
                    self.note(Note::Stopped { program, status });
                    return;
                }
                _ => {}
            }
        }
    }

    /// The actions due at `now`, given everything reported so far.
    pub fn step(&mut self, now: Instant) -> Vec<Action> {
        match self.phase {
            Phase::Running => self.step_running(now),
            Phase::Stopping { code } => self.step_stopping(code, now),
            Phase::Done => {}
        }
        std::mem::take(&mut self.pending)
    }

    fn step_running(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            match self.slots[i].run {
                Run::Waiting => match self.dependencies(i) {
                    Dependencies::Ready => self.spawn(i),
                    Dependencies::Waiting => {}
                    Dependencies::GaveUp(dep) => {
                        self.slots[i].run = Run::GaveUp { code: 1 };
                        let program = self.programs[i].name.to_string();
                        let dependency = self.programs[dep].name.to_string();
                        self.note(Note::DependencyGaveUp {
                            program: program.clone(),
                            dependency,
                        });
                        self.failed(program, 1);
                    }
                },
                Run::BackOff { until } if until <= now => self.spawn(i),
                _ => {}
            }
            if self.phase != Phase::Running {
                return;
            }
            match self.slots[i].check {
                CheckRun::Idle { next_at } if next_at <= now => {
                    self.slots[i].check = CheckRun::Asked;
                    self.pending.push(Action::StartCheck(i));
                }
                CheckRun::Running { pid, deadline } if deadline <= now => {
                    self.slots[i].check = CheckRun::Killing { pid };
                    self.pending.push(Action::KillCheck { pgid: pid });
                }
                _ => {}
            }
        }
        if self.slots.iter().all(|s| s.run.ended()) {
            self.finish(self.failure.unwrap_or(0));
        }
    }

    fn step_stopping(&mut self, code: i32, now: Instant) {
        for i in 0..self.slots.len() {
            if matches!(
                self.slots[i].run,
                Run::Waiting | Run::Spawning | Run::BackOff { .. }
            ) {
                self.slots[i].run = Run::Stopped;
            }
            self.cancel_check(i);
        }
        for k in (0..self.start_order.len()).rev() {
            let i = self.start_order[k];
            let program = self.programs[i].name.to_string();
            let grace = self.programs[i].grace;
            match self.slots[i].run {
                Run::Up { pid, .. } => {
                    self.slots[i].run = Run::Terminating {
                        pid,
                        kill_at: now + grace,
                    };
                    self.pending.push(Action::Signal {
                        pgid: pid,
                        signal: StopSignal::Term,
                    });
                    self.note(Note::Stopping { program, grace });
                    return;
                }
                Run::Terminating { pid, kill_at } if kill_at <= now => {
                    self.slots[i].run = Run::Killed { pid };
                    self.pending.push(Action::Signal {
                        pgid: pid,
                        signal: StopSignal::Kill,
                    });
                    self.note(Note::Killing { program, grace });
                    return;
                }
                Run::Terminating { .. } | Run::Killed { .. } => return,
                _ => {}
            }
        }
        self.finish(code);
    }

    /// An exit (or a failed start) of program `i` while it was up for `up_for`.
    fn ended(&mut self, i: usize, status: ExitStatus, up_for: Duration, now: Instant) {
        let program = self.programs[i].name.to_string();
        if self.phase != Phase::Running {
            self.slots[i].run = Run::Stopped;
            self.note(Note::Stopped { program, status });
            return;
        }
        let p = &self.programs[i];
        let slot = &mut self.slots[i];
        match restart::decide(p.restart, p.max_restarts, status, slot.restarts, up_for) {
            Decision::Restart { delay, restarts } => {
                slot.run = Run::BackOff { until: now + delay };
                slot.restarts = restarts;
                self.note(Note::Restarting {
                    program,
                    status,
                    delay,
                });
            }
            Decision::Completed => {
                slot.run = Run::Completed;
                self.note(Note::Completed { program });
            }
            Decision::GiveUp(why) => {
                let code = status.failure_code();
                slot.run = Run::GaveUp { code };
                self.note(Note::GaveUp {
                    program: program.clone(),
                    status,
                    why,
                });
                self.failed(program, code);
            }
        }
    }

    /// A program gave up: remember the first failure, and stop everything if that is the policy.
    fn failed(&mut self, program: String, code: i32) {
        self.failure.get_or_insert(code);
        if self.on_give_up == OnGiveUp::Exit {
            self.begin_stop(code, StopReason::GaveUp(program));
        }
    }

    fn begin_stop(&mut self, code: i32, reason: StopReason) {
        self.phase = Phase::Stopping { code };
        self.note(Note::StoppingAll { reason });
    }

    fn finish(&mut self, code: i32) {
        self.phase = Phase::Done;
        self.pending.push(Action::Exit(code));
    }

    fn spawn(&mut self, i: usize) {
        self.slots[i].run = Run::Spawning;
        self.pending.push(Action::Spawn(i));
    }

    fn cancel_check(&mut self, i: usize) {
        if let CheckRun::Running { pid, .. } = self.slots[i].check {
            self.pending.push(Action::KillCheck { pgid: pid });
        }
        self.slots[i].check = CheckRun::None;
    }

    fn dependencies(&self, i: usize) -> Dependencies {
        let mut all_ready = true;
        for &dep in &self.programs[i].after {
            let slot = &self.slots[dep];
            match slot.run {
                Run::GaveUp { .. } if !slot.ever_ready => return Dependencies::GaveUp(dep),
                Run::Completed => {}
                _ if slot.ever_ready => {}
                _ => all_ready = false,
            }
        }
        if all_ready {
            Dependencies::Ready
        } else {
            Dependencies::Waiting
        }
    }

    fn note(&mut self, note: Note) {
        self.pending.push(Action::Note(note));
    }
}

enum Dependencies {
    Ready,
    Waiting,
    GaveUp(usize),
}
