//! Prefixing a program's output with its name, line by line (`web | GET /`), the way
//! docker-compose and foreman interleave several programs on one terminal.
//!
//! Bytes arrive in arbitrary chunks; only whole lines are written, so lines of two programs
//! never mix. A line longer than [`MAX_LINE`] is cut, so one program cannot make init hold an
//! unbounded buffer (the kubelet's CRI logs cut long lines the same way).

/// The longest line written in one piece; longer ones are split.
pub const MAX_LINE: usize = 16 * 1024;

/// Turns one output stream's chunks into prefixed lines.
#[derive(Debug)]
pub struct Prefixer {
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl Prefixer {
    pub fn new(name: &str) -> Self {
        Prefixer {
            prefix: format!("{name} | ").into_bytes(),
            partial: Vec::new(),
        }
    }

    /// Takes a chunk and returns the lines it completes, each prefixed and ending in `\n`.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..pos]);
            self.emit(&mut out);
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        while self.partial.len() >= MAX_LINE {
            let tail = self.partial.split_off(MAX_LINE);
            self.emit(&mut out);
            self.partial = tail;
        }
        out
    }

    /// The unfinished last line, if any, terminated with `\n` (called at end of stream).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            self.emit(&mut out);
        }
        out
    }

    fn emit(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        out.append(&mut self.partial);
        out.push(b'\n');
    }
}
