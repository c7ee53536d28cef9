//! The Python `kubernetes` client for the tests that drive peapod with it: in a venv in the
//! test's temporary directory (`python3 -m venv`, then `pip install kubernetes`; pip's own cache
//! makes later runs quick), or `PEAPOD_TEST_PYTHON=/path/to/python`, an interpreter that already
//! has it (no pip at all).

use crate::command::run_command;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const PIP_TIMEOUT: Duration = Duration::from_secs(600);

/// A Python interpreter that can `import kubernetes`.
pub fn python_with_client(dir: &Path) -> PathBuf {
    if let Some(python) = std::env::var_os("PEAPOD_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = dir.join("venv");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "venv"]).arg(&venv);
    let what = format!("{cmd:?}");
    let out = run_command(cmd, what, PIP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "python3 -m venv failed\n{out}");
    let python = venv.join("bin/python");
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "kubernetes",
    ]);
    let what = format!("{cmd:?}");
    let out = run_command(cmd, what, PIP_TIMEOUT).unwrap_or_else(|e| panic!("pip install: {e}"));
    assert!(out.status.success(), "pip install kubernetes failed\n{out}");
    python
}
