//! Assertions on a daemon through kubectl, and one HTTP GET from the host: what the scenario
//! tests (volumes, scenarios) repeat.

use crate::{poll_until, Daemon, POD_TIMEOUT};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

impl Daemon {
    /// stdout of the newest kubectl with `args`, which must succeed (else the test fails with
    /// its output and the daemon's log).
    pub fn ok(&self, args: &[&str]) -> String {
        match self.kubectl(args) {
            Ok(out) if out.status.success() => out.stdout,
            Ok(out) => panic!(
                "kubectl {}: {}{}\n{}",
                args.join(" "),
                out.stdout,
                out.stderr,
                self.log()
            ),
            Err(e) => panic!("kubectl {}: {e}\n{}", args.join(" "), self.log()),
        }
    }

    /// Polls kubectl with `args` until it succeeds with stdout satisfying `want` (within
    /// [`POD_TIMEOUT`]); that stdout.
    pub fn ok_until(&self, args: &[&str], want: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        poll_until(Instant::now() + POD_TIMEOUT, || {
            let out = self.kubectl(args).ok()?;
            last = format!("{}{}", out.stdout, out.stderr);
            (out.status.success() && want(&out.stdout)).then(|| out.stdout.clone())
        })
        .unwrap_or_else(|| panic!("kubectl {}: last {last}\n{}", args.join(" "), self.log()))
    }
}

/// One `GET /` on 127.0.0.1:`port`: the body when the answer is 200.
pub fn http_get(port: u16) -> Option<String> {
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}
