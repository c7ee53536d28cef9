//! Monitor processes started ahead of their containers (`__monitor --pooled`, see
//! `Runtime::pooled_monitor_command`). `peapod run` knows from its manifest how many
//! containers it is about to start, and starts that many monitors before its daemon is up: the
//! exec and start-up of each (about a millisecond and a half of CPU) then run on the core the
//! daemon's start leaves idle instead of after the pod's sandbox. A container that finds none
//! (every restart, every pod of `peapod serve`) starts its monitor as before. Nothing is kept
//! beyond what was asked for: an unused one exits when the daemon does (its stdin closes).

use peapod_runtime::Runtime;
use std::path::Path;
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::process::Child;

#[derive(Debug, Default)]
pub struct MonitorPool {
    idle: Mutex<Vec<Child>>,
}

impl MonitorPool {
    /// Starts `n` monitors that wait for their containers. Best effort: one that cannot be
    /// started is simply not there (its container starts its own). Needs a tokio runtime.
    pub fn fill(&self, runtime: &Runtime, n: usize) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..n {
            match tokio::process::Command::from(runtime.pooled_monitor_command())
                .kill_on_drop(false)
                .spawn()
            {
                Ok(child) => idle.push(child),
                Err(error) => tracing::debug!(%error, "start a pooled monitor"),
            }
        }
    }

    /// A waiting monitor, told to monitor the container in `dir`; `None` when none is left (or
    /// the one taken is gone: it is reaped and the next one tried).
    pub(crate) async fn hand(&self, dir: &Path) -> Option<Child> {
        loop {
            let mut child = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            let line = format!("{}\n", dir.display());
            let Some(mut stdin) = child.stdin.take() else {
                continue;
            };
            if stdin.write_all(line.as_bytes()).await.is_ok() {
                return Some(child);
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}
