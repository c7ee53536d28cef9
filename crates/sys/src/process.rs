//! Process plumbing for the monitor: sessions, child subreaper, reaping, signals.
//!
//! See prctl(2) PR_SET_CHILD_SUBREAPER, setsid(2), waitpid(2), signalfd(2).

use crate::{Result, SysError};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Starts a new session so the process outlives its parent's terminal and process group.
pub fn new_session() -> Result<()> {
    nix::unistd::setsid()
        .map(|_| ())
        .map_err(|e| SysError::new("setsid", "self", e))
}

/// Makes the calling process the reaper of its orphaned descendants, so a container's init
/// (double-forked by libcontainer) is re-parented to it.
pub fn set_child_subreaper() -> Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc < 0 {
        return Err(SysError::new(
            "prctl",
            "PR_SET_CHILD_SUBREAPER",
            nix::Error::last(),
        ));
    }
    Ok(())
}

/// Makes the calling process non-dumpable: its /proc files (root, cwd, environ, fds) are
/// refused to processes without CAP_SYS_PTRACE, as for a setuid program (proc(5),
/// PR_SET_DUMPABLE in prctl(2)). `execve` resets it, so the process calls it itself.
pub fn set_not_dumpable() -> Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| SysError::new("prctl", "PR_SET_DUMPABLE", e))
}

/// Reaps every child, forever: SIGCHLD is blocked and waited for, so no handler is installed
/// (a PID namespace's init with no handler cannot be signalled from inside its namespace,
/// pid_namespaces(7)).
pub fn reap_forever() -> ! {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    let _ = set.thread_block();
    loop {
        reap_exited();
        // A wait that fails (EINTR) just means: look again.
        let _ = set.wait();
    }
}

/// A process forked by [`fork_with_pipes`], as its parent sees it.
#[derive(Debug)]
pub struct Forked {
    pub pid: i32,
    /// The write end of the child's stdin.
    pub stdin: std::os::fd::OwnedFd,
    /// The read end of the child's stdout.
    pub stdout: std::os::fd::OwnedFd,
}

/// Forks the calling process without exec: the child gets a pipe as stdin and one as stdout,
/// no other descriptor beyond stderr, `name` as its thread name (what `ps` shows as its
/// command), runs `child` and exits with what it returns; it never returns into the caller.
///
/// Only while the process has no other thread (fork(2) copies only the calling one; a lock
/// another thread held would stay locked forever in the child). Flushes stdout first, so the
/// child does not write the parent's buffered output a second time.
pub fn fork_with_pipes(name: &std::ffi::CStr, child: impl FnOnce() -> i32) -> Result<Forked> {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let _ = std::io::stdout().flush();
    let flags = nix::fcntl::OFlag::O_CLOEXEC;
    let (stdin_r, stdin_w) =
        nix::unistd::pipe2(flags).map_err(|e| SysError::new("pipe2", "stdin", e))?;
    let (stdout_r, stdout_w) =
        nix::unistd::pipe2(flags).map_err(|e| SysError::new("pipe2", "stdout", e))?;
    // SAFETY: the caller has no other thread (documented above); the child only duplicates
    // and closes descriptors, names itself and runs `child`, then exits without returning.
    match unsafe { nix::unistd::fork() }.map_err(|e| SysError::new("fork", "self", e))? {
        nix::unistd::ForkResult::Child => {
            let ok = nix::unistd::dup2(stdin_r.as_raw_fd(), libc::STDIN_FILENO).is_ok()
                && nix::unistd::dup2(stdout_w.as_raw_fd(), libc::STDOUT_FILENO).is_ok();
            // Every other descriptor goes, the other children's pipe ends included: a sibling
            // holding this one's stdin open would keep it waiting after the parent is gone.
            // SAFETY: close_range takes three integers; nothing in this process uses a
            // descriptor above stderr from here on (the `OwnedFd`s above are forgotten).
            let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
            std::mem::forget((stdin_r, stdin_w, stdout_r, stdout_w));
            let _ = nix::sys::prctl::set_name(name);
            let code = if ok && closed == 0 { child() } else { 127 };
            std::process::exit(code)
        }
        nix::unistd::ForkResult::Parent { child } => Ok(Forked {
            pid: child.as_raw(),
            stdin: stdin_w,
            stdout: stdout_r,
        }),
    }
}

/// Reaps the exited child `pid` if it has exited (waitpid with WNOHANG); whether it was.
pub fn try_reap(pid: i32) -> bool {
    !matches!(
        waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
        Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR)
    )
}

/// Puts the calling thread in (or back out of) the idle scheduling class (sched(7)
/// `SCHED_IDLE`; otherwise `SCHED_OTHER`, its nice value unchanged): it runs only when a CPU
/// has nothing else to do. Unlike the lowest nice value, a CPU that runs only idle-class work
/// counts as free when the kernel places a task that wakes up, which then preempts it at once
/// instead of queueing behind other work on a busy CPU. Inherited across fork and exec.
pub fn set_idle_scheduling(idle: bool) -> Result<()> {
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the sched_param it is given, which outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc < 0 {
        return Err(SysError::new(
            "sched_setscheduler",
            "self",
            nix::Error::last(),
        ));
    }
    Ok(())
}

/// Whether the calling thread is in the normal scheduling class (`SCHED_OTHER`).
pub fn normal_scheduling() -> bool {
    // SAFETY: sched_getscheduler takes a PID and touches no memory.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_OTHER }
}

/// Asks the kernel to send `signal` to this process when its parent dies.
pub fn set_parent_death_signal(signal: Signal) -> Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes one integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        return Err(SysError::new(
            "prctl",
            "PR_SET_PDEATHSIG",
            nix::Error::last(),
        ));
    }
    Ok(())
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// Reaps every child that has exited, without blocking.
pub fn reap_exited() -> Vec<(i32, Exit)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw(), Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid.as_raw(), Exit::Signal(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => continue,
        }
    }
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn kill(pid: i32, signal: Signal) -> Result<()> {
    match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(e) => Err(SysError::new("kill", pid, e)),
    }
}

/// Whether a process with this PID exists (it may be a zombie).
pub fn alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(Pid::from_raw(pid), None),
        Err(nix::Error::ESRCH)
    )
}

/// Blocks `signals` for the calling thread and returns a non-blocking signalfd that reads them.
pub fn signal_fd(signals: &[Signal]) -> Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in signals {
        set.add(*s);
    }
    set.thread_block()
        .map_err(|e| SysError::new("sigprocmask", "block", e))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| SysError::new("signalfd", "monitor", e))
}

/// Points stdout at /dev/null, so a monitor whose daemon went away gets no SIGPIPE.
pub fn stdout_to_null() -> Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| SysError::new("open", "/dev/null", crate::ns::io_errno(&e)))?;
    nix::unistd::dup2(null.as_raw_fd(), libc::STDOUT_FILENO)
        .map(|_| ())
        .map_err(|e| SysError::new("dup2", "stdout", e))
}

/// Caps glibc's malloc arenas at `n` for the whole process. glibc gives threads arenas of their
/// own up to 8 per core, and each keeps what was freed into it: the daemon, whose store
/// writers hand their tokio worker to fresh threads while they wait for a commit, held ~15 MiB
/// more at 50 pods for it (`bench/run`'s API rows: 47 -> 33 MiB PSS with 2). Call before any
/// thread starts. Returns whether glibc took it (always false elsewhere).
pub fn limit_malloc_arenas(n: i32) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive
        // count, and no allocation is in progress on another thread at start-up.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = n;
        false
    }
}

/// Points stdin at /dev/null and stderr at `log` (opened for appending): what a monitor started
/// ahead of its container does once it is told which container is its.
pub fn stdio_to(log: &std::path::Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::open("/dev/null")
        .map_err(|e| SysError::new("open", "/dev/null", crate::ns::io_errno(&e)))?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .map_err(|e| SysError::new("open", log.display(), crate::ns::io_errno(&e)))?;
    nix::unistd::dup2(null.as_raw_fd(), libc::STDIN_FILENO)
        .map_err(|e| SysError::new("dup2", "stdin", e))?;
    nix::unistd::dup2(file.as_raw_fd(), libc::STDERR_FILENO)
        .map(|_| ())
        .map_err(|e| SysError::new("dup2", "stderr", e))
}

/// Resets every signal's disposition to its default action.
///
/// Ignored signals stay ignored across `execve`, and the monitor inherits some (Rust ignores
/// SIGPIPE before `main`; a shell ignores SIGINT and SIGQUIT for background jobs): reset before
/// creating a container, its processes start with every signal at its default, as on a
/// Kubernetes node. Raw `rt_sigaction`, because glibc refuses to touch its internal signals
/// (32 and 33), which can also arrive ignored.
pub fn reset_signal_dispositions() {
    /// The kernel's `struct sigaction` on x86_64 and aarch64 (not glibc's).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for signo in 1..=64 {
        if signo == libc::SIGKILL || signo == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `default` is a valid kernel sigaction (SIG_DFL, no flags) that outlives the
        // call; the old action is not requested (null); 8 is the kernel's sigset size.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signo,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// Ignores SIGPIPE, so a vanished reader of the monitor's own pipes cannot kill it.
pub fn ignore_sigpipe() -> Result<()> {
    use nix::sys::signal::{signal, SigHandler};
    // SAFETY: SIG_IGN is not a function, so no handler can run with broken invariants.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map(|_| ())
        .map_err(|e| SysError::new("signal", "SIGPIPE", e))
}

/// Whether this process may lower an OOM score adjustment (tries it on itself, then puts the
/// old value back).
pub fn can_lower_oom_score() -> bool {
    let path = "/proc/self/oom_score_adj";
    let Ok(old) = std::fs::read_to_string(path) else {
        return false;
    };
    let Ok(value) = old.trim().parse::<i32>() else {
        return false;
    };
    if value <= -1000 {
        return false;
    }
    let lowered = std::fs::write(path, (value - 1).to_string()).is_ok();
    if lowered {
        let _ = std::fs::write(path, old.trim());
    }
    lowered
}

/// Takes ownership of a descriptor inherited across `execve` (passed by number on the command
/// line); `None` if it is not an open descriptor.
pub fn adopt_fd(fd: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd < 3 || nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return None;
    }
    // SAFETY: `fd` is open (F_GETFD succeeded), above stdio, and was handed to this process
    // to own by its own previous image; nothing else in this process refers to it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Drops this process's resident pages of its executable and shared libraries that are clean
/// and read-only (code and constants), so a long-lived process that used much of them once
/// (the monitor after starting its container) keeps resident only what it touches afterwards.
/// Each page that was touched brought its neighbours in with it (the kernel maps up to 16
/// cached pages around a faulting one), and loading the binary touched every library's symbol
/// tables. The pages stay in the page cache and come back on the next access, at the cost of a
/// minor fault (madvise(2) MADV_DONTNEED on a private file mapping). Writable mappings, shared
/// ones, and read-only ones with private dirty pages (RELRO) are left alone. Best effort.
pub fn release_clean_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_file_mappings(&smaps) {
        // SAFETY: the range is a whole private mapping of a file that is not writable and has
        // no private dirty page: dropping its pages loses nothing, the next access reads them
        // from the file again. No Rust reference can dangle, as the memory stays mapped and
        // its contents unchanged.
        let _ =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Asks the kernel to read the loaded part of this process's executable into the page cache
/// now (posix_fadvise(2) POSIX_FADV_WILLNEED, which only queues the reads): where its pages
/// were evicted (memory pressure, proactive reclaim), the start then waits for one batch of
/// reads instead of a disk round trip per page fault. The debug information after the loaded
/// segments is left out. Costs a few microseconds when everything is cached. Best effort.
pub fn prefetch_executable() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let Ok(mut file) = std::fs::File::open("/proc/self/exe") else {
        return;
    };
    let mut head = vec![0u8; 4096];
    let Ok(n) = file.read(&mut head) else {
        return;
    };
    let Some(len) = loaded_length(&head[..n]).and_then(|l| libc::off_t::try_from(l).ok()) else {
        return;
    };
    // SAFETY: posix_fadvise takes a descriptor this function owns and plain integers; it
    // touches no memory of ours.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, len, libc::POSIX_FADV_WILLNEED) };
}

/// The length of the file prefix an ELF64 little-endian executable's PT_LOAD segments come
/// from (the largest p_offset + p_filesz), read from its first bytes; `None` when they are not
/// such a header or its program headers lie beyond them.
fn loaded_length(head: &[u8]) -> Option<u64> {
    const PT_LOAD: u32 = 1;
    let u16_at = |at: usize| Some(u16::from_le_bytes(head.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(head.get(at..at + 8)?.try_into().ok()?));
    // e_ident: the magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let (phentsize, phnum) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    let mut end = 0;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? == PT_LOAD {
            end = end.max(u64_at(ph + 0x08)?.checked_add(u64_at(ph + 0x20)?)?);
        }
    }
    (end > 0).then_some(end)
}

/// The address ranges of the private, read-only file mappings without private dirty pages,
/// from the text of /proc/self/smaps.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let perms = fields.next().unwrap_or_default();
            let path = line
                .splitn(6, char::is_whitespace)
                .nth(5)
                .unwrap_or_default();
            let clean_file = path.trim_start().starts_with('/')
                && perms.starts_with('r')
                && !perms.contains('w')
                && perms.ends_with('p');
            current = match (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                (Ok(s), Ok(e)) if clean_file => Some((s, e)),
                _ => None,
            };
        } else if first == "Private_Dirty:" {
            if let Some(range) = current.take() {
                if fields.next() == Some("0") {
                    out.push(range);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod exe_page_tests {
    use super::*;

    #[test]
    fn loaded_length_is_the_end_of_the_last_load_segment() {
        // An ELF64 header with three program headers at 0x40: LOAD (0, 0x1000), NOTE (further
        // out, not loaded), LOAD (0x3000, 0x500).
        let mut head = vec![0u8; 0x40 + 3 * 0x38];
        head[..6].copy_from_slice(b"\x7fELF\x02\x01");
        head[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        head[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        head[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        for (i, (kind, offset, size)) in [
            (1u32, 0u64, 0x1000u64),
            (4, 0x9000, 0x100),
            (1, 0x3000, 0x500),
        ]
        .into_iter()
        .enumerate()
        {
            let at = 0x40 + i * 0x38;
            head[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            head[at + 0x08..at + 0x10].copy_from_slice(&offset.to_le_bytes());
            head[at + 0x20..at + 0x28].copy_from_slice(&size.to_le_bytes());
        }
        assert_eq!(loaded_length(&head), Some(0x3500));
        assert_eq!(
            loaded_length(&head[..0x60]),
            None,
            "program headers cut off"
        );
        assert_eq!(loaded_length(b"#!/bin/sh\n"), None);
        let exe = std::fs::read("/proc/self/exe").expect("read the test binary");
        let len = loaded_length(&exe[..4096]).expect("the test binary is ELF64");
        assert!(len <= exe.len() as u64);
    }

    #[test]
    fn only_clean_read_only_private_file_mappings() {
        let smaps = "\
00200000-00656000 r--p 00000000 fe:00 5416736                            /usr/bin/peapod
Rss:                 512 kB
Private_Dirty:         0 kB
00656000-014ca000 r-xp 00455000 fe:00 5416736                            /usr/bin/peapod
Private_Dirty:         0 kB
014ca000-01591000 r--p 012c8000 fe:00 5416736                            /usr/bin/peapod
Private_Dirty:        32 kB
01591000-01597000 rw-p 0138e000 fe:00 5416736                            /usr/bin/peapod
Private_Dirty:         4 kB
01597000-015b8000 rw-p 00000000 00:00 0                                  [heap]
Private_Dirty:         8 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:00 1                          /usr/lib/libc.so.6
Private_Dirty:         0 kB
7f0000100000-7f0000101000 r--s 00000000 fe:00 2                          /dev/shm/shared
Private_Dirty:         0 kB
7f0000101000-7f0000102000 r--p 00000000 00:00 0 
Private_Dirty:         0 kB
7fff00000000-7fff00002000 r-xp 00000000 00:00 0                          [vdso]
Private_Dirty:         0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![
                (0x200000, 0x656000),
                (0x656000, 0x14ca000),
                (0x7f0000000000, 0x7f0000100000)
            ]
        );
    }
}

#[cfg(test)]
mod scheduling_tests {
    #[test]
    fn idle_scheduling_is_entered_and_left() {
        // A thread of its own: the class is per thread.
        std::thread::spawn(|| {
            assert!(super::normal_scheduling());
            super::set_idle_scheduling(true).expect("enter the idle class");
            assert!(!super::normal_scheduling());
            super::set_idle_scheduling(false).expect("leave it");
            assert!(super::normal_scheduling());
        })
        .join()
        .expect("the thread");
    }
}

#[cfg(test)]
mod malloc_tests {
    #[test]
    fn glibc_takes_an_arena_limit() {
        assert_eq!(
            super::limit_malloc_arenas(2),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
