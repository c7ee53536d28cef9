//! `pods/exec` over WebSocket, the channel protocol kubectl 1.30+ speaks first
//! (`v5.channel.k8s.io`, also `v4`): binary messages whose first byte is the stream (0 stdin,
//! 1 stdout, 2 stderr, 3 error/status, 4 resize, 255 close); the exit reaches kubectl as a
//! `Status` on stream 3 (shared/kubectl-wire.md §6). The process is started by the node's
//! `__exec` helper inside the container; SPDY (kubectl before 1.30) is in `exec_spdy.rs`. Not
//! yet: TTYs (`-t` runs without a terminal).

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

pub async fn exec(
    state: &ApiState,
    target: &Target,
    name: &str,
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
        return Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod; current phase is {phase}"
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
    if opts.command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let cmd = state
        .node
        .exec_command(uid, name, &container, &opts.command)?;
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

async fn pump(mut socket: WebSocket, cmd: std::process::Command, opts: ExecOptions) {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(if opts.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(if opts.stdout {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stderr(if opts.stderr || opts.tty {
        Stdio::piped()
    } else {
        Stdio::null()
    })
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
    let mut readers = Vec::new();
    for (stream, pipe) in [
        (
            1u8,
            child
                .stdout
                .take()
                .map(Box::new)
                .map(|b| b as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
        (
            2u8,
            child
                .stderr
                .take()
                .map(|b| Box::new(b) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let tx = out_tx.clone();
        // With a TTY requested, stderr goes to stdout as a terminal would merge them.
        let stream = if opts.tty { 1 } else { stream };
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match pipe.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(frame(stream, &buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }));
    }
    drop(out_tx);
    let mut stdin = child.stdin.take();
    let mut outputs_open = true;
    loop {
        tokio::select! {
            out = out_rx.recv(), if outputs_open => match out {
                Some(m) => if socket.send(m).await.is_err() { break },
                None => outputs_open = false,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(0) => {
                        if let Some(s) = stdin.as_mut() {
                            if s.write_all(&data[1..]).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    Some(255) if data.get(1) == Some(&0) => stdin = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
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
    fn statuses() {
        assert_eq!(exit_status(Some(0))["status"], "Success");
        let s = exit_status(Some(3));
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
