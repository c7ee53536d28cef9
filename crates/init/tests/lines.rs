//! Prefixing output line by line, whatever the chunking.

use peapod_init::lines::{Prefixer, MAX_LINE};

#[test]
fn chunks_become_prefixed_lines() {
    // (chunks, output after each chunk, output at end of stream)
    let table: Vec<(&[&str], &[&str], &str)> = vec![
        (&["hello\n"], &["web | hello\n"], ""),
        (
            &["hel", "lo\nwor", "ld\n"],
            &["", "web | hello\n", "web | world\n"],
            "",
        ),
        (&["a\nb\nc"], &["web | a\nweb | b\n"], "web | c\n"),
        (&["\n"], &["web | \n"], ""),
        (&["no newline"], &[""], "web | no newline\n"),
        (&[""], &[""], ""),
    ];
    for (chunks, after_each, at_end) in table {
        let mut p = Prefixer::new("web");
        for (chunk, want) in chunks.iter().zip(after_each) {
            let got = p.push(chunk.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), *want, "{chunks:?}");
        }
        assert_eq!(String::from_utf8_lossy(&p.finish()), at_end, "{chunks:?}");
    }
}

#[test]
fn long_lines_are_cut() {
    let mut p = Prefixer::new("x");
    let long = vec![b'a'; MAX_LINE * 2 + 10];
    let out = p.push(&long);
    let lines: Vec<&[u8]> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l.len() == MAX_LINE + "x | ".len()));
    assert_eq!(p.finish().len(), "x | ".len() + 10 + 1);
}
