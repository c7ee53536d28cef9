//! `peapod-init`: the binary. Parses the command line, runs the mode it names and exits with
//! the code it returns; init's own failures are printed once, with their causes, on stderr.

use peapod_init::cli::{self, Invocation, USAGE};
use std::io::Write;

fn main() {
    let code = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Invocation::Help) => {
            let _ = std::io::stdout().write_all(USAGE.as_bytes());
            0
        }
        Ok(Invocation::Version) => {
            let version = concat!("peapod-init ", env!("CARGO_PKG_VERSION"), "\n");
            let _ = std::io::stdout().write_all(version.as_bytes());
            0
        }
        Ok(invocation) => match peapod_init::run(invocation) {
            Ok(code) => code,
            Err(e) => {
                report(&e);
                e.exit_code()
            }
        },
        Err(e) => {
            report(&e);
            eprint!("{USAGE}");
            2
        }
    };
    std::process::exit(code)
}

/// Prints an error and its chain of causes on one line.
fn report(error: &dyn std::error::Error) {
    let mut line = format!("peapod-init: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    eprintln!("{line}");
}
