//! `pods/exec` over SPDY/3.1: what kubectl 1.27-1.29 speak, and later versions when the
//! WebSocket is refused (shared/kubectl-wire.md §6). The client opens one stream per channel,
//! named by its `streamtype` header (`error`, then `stdin`, `stdout`, `stderr`, or `resize` with
//! a TTY); once all the query asked for are there, the command runs. The outcome goes on the
//! error stream as the kubelet's remotecommand server writes it
//! (<https://github.com/kubernetes/kubernetes/blob/master/staging/src/k8s.io/kubelet/pkg/cri/streaming/remotecommand/httpstream.go>):
//! `v4.channel.k8s.io` a `Status` (`Success`, or `NonZeroExitCode` carrying the code, which
//! kubectl exits with); `v3` and older only a failure's message as text. `v5` is WebSocket-only.
//! With a TTY, keystrokes and the `resize` stream's sizes go to the helper as frames (see
//! `exec.rs`).

use super::error::ApiError;
use super::exec::{exit_status, take_sizes, tty_frame, ExecOptions, TerminalSize, TTY_INPUT};
use super::spdy::{self, Session, Stream, StreamReader, StreamWriter, RST_PROTOCOL_ERROR};
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::debug;

/// In the kubelet's order of preference; the client's order decides among them.
const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// How long the client may take to open its streams (the kubelet's `streamCreationTimeout`).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client gets to close the connection after the status.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// The remotecommand protocol version: what the error stream carries, whether `resize` exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Version {
    V1,
    V2,
    V3,
    V4,
}

impl Version {
    fn of(protocol: &str) -> Version {
        match protocol {
            "v4.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            "v2.channel.k8s.io" => Version::V2,
            _ => Version::V1,
        }
    }
}

/// Answers an `Upgrade: SPDY/3.1` exec request; the command `cmd` starts once the streams are
/// open.
pub fn exec(
    req: Request,
    cmd: std::process::Command,
    opts: ExecOptions,
) -> Result<Response, ApiError> {
    if !spdy::is_upgrade(&req) {
        return Err(ApiError::bad_request(
            "exec needs a WebSocket (v5.channel.k8s.io) or SPDY/3.1 upgrade",
        ));
    }
    spdy::upgrade(req, PROTOCOLS, move |session, protocol| {
        run(session, Version::of(protocol), cmd, opts)
    })
}

/// The streams of one exec, by type.
#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn slot(&mut self, kind: &str) -> Option<&mut Option<Stream>> {
        match kind {
            "error" => Some(&mut self.error),
            "stdin" => Some(&mut self.stdin),
            "stdout" => Some(&mut self.stdout),
            "stderr" => Some(&mut self.stderr),
            "resize" => Some(&mut self.resize),
            _ => None,
        }
    }

    /// Whether every stream the query asks for is open (client-go skips `stderr` with a TTY,
    /// and has `resize` only from v3 on).
    fn complete(&self, opts: &ExecOptions, version: Version) -> bool {
        self.error.is_some()
            && (!opts.stdin || self.stdin.is_some())
            && (!opts.stdout || self.stdout.is_some())
            && (!opts.stderr || opts.tty || self.stderr.is_some())
            && (!opts.tty || version < Version::V3 || self.resize.is_some())
    }
}

async fn collect(session: &mut Session, opts: &ExecOptions, version: Version) -> Option<Streams> {
    let mut streams = Streams::default();
    while !streams.complete(opts, version) {
        let stream = session.accept().await?;
        let kind = stream.headers.get("streamtype").unwrap_or("").to_string();
        match streams.slot(&kind) {
            Some(slot) if slot.is_none() => *slot = Some(stream),
            _ => {
                debug!(kind, "unexpected exec stream");
                let _ = stream.writer.reset(RST_PROTOCOL_ERROR).await;
            }
        }
    }
    Some(streams)
}

async fn run(
    mut session: Session,
    version: Version,
    cmd: std::process::Command,
    opts: ExecOptions,
) {
    let streams = tokio::time::timeout(
        STREAM_CREATION_TIMEOUT,
        collect(&mut session, &opts, version),
    )
    .await;
    let Ok(Some(streams)) = streams else {
        debug!("exec client did not open its streams");
        return;
    };
    let Some(error) = streams.error else { return };
    let mut gone = error.writer.clone();
    let io = Io {
        stdin: streams.stdin.map(|s| s.reader),
        stdout: streams.stdout.map(|s| s.writer),
        stderr: streams.stderr.map(|s| s.writer),
        resize: streams.resize.map(|s| s.reader),
    };
    // The client leaving (or resetting the error stream) drops the command, which ends it
    // (`EndOnDrop`).
    let status = tokio::select! {
        status = execute(cmd, &opts, io) => status,
        () = gone.closed() => return,
    };
    if let Some(text) = status_text(version, &status) {
        let _ = error.writer.write(text.into()).await;
    }
    let _ = error.writer.finish().await;
    session.finish(CLOSE_GRACE).await;
}

/// What goes on the error stream at the end, if anything.
fn status_text(version: Version, status: &Value) -> Option<String> {
    if version >= Version::V4 {
        return Some(status.to_string());
    }
    if status["status"] == "Success" {
        return None;
    }
    Some(status["message"].as_str().unwrap_or("").to_string())
}

struct Io {
    stdin: Option<StreamReader>,
    stdout: Option<StreamWriter>,
    stderr: Option<StreamWriter>,
    resize: Option<StreamReader>,
}

/// Runs the command with its stdio on the streams; returns the Status for the error stream.
async fn execute(cmd: std::process::Command, opts: &ExecOptions, io: Io) -> Value {
    // With a TTY asked for, stderr goes to stdout as a terminal would merge them.
    let err_to = if opts.tty {
        io.stdout.clone()
    } else {
        io.stderr.clone()
    };
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let mut command = tokio::process::Command::from(cmd);
    // With a TTY the helper's stdin also carries the window sizes.
    command
        .stdin(piped(io.stdin.is_some() || opts.tty))
        .stdout(piped(io.stdout.is_some()))
        .stderr(piped(err_to.is_some()))
        .kill_on_drop(false);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return json!({"metadata": {}, "status": "Failure", "message": format!("exec: {e}"), "reason": "InternalError"})
        }
    };
    let mut guard = super::exec::EndOnDrop(child.id());
    let pipe = child.stdin.take();
    let tty = opts.tty;
    let (stdin, resize) = (io.stdin, io.resize);
    let input = async move {
        if tty {
            feed_terminal(stdin, resize, pipe).await;
        } else {
            tokio::join!(feed_stdin(stdin, pipe), drain(resize));
        }
    };
    let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
    let main = async {
        tokio::join!(copy(out_pipe, io.stdout.clone()), copy(err_pipe, err_to));
        for writer in [io.stdout, io.stderr].into_iter().flatten() {
            let _ = writer.finish().await;
        }
        exit_status(child.wait().await.ok().and_then(|s| s.code()))
    };
    // stdin and resize are read for as long as the command runs, whether or not they end.
    let background = async {
        input.await;
        std::future::pending::<()>().await
    };
    let status = tokio::select! {
        status = main => status,
        () = background => json!({}),
    };
    guard.disarm();
    status
}

/// Client stdin into the command until the client half-closes it; then the pipe closes. What
/// arrives after the command stopped reading is discarded, so other streams keep flowing.
async fn feed_stdin(from: Option<StreamReader>, pipe: Option<tokio::process::ChildStdin>) {
    let Some(mut from) = from else { return };
    let mut pipe = pipe;
    while let Some(chunk) = from.recv().await {
        if let Some(p) = pipe.as_mut() {
            if p.write_all(&chunk).await.is_err() {
                pipe = None;
            }
        }
    }
}

/// Keystrokes and terminal sizes (`{"Width":W,"Height":H}`, one JSON object after the other)
/// into the helper as frames, until both streams end; the pipe stays open meanwhile.
async fn feed_terminal(
    mut stdin: Option<StreamReader>,
    mut resize: Option<StreamReader>,
    mut pipe: Option<tokio::process::ChildStdin>,
) {
    let mut sizes = Vec::new();
    while stdin.is_some() || resize.is_some() {
        let bytes = tokio::select! {
            chunk = recv(&mut stdin) => match chunk {
                Some(chunk) => tty_frame(TTY_INPUT, &chunk),
                None => { stdin = None; continue }
            },
            chunk = recv(&mut resize) => match chunk {
                Some(chunk) => {
                    sizes.extend_from_slice(&chunk);
                    take_sizes(&mut sizes).iter().flat_map(TerminalSize::frame).collect()
                }
                None => { resize = None; continue }
            },
        };
        if let Some(p) = pipe.as_mut() {
            if p.write_all(&bytes).await.is_err() {
                pipe = None;
            }
        }
    }
}

/// The next chunk of a stream; never, for a stream that is not there.
async fn recv(from: &mut Option<StreamReader>) -> Option<Bytes> {
    match from {
        Some(from) => from.recv().await,
        None => std::future::pending().await,
    }
}

/// Terminal sizes without a terminal: read and dropped.
async fn drain(from: Option<StreamReader>) {
    if let Some(mut from) = from {
        while from.recv().await.is_some() {}
    }
}

/// A command's output pipe onto a stream, read to its end even if the client stops listening.
async fn copy(pipe: Option<impl AsyncRead + Unpin>, to: Option<StreamWriter>) {
    let Some(mut pipe) = pipe else { return };
    let mut to = to;
    let mut buf = vec![0u8; 32 * 1024];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        if let Some(w) = &to {
            if w.write(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                to = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_write_what_their_clients_read() {
        let ok = exit_status(Some(0));
        let three = exit_status(Some(3));
        assert_eq!(
            status_text(Version::V4, &ok).as_deref(),
            Some(r#"{"metadata":{},"status":"Success"}"#)
        );
        assert!(status_text(Version::V4, &three).is_some_and(|t| t.contains("NonZeroExitCode")));
        assert_eq!(status_text(Version::V3, &ok), None);
        assert!(status_text(Version::V2, &three).is_some_and(|t| t.contains("exit code 3")));
    }

    #[test]
    fn streams_needed() {
        let opts = ExecOptions {
            stdout: true,
            stderr: true,
            tty: true,
            ..Default::default()
        };
        let s = Streams::default();
        assert!(!s.complete(&opts, Version::V4));
        assert_eq!(Version::of("v4.channel.k8s.io"), Version::V4);
        assert_eq!(Version::of("channel.k8s.io"), Version::V1);
    }
}
