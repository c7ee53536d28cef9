//! Container logs in the CRI format the kubelet reads:
//! `<RFC3339Nano> <stdout|stderr> <F|P> <text>` — `P` marks a partial line that continues in
//! the next entry (<https://github.com/kubernetes/design-proposals-archive/blob/main/node/kubelet-cri-logging.md>).

use std::io::Write;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Longest line kept in one entry; longer lines are split into `P` entries like containerd's.
pub const MAX_LINE: usize = 16 * 1024;

/// Splits buffered output into complete entries, leaving an unfinished tail in `pending`.
/// With `flush`, the tail is emitted as well (the stream ended).
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

/// One log entry: its text (without newline) and whether it ends a line.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub text: Vec<u8>,
    pub full: bool,
}

impl LineSplitter {
    pub fn push(&mut self, data: &[u8]) -> Vec<Entry> {
        self.pending.extend_from_slice(data);
        let mut out = Vec::new();
        // Entries are cut at `start`, and the consumed bytes dropped once at the end: draining
        // line by line would move the rest of the buffer for every line.
        let mut start = 0;
        loop {
            let rest = &self.pending[start..];
            match rest.iter().position(|b| *b == b'\n') {
                Some(pos) if pos <= MAX_LINE => {
                    out.push(Entry {
                        text: rest[..pos].to_vec(),
                        full: true,
                    });
                    start += pos + 1;
                }
                _ if rest.len() > MAX_LINE => {
                    out.push(Entry {
                        text: rest[..MAX_LINE].to_vec(),
                        full: false,
                    });
                    start += MAX_LINE;
                }
                _ => break,
            }
        }
        self.pending.drain(..start);
        out
    }

    pub fn flush(&mut self) -> Option<Entry> {
        if self.pending.is_empty() {
            return None;
        }
        Some(Entry {
            text: std::mem::take(&mut self.pending),
            full: true,
        })
    }
}

/// Formats one entry as a CRI log line, newline included.
pub fn format_entry(timestamp: &str, stream: Stream, entry: &Entry) -> Vec<u8> {
    let mut line = Vec::with_capacity(entry.text.len() + 48);
    let tag = if entry.full { "F" } else { "P" };
    let _ = write!(line, "{timestamp} {} {tag} ", stream.as_str());
    line.extend_from_slice(&entry.text);
    line.push(b'\n');
    line
}

/// Now, as RFC 3339 with nanoseconds in UTC, as the kubelet writes it.
pub fn now_rfc3339_nano() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

/// A parsed CRI log line.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedLine<'a> {
    pub timestamp: &'a str,
    pub stream: &'a str,
    pub full: bool,
    pub text: &'a str,
}

/// Parses one CRI log line (without its newline); `None` for a malformed line.
pub fn parse_line(line: &str) -> Option<ParsedLine<'_>> {
    let mut parts = line.splitn(4, ' ');
    let timestamp = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    Some(ParsedLine {
        timestamp,
        stream,
        full: tag == "F",
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_keeps_the_tail() {
        let mut s = LineSplitter::default();
        let out = s.push(b"one\ntw");
        assert_eq!(
            out,
            vec![Entry {
                text: b"one".to_vec(),
                full: true
            }]
        );
        let out = s.push(b"o\n\nthree");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].text, b"two");
        assert_eq!(out[1].text, b"");
        assert_eq!(
            s.flush(),
            Some(Entry {
                text: b"three".to_vec(),
                full: true
            })
        );
        assert_eq!(s.flush(), None);
    }

    #[test]
    fn long_lines_become_partial_entries() {
        let mut s = LineSplitter::default();
        let mut data = vec![b'x'; MAX_LINE + 10];
        data.push(b'\n');
        let out = s.push(&data);
        assert_eq!(out.len(), 2);
        assert!(!out[0].full);
        assert_eq!(out[0].text.len(), MAX_LINE);
        assert!(out[1].full);
        assert_eq!(out[1].text.len(), 10);
    }

    #[test]
    fn formats_and_parses_round_trip() {
        let e = Entry {
            text: b"hello world".to_vec(),
            full: true,
        };
        let line = format_entry("2026-01-01T00:00:00.000000001Z", Stream::Stderr, &e);
        let text = String::from_utf8(line).expect("utf8");
        assert_eq!(
            text,
            "2026-01-01T00:00:00.000000001Z stderr F hello world\n"
        );
        let parsed = parse_line(text.trim_end_matches('\n')).expect("parses");
        assert_eq!(parsed.stream, "stderr");
        assert_eq!(parsed.text, "hello world");
        assert!(parsed.full);
    }
}

/// The kubelet's defaults: `containerLogMaxSize` 10Mi, `containerLogMaxFiles` 5
/// (<https://kubernetes.io/docs/concepts/cluster-administration/logging/#log-rotation>).
pub const MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const MAX_FILES: usize = 5;

/// How big a container's log may grow: `max_size` bytes per file, `max_files` files in all
/// (the current one included), as the kubelet's `containerLogMaxSize`/`containerLogMaxFiles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLimits {
    pub max_size: u64,
    pub max_files: usize,
}

impl Default for LogLimits {
    fn default() -> LogLimits {
        LogLimits {
            max_size: MAX_SIZE,
            max_files: MAX_FILES,
        }
    }
}

/// A container's log file, rotated by size: the full file is renamed to
/// `<name>.<timestamp>` and a fresh one started; at most `max_files` files are kept in all.
/// Write failures (a full disk) are counted, never fatal: the container keeps running.
#[derive(Debug)]
pub struct RotatingLog {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    written: u64,
    max_size: u64,
    max_files: usize,
    /// Lines that could not be written.
    pub dropped: u64,
}

impl RotatingLog {
    pub fn open(
        path: &std::path::Path,
        max_size: u64,
        max_files: usize,
    ) -> std::io::Result<RotatingLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file: Some(file),
            written,
            max_size,
            max_files: max_files.max(1),
            dropped: 0,
        })
    }

    /// Appends one formatted line, rotating first when it would overflow the file.
    pub fn write_line(&mut self, line: &[u8]) {
        self.write_lines(std::iter::once(line));
    }

    /// Appends formatted lines with as few writes as rotation allows (one per file they land
    /// in): a line-per-write(2) log path costs a container most of its output rate.
    pub fn write_lines<'a>(&mut self, lines: impl IntoIterator<Item = &'a [u8]>) {
        let mut batch: Vec<u8> = Vec::new();
        let mut count = 0u64;
        for line in lines {
            let size = self.written + batch.len() as u64;
            if size > 0 && size + line.len() as u64 > self.max_size {
                self.append(&batch, count);
                batch.clear();
                count = 0;
                self.rotate();
            }
            batch.extend_from_slice(line);
            count += 1;
        }
        self.append(&batch, count);
    }

    /// Writes `count` lines already joined in `bytes`; counts them as dropped if that fails.
    fn append(&mut self, bytes: &[u8], count: u64) {
        if count == 0 {
            return;
        }
        let ok = match self.file.as_mut() {
            Some(f) => f.write_all(bytes).is_ok(),
            None => false,
        };
        if ok {
            self.written += bytes.len() as u64;
        } else {
            self.dropped += count;
            if self.file.is_none() {
                self.reopen();
            }
        }
    }

    fn reopen(&mut self) {
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.written = self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
    }

    /// No fsync here: a rename keeps every written line for readers and across a crash of
    /// the monitor; syncing each full file stalled the container's output for the time of a
    /// disk flush per rotation. The log is synced once the container exited.
    fn rotate(&mut self) {
        self.file = None;
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S%.6f").to_string();
        let mut rotated = self.path.as_os_str().to_os_string();
        rotated.push(format!(".{stamp}"));
        let _ = std::fs::rename(&self.path, &rotated);
        let old = rotated_files(&self.path);
        let excess = (old.len() + 1).saturating_sub(self.max_files);
        for f in old.iter().take(excess) {
            let _ = std::fs::remove_file(f);
        }
        self.reopen();
    }

    pub fn sync(&mut self) {
        if let Some(f) = self.file.as_mut() {
            let _ = f.sync_all();
        }
    }
}

/// The rotated files of a log, oldest first.
pub fn rotated_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod rotation_tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut log = RotatingLog::open(&path, 100, 3).expect("open");
        for i in 0..40 {
            log.write_line(format!("2026-01-01T00:00:00Z stdout F line {i:02}\n").as_bytes());
        }
        log.sync();
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let mut all = String::new();
        for f in rotated.iter().chain(std::iter::once(&path)) {
            all.push_str(&std::fs::read_to_string(f).expect("read"));
        }
        assert!(all.ends_with("line 39\n"));
        assert!(std::fs::metadata(&path).expect("meta").len() <= 100);
        assert_eq!(log.dropped, 0);
    }
}
