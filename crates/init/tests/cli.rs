//! The command line: tini-style command, supervision options, and what is refused.

use peapod_init::cli::{parse, Invocation, UsageError};
use std::ffi::OsString;
use std::path::PathBuf;

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

#[test]
fn command_lines() {
    let single = |list: &[&str]| Ok(Invocation::Single { argv: args(list) });
    let supervise = |config: Option<&str>, runs: &[&str]| {
        Ok(Invocation::Supervise {
            config: config.map(PathBuf::from),
            runs: runs.iter().map(|s| s.to_string()).collect(),
        })
    };
    let table: Vec<(&[&str], Result<Invocation, UsageError>)> = vec![
        (
            &["--", "sh", "-c", "exit 3"],
            single(&["sh", "-c", "exit 3"]),
        ),
        (&["sh", "-c", "exit 3"], single(&["sh", "-c", "exit 3"])),
        // Options after the command belong to the command.
        (&["ls", "--config", "x"], single(&["ls", "--config", "x"])),
        (&["--", "--weird-name"], single(&["--weird-name"])),
        (&["--config", "c.yaml"], supervise(Some("c.yaml"), &[])),
        (&["--config=c.yaml"], supervise(Some("c.yaml"), &[])),
        (
            &["--run", "a=sleep 1", "--run=b=x=y"],
            supervise(None, &["a=sleep 1", "b=x=y"]),
        ),
        (
            &["--config", "c.yaml", "--run", "a=true"],
            supervise(Some("c.yaml"), &["a=true"]),
        ),
        (&["-h"], Ok(Invocation::Help)),
        (&["--version"], Ok(Invocation::Version)),
        (&[], Err(UsageError::Nothing)),
        (&["--"], Err(UsageError::Nothing)),
        (
            &["--config"],
            Err(UsageError::MissingValue {
                option: "--config".into(),
            }),
        ),
        (
            &["-x"],
            Err(UsageError::UnknownOption {
                option: "-x".into(),
            }),
        ),
        (&["--run", "a=true", "--", "sh"], Err(UsageError::Both)),
    ];
    for (input, want) in table {
        assert_eq!(parse(args(input)), want, "{input:?}");
    }
}
