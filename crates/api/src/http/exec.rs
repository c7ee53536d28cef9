//! `pods/exec` over WebSocket, the channel protocol kubectl 1.30+ speaks first
//! (`v5.channel.k8s.io`, also `v4`): binary messages whose first byte is the stream (0 stdin,
//! 1 stdout, 2 stderr, 3 error/status, 4 resize, 255 close); the exit reaches kubectl as a
//! `Status` on stream 3 (shared/kubectl-wire.md §6). The process is started by the node's
//! `__exec` helper inside the container; SPDY (kubectl before 1.30) is in `exec_spdy.rs`.
//!
//! `pods/attach` is served the same way: its command is the node's `__attach` helper, which
//! relays to the container's monitor; it ends (`Success`) when the container does.
//!
//! With `tty=true` (`kubectl exec -t`) the process gets a terminal made inside the container;
//! there is no stderr stream (the terminal merges it), keystrokes arrive raw on stream 0 and
//! window sizes as `{"Width":W,"Height":H}` on stream 4. Both go to the helper's stdin as
//! [`tty_frame`]s.

use super::error::ApiError;
use super::objects::Target;
use super::ApiState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use serde_json::json;
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// The exec options of the query (`command` repeats, one argv word each).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub command: Vec<String>,
    pub container: Option<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

pub fn parse_query(query: &str) -> ExecOptions {
    let mut o = ExecOptions::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = super::percent_decode(v);
        let flag = v == "true" || v == "1";
        match k {
            "command" => o.command.push(v),
            "container" => o.container = Some(v),
            "stdin" => o.stdin = flag,
            "stdout" => o.stdout = flag,
            "stderr" => o.stderr = flag,
            "tty" => o.tty = flag,
            _ => {}
        }
    }
    o
}

/// `pods/exec` (a new process) or `pods/attach` (the container's own stdio, served by its
/// monitor): the same streams either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Exec,
    Attach,
}

pub async fn exec(
    state: &ApiState,
    target: &Target,
    name: &str,
    verb: Verb,
    req: Request,
) -> Result<Response, ApiError> {
    let opts = parse_query(req.uri().query().unwrap_or(""));
    let key = crate::store::ObjectKey {
        resource: "pods".into(),
        namespace: target.namespace.clone(),
        name: name.to_string(),
    };
    let pod = state.store.get(&key)?.ok_or_else(|| ApiError::NotFound {
        kind: "pods".into(),
        name: name.to_string(),
    })?;
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if phase == "Succeeded" || phase == "Failed" {
        let what = match verb {
            Verb::Exec => "exec into",
            Verb::Attach => "attach to",
        };
        return Err(ApiError::bad_request(format!(
            "cannot {what} a container in a completed pod; current phase is {phase}"
        )));
    }
    let names: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match &opts.container {
        Some(c) => c.clone(),
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )))
        }
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let cmd = match verb {
        Verb::Exec if opts.command.is_empty() => {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ))
        }
        Verb::Exec => state.node.exec_command(uid, name, &container, &opts)?,
        Verb::Attach => state.node.attach_command(uid, name, &container, &opts)?,
    };
    let (mut parts, body) = req.into_parts();
    let Ok(ws) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else {
        return super::exec_spdy::exec(Request::from_parts(parts, body), cmd, opts);
    };
    Ok(ws
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| pump(socket, cmd, opts)))
}

/// Asks the `__exec` helper to end its process when it is dropped before it finished (the
/// client went away): SIGTERM to the helper, which SIGKILLs the process in the container. A
/// plain kill of the helper would leave that process running (SIGKILL cannot be forwarded).
pub struct EndOnDrop(pub Option<u32>);

impl EndOnDrop {
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Kind of a [`tty_frame`] carrying keystrokes.
pub const TTY_INPUT: u8 = 0;
/// Kind of a [`tty_frame`] carrying a window size: columns, then rows, big-endian u16 each.
pub const TTY_RESIZE: u8 = 1;

/// One frame of a terminal's input as the node's exec helper reads it on stdin
/// (peapod-runtime `tty.rs` decodes them): the kind byte, the payload's length as a big-endian
/// u32, the payload.
pub fn tty_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A terminal size as kubectl sends it (client-go `remotecommand.TerminalSize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width", default)]
    pub width: u16,
    #[serde(rename = "Height", default)]
    pub height: u16,
}

impl TerminalSize {
    pub fn frame(&self) -> Vec<u8> {
        let mut p = self.width.to_be_bytes().to_vec();
        p.extend_from_slice(&self.height.to_be_bytes());
        tty_frame(TTY_RESIZE, &p)
    }
}

/// The sizes in `buf`, a stream of JSON objects (the SPDY resize stream; one per WebSocket
/// message on stream 4); what is left is an incomplete object. Unreadable input is dropped.
pub fn take_sizes(buf: &mut Vec<u8>) -> Vec<TerminalSize> {
    let mut sizes = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<TerminalSize>();
    let consumed = loop {
        match stream.next() {
            Some(Ok(size)) => sizes.push(size),
            Some(Err(e)) if e.is_eof() => break stream.byte_offset(),
            Some(Err(_)) => break buf.len(),
            None => break stream.byte_offset(),
        }
    };
    buf.drain(..consumed);
    sizes
}

/// A close frame with code 1000: kubectl reports a close without a status as an error.
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

fn frame(stream: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(stream);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// The Status kubectl turns into its exit code.
pub fn exit_status(code: Option<i32>) -> serde_json::Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(c) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command [{c}], exit code {c}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]}
        }),
        None => {
            json!({"metadata": {}, "status": "Failure", "message": "the command was killed", "reason": "InternalError"})
        }
    }
}

/// A client message, as the pump cares about it.
enum Incoming {
    Data(bytes::Bytes),
    Close,
    Other,
}

fn into_bytes(message: Message) -> Incoming {
    match message {
        Message::Binary(data) => Incoming::Data(data),
        Message::Text(text) => Incoming::Data(bytes::Bytes::copy_from_slice(text.as_bytes())),
        Message::Close(_) => Incoming::Close,
        _ => Incoming::Other,
    }
}

async fn pump(mut socket: WebSocket, cmd: std::process::Command, opts: ExecOptions) {
    let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let mut cmd = tokio::process::Command::from(cmd);
    // With a TTY the helper's stdin also carries the window sizes, and stderr (the helper's own
    // messages; the terminal merges the process's) goes to stdout.
    cmd.stdin(piped(opts.stdin || opts.tty))
        .stdout(piped(opts.stdout))
        .stderr(piped(opts.stderr || opts.tty))
        .kill_on_drop(false);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "message": format!("exec: {e}"), "reason": "InternalError"});
            let _ = socket.send(frame(3, status.to_string().as_bytes())).await;
            let _ = socket.send(normal_close()).await;
            return;
        }
    };
    let mut guard = EndOnDrop(child.id());
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    type Pipe = Box<dyn tokio::io::AsyncRead + Unpin + Send>;
    let stdout = child.stdout.take().map(|p| Box::new(p) as Pipe);
    let stderr = child.stderr.take().map(|p| Box::new(p) as Pipe);
    for (stream, pipe) in [(1u8, stdout), (2u8, stderr)] {
        let Some(mut pipe) = pipe else { continue };
        let tx = out_tx.clone();
        let stream = if opts.tty { 1 } else { stream };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                if tx.send(frame(stream, &buf[..n])).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(out_tx);
    // stdin is written by a task of its own, so a process that does not read its stdin holds
    // up the client's input (no more is read from the socket meanwhile) but never its output.
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<Vec<u8>>(16);
    match child.stdin.take() {
        Some(mut pipe) => {
            tokio::spawn(async move {
                while let Some(bytes) = stdin_rx.recv().await {
                    if pipe.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                drop(pipe);
                while stdin_rx.recv().await.is_some() {}
            });
        }
        None => drop(stdin_rx),
    }
    let mut stdin = Some(stdin_tx);
    let mut held: Option<Vec<u8>> = None;
    let mut sizes = Vec::new();
    let mut outputs_open = true;
    loop {
        let room = stdin.clone();
        tokio::select! {
            out = out_rx.recv(), if outputs_open => match out {
                Some(m) => if socket.send(m).await.is_err() { break },
                None => outputs_open = false,
            },
            permit = async move { room?.reserve_owned().await.ok() }, if held.is_some() => {
                match (permit, held.take()) {
                    (Some(permit), Some(bytes)) => {
                        permit.send(bytes);
                    }
                    _ => stdin = None,
                }
            }
            incoming = socket.recv(), if held.is_none() => match incoming.map(|m| m.map(into_bytes)) {
                // The Python client sends text messages for str data: the same framing.
                Some(Ok(Incoming::Data(data))) => {
                    let bytes = match (data.first(), opts.tty) {
                        (Some(0), false) => data[1..].to_vec(),
                        (Some(0), true) => tty_frame(TTY_INPUT, &data[1..]),
                        (Some(4), true) => {
                            sizes.extend_from_slice(&data[1..]);
                            take_sizes(&mut sizes).iter().flat_map(TerminalSize::frame).collect()
                        }
                        // The client closes stdin; with a TTY the pipe stays for the sizes.
                        (Some(255), false) if data.get(1) == Some(&0) => {
                            stdin = None;
                            continue;
                        }
                        _ => continue,
                    };
                    match stdin.as_ref().map(|tx| tx.try_send(bytes)) {
                        Some(Err(mpsc::error::TrySendError::Full(bytes))) => held = Some(bytes),
                        Some(Err(mpsc::error::TrySendError::Closed(_))) => stdin = None,
                        _ => {}
                    }
                }
                Some(Ok(Incoming::Close)) | None | Some(Err(_)) => return,
                Some(Ok(Incoming::Other)) => {}
            },
            status = child.wait(), if !outputs_open => {
                guard.disarm();
                let code = status.ok().and_then(|s| s.code());
                let _ = socket.send(frame(3, exit_status(code).to_string().as_bytes())).await;
                let _ = socket.send(normal_close()).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let o = parse_query("command=sh&command=-c&command=echo%20hi&container=echo&stdin=true&stdout=true&stderr=true");
        assert_eq!(o.command, vec!["sh", "-c", "echo hi"]);
        assert_eq!(o.container.as_deref(), Some("echo"));
        assert!(o.stdin && o.stdout && o.stderr && !o.tty);
    }

    #[test]
    fn terminal_sizes_from_a_stream() {
        let mut buf = br#"{"Width":100,"Height":40}
{"Width":80,"#
            .to_vec();
        assert_eq!(
            take_sizes(&mut buf),
            vec![TerminalSize {
                width: 100,
                height: 40
            }]
        );
        buf.extend_from_slice(br#""Height":24}"#);
        let sizes = take_sizes(&mut buf);
        assert_eq!(sizes.len(), 1);
        assert_eq!(sizes[0].frame(), vec![TTY_RESIZE, 0, 0, 0, 4, 0, 80, 0, 24]);
        assert!(buf.is_empty());
        let mut junk = b"not json".to_vec();
        assert!(take_sizes(&mut junk).is_empty() && junk.is_empty());
    }

    #[test]
    fn statuses() {
        assert_eq!(exit_status(Some(0))["status"], "Success");
        let s = exit_status(Some(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
