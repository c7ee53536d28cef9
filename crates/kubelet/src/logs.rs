//! Serving container logs to the API (`kubectl logs`): the CRI log files of a container's
//! current or previous instance, turned back into plain lines, with the kubelet's options
//! (tailLines, sinceSeconds, sinceTime, timestamps, limitBytes, follow).

use bytes::Bytes;
use peapod_api::http::error::ApiError;
use peapod_api::http::logs::{LogRequest, LogStream};
use peapod_api::http::NodeBackend;
use peapod_runtime::log::parse_line;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Which container instances are running, so a followed log knows when to end.
#[derive(Debug, Default, Clone)]
pub struct RunningInstances {
    inner: Arc<Mutex<HashMap<InstanceKey, (u32, PathBuf)>>>,
}

/// (pod uid, container name).
type InstanceKey = (String, String);

impl RunningInstances {
    pub fn started(&self, uid: &str, container: &str, restart: u32, dir: &Path) {
        if let Ok(mut m) = self.inner.lock() {
            m.insert(
                (uid.to_string(), container.to_string()),
                (restart, dir.to_path_buf()),
            );
        }
    }
    pub fn exited(&self, uid: &str, container: &str, restart: u32) {
        if let Ok(mut m) = self.inner.lock() {
            let key = (uid.to_string(), container.to_string());
            if m.get(&key).is_some_and(|(r, _)| *r == restart) {
                m.remove(&key);
            }
        }
    }
    fn running(&self, uid: &str, container: &str, restart: u32) -> bool {
        self.inner
            .lock()
            .map(|m| {
                m.get(&(uid.to_string(), container.to_string()))
                    .is_some_and(|(r, _)| *r == restart)
            })
            .unwrap_or(false)
    }

    /// The directory of the container's running instance.
    pub fn dir(&self, uid: &str, container: &str) -> Option<PathBuf> {
        self.inner
            .lock()
            .ok()?
            .get(&(uid.to_string(), container.to_string()))
            .map(|(_, d)| d.clone())
    }
}

/// The node's log backend.
#[derive(Debug, Clone)]
pub struct NodeLogs {
    pub pods_root: PathBuf,
    pub running: RunningInstances,
    /// The peapod binary, for the `__exec` helper.
    pub exe: PathBuf,
}

/// The instances' log files of a container, by restart number, oldest first.
fn instances(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")
                .and_then(|n| n.parse().ok())
                .map(|n| (n, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Formats CRI log text into what `kubectl logs` prints.
#[derive(Debug, Default)]
pub struct Formatter {
    pub timestamps: bool,
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    partial: String,
    partial_time: String,
}

impl Formatter {
    /// One CRI line in, zero or one output line out (partial lines are joined).
    pub fn line(&mut self, raw: &str) -> Option<String> {
        let entry = parse_line(raw)?;
        if self.partial.is_empty() {
            self.partial_time = entry.timestamp.to_string();
        }
        self.partial.push_str(entry.text);
        if !entry.full {
            return None;
        }
        let text = std::mem::take(&mut self.partial);
        if let Some(since) = self.since {
            let at = chrono::DateTime::parse_from_rfc3339(&self.partial_time).ok()?;
            if at < since {
                return None;
            }
        }
        Some(if self.timestamps {
            format!("{} {text}\n", self.partial_time)
        } else {
            format!("{text}\n")
        })
    }
}

impl NodeBackend for NodeLogs {
    fn dial(
        &self,
        uid: &str,
        port: u16,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<tokio::net::TcpStream>> {
        let netns = peapod_runtime::sandbox::SandboxDir::new(self.pods_root.join(uid))
            .sandbox_ref()
            .net;
        Box::pin(peapod_net::hostport::dial_in_netns(netns, port))
    }

    fn exec_command(
        &self,
        uid: &str,
        pod: &str,
        container: &str,
        exec: &peapod_api::http::exec::ExecOptions,
    ) -> Result<std::process::Command, ApiError> {
        let dir = self.running.dir(uid, container).ok_or_else(|| {
            ApiError::bad_request(format!("container {container} is not running in pod {pod}"))
        })?;
        let id = dir
            .file_name()
            .and_then(|n| peapod_runtime::ContainerId::parse(&n.to_string_lossy()))
            .ok_or_else(|| ApiError::internal("bad container directory"))?;
        let container_dir = peapod_runtime::container::ContainerDir { id, path: dir };
        let stdio = if exec.tty {
            peapod_runtime::exec::ExecStdio::Terminal
        } else {
            peapod_runtime::exec::ExecStdio::Inherited
        };
        Ok(peapod_runtime::exec::command_with(
            &self.exe,
            &container_dir,
            &exec.command,
            stdio,
        ))
    }

    fn attach_command(
        &self,
        uid: &str,
        pod: &str,
        container: &str,
        attach: &peapod_api::http::exec::ExecOptions,
    ) -> Result<std::process::Command, ApiError> {
        let dir = self.running.dir(uid, container).ok_or_else(|| {
            ApiError::bad_request(format!("container {container} is not running in pod {pod}"))
        })?;
        if !dir.join(peapod_runtime::attach::ATTACH_SOCKET).exists() {
            return Err(ApiError::bad_request(format!(
                "container {container} in pod {pod} cannot be attached to (its monitor predates attach)"
            )));
        }
        use peapod_runtime::attach::AttachInput;
        let input = match (attach.stdin, attach.tty) {
            (_, true) => AttachInput::Terminal,
            (true, false) => AttachInput::Raw,
            (false, false) => AttachInput::Nothing,
        };
        Ok(peapod_runtime::attach::command(&self.exe, &dir, input))
    }

    fn logs(&self, req: LogRequest) -> Result<LogStream, ApiError> {
        let dir = self
            .pods_root
            .join(&req.uid)
            .join("logs")
            .join(&req.container);
        let all = instances(&dir);
        let chosen = if req.previous {
            all.iter().rev().nth(1).cloned().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "previous terminated container {:?} in pod {:?} not found",
                    req.container, req.pod
                ))
            })?
        } else {
            all.last().cloned().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "container {:?} in pod {:?} is waiting to start: ContainerCreating",
                    req.container, req.pod
                ))
            })?
        };
        let since = match (&req.since_time, req.since_seconds) {
            (Some(t), _) => chrono::DateTime::parse_from_rfc3339(t).ok(),
            (None, Some(s)) => {
                Some((chrono::Utc::now() - chrono::Duration::seconds(s)).fixed_offset())
            }
            _ => None,
        };
        let mut formatter = Formatter {
            timestamps: req.timestamps,
            since,
            ..Default::default()
        };
        let (restart, path) = chosen;
        // The part written so far (rotated files first), with tailLines applied.
        let mut text = String::new();
        for rotated in peapod_runtime::log::rotated_files(&path) {
            text.push_str(&std::fs::read_to_string(rotated).unwrap_or_default());
        }
        let prior = text.len();
        text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        let consumed = text.rfind('\n').map_or(0, |i| i + 1);
        let mut lines: Vec<String> = text[..consumed]
            .lines()
            .filter_map(|l| formatter.line(l))
            .collect();
        if let Some(n) = req.tail_lines {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        let mut budget = req.limit_bytes.unwrap_or(usize::MAX);
        let head: String = take_budget(lines.concat(), &mut budget);
        let follow =
            req.follow && !req.previous && self.running.running(&req.uid, &req.container, restart);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        let running = self.running.clone();
        let (uid, container) = (req.uid.clone(), req.container.clone());
        tokio::spawn(async move {
            if !head.is_empty() && tx.send(Ok(Bytes::from(head))).await.is_err() {
                return;
            }
            if !follow || budget == 0 {
                return;
            }
            let Ok(mut file) = tokio::fs::File::open(&path).await else {
                return;
            };
            if file
                .seek(std::io::SeekFrom::Start(
                    consumed.saturating_sub(prior) as u64
                ))
                .await
                .is_err()
            {
                return;
            }
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = file.read(&mut buf).await.unwrap_or(0);
                if n > 0 {
                    pending.extend_from_slice(&buf[..n]);
                    let mut out = String::new();
                    while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=pos).collect();
                        if let Some(l) = formatter
                            .line(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref())
                        {
                            out.push_str(&l);
                        }
                    }
                    let out = take_budget(out, &mut budget);
                    if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                        return;
                    }
                    if budget == 0 {
                        return;
                    }
                    continue;
                }
                // Rotated under us: our descriptor is at the end of the renamed file, so go on
                // with the new one from its start.
                let ours = file.metadata().await.map(|m| m.ino()).ok();
                let now_at_path = std::fs::metadata(&path).map(|m| m.ino()).ok();
                if now_at_path.is_some() && ours != now_at_path {
                    match tokio::fs::File::open(&path).await {
                        Ok(f) => {
                            file = f;
                            continue;
                        }
                        Err(_) => return,
                    }
                }
                if !running.running(&uid, &container, restart) {
                    // One more read: the monitor syncs the log before it reports the exit.
                    if file.read(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Box::pin(peapod_api::http::watch::tokio_stream_from(rx)))
    }
}

fn take_budget(mut text: String, budget: &mut usize) -> String {
    if text.len() > *budget {
        let mut cut = *budget;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    *budget -= text.len();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_partial_lines_and_timestamps() {
        let mut f = Formatter {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(f.line("2026-01-01T00:00:00.1Z stdout P hel"), None);
        assert_eq!(
            f.line("2026-01-01T00:00:00.2Z stdout F lo").as_deref(),
            Some("2026-01-01T00:00:00.1Z hello\n")
        );
        let mut f = Formatter::default();
        assert_eq!(
            f.line("2026-01-01T00:00:00Z stderr F oops").as_deref(),
            Some("oops\n")
        );
        let mut f = Formatter {
            since: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:01Z").ok(),
            ..Default::default()
        };
        assert_eq!(f.line("2026-01-01T00:00:00Z stdout F old"), None);
        assert_eq!(
            f.line("2026-01-01T00:00:02Z stdout F new").as_deref(),
            Some("new\n")
        );
    }

    #[test]
    fn budgets_cut_on_char_boundaries() {
        let mut budget = 2;
        assert_eq!(take_budget("héllo".into(), &mut budget), "h");
        assert_eq!(budget, 1);
        let mut budget = 4;
        assert_eq!(take_budget("héllo".into(), &mut budget), "hél");
        assert_eq!(budget, 0);
    }
}
