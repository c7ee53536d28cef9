//! A program driven on a pseudo-terminal, as a person at a terminal would (`kubectl exec -it`,
//! `kubectl attach -it`): a small Python driver (`terminal.py`, the standard `pty` module)
//! gives the program a terminal of a chosen size, types, resizes and waits for output by the
//! steps given, each under a deadline.

use crate::command::run_command;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const DRIVER: &str = include_str!("terminal.py");

/// One thing to do at the terminal.
pub enum Step<'a> {
    /// Wait until the output after the previous match matches this regular expression.
    Expect(&'a str),
    /// Type this.
    Send(&'a str),
    /// Change the terminal to (rows, columns); the program gets SIGWINCH.
    Resize(u16, u16),
    /// Type this, again every 2 s, until the output matches the expression.
    SendUntil(&'a str, &'a str),
    /// Send the program this signal.
    Signal(i32),
}

/// What came of a session.
#[derive(Debug)]
pub struct Session {
    /// Everything the terminal showed (with the terminal's `\r\n` line ends).
    pub output: String,
    /// The program's exit code, if it exited.
    pub code: Option<i32>,
    /// The step that did not happen, if one did not.
    pub failed: Option<String>,
}

/// Runs `program` (its arguments, environment and working directory) on a terminal of `rows`
/// x `cols` through `steps`, then waits for it to exit; at most `timeout` in all.
pub fn drive(
    program: &Command,
    rows: u16,
    cols: u16,
    steps: &[Step],
    timeout: Duration,
) -> Session {
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| match s {
            Step::Expect(re) => json!({"expect": re}),
            Step::Send(text) => json!({"send": text}),
            Step::Resize(r, c) => json!({"resize": [r, c]}),
            Step::SendUntil(text, re) => json!({"send_until": [text, re]}),
            Step::Signal(n) => json!({ "signal": n }),
        })
        .collect();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(DRIVER)
        .arg(rows.to_string())
        .arg(cols.to_string())
        .arg(Value::from(steps).to_string())
        .arg(program.get_program())
        .args(program.get_args());
    for (key, value) in program.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    if let Some(dir) = program.get_current_dir() {
        cmd.current_dir(dir);
    }
    let what = format!("terminal: {:?}", program);
    let out = run_command(cmd, what, timeout).unwrap_or_else(|e| panic!("{e}"));
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("terminal driver: {e}\n{out}"));
    Session {
        output: v["output"].as_str().unwrap_or("").to_string(),
        code: v["code"].as_i64().map(|c| c as i32),
        failed: v["failed"].as_str().map(str::to_string),
    }
}
