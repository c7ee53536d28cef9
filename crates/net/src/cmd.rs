//! Running iproute2's `ip` (only to create the bridge) and nftables' `nft`: blocking, so only from
//! `spawn_blocking` or at shutdown. Batches go on stdin (`ip -batch -`, `nft -f -`), so one
//! process does one whole step and stops at the first failing line.

use crate::error::NetError;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `program args…` with `stdin`; its stdout when it exits 0.
pub(crate) fn run(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NetError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetError::Spawn { program, source })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the command's own error below.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| NetError::Spawn { program, source })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(NetError::Command {
        command: format!("{program} {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// `ip -batch -` with `lines`.
pub(crate) fn ip_batch(lines: &[String]) -> Result<(), NetError> {
    run("ip", &["-batch", "-"], Some(&batch(lines))).map(drop)
}

fn batch(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Whether a failed command only said the object is not there.
pub(crate) fn is_not_found(e: &NetError) -> bool {
    matches!(e, NetError::Command { stderr, .. }
        if stderr.contains("Cannot find device") || stderr.contains("No such file or directory"))
}
