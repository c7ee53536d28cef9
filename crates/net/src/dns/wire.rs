//! The DNS wire format, as much as an authoritative server for the cluster domain needs
//! (RFC 1035 section 4, SRV from RFC 2782): parse one question, write an answer. Names in
//! answers are written uncompressed; a UDP answer longer than 512 bytes is cut and marked
//! truncated (TC), so the client asks again over TCP.

use std::net::Ipv4Addr;

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;

/// The largest UDP answer without EDNS (RFC 1035 4.2.1).
pub const UDP_LIMIT: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
}

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    /// Lowercase, dot-separated, without the root's trailing dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Ptr(String),
    /// The name is an alias of this one (an ExternalName Service).
    Cname(String),
}

impl Rdata {
    pub fn rtype(&self) -> u16 {
        match self {
            Rdata::A(_) => TYPE_A,
            Rdata::Srv { .. } => TYPE_SRV,
            Rdata::Ptr(_) => TYPE_PTR,
            Rdata::Cname(_) => TYPE_CNAME,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub data: Rdata,
}

/// Why a message is not a query we can read: with the id when the header was there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub id: Option<u16>,
}

/// Reads the header and first question of a query.
pub fn parse_query(buf: &[u8]) -> Result<Query, Malformed> {
    if buf.len() < 12 {
        return Err(Malformed { id: None });
    }
    let id = u16::from_be_bytes([buf[0], buf[1]]);
    let bad = Malformed { id: Some(id) };
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    let qdcount = u16::from_be_bytes([buf[4], buf[5]]);
    if flags & 0x8000 != 0 || qdcount == 0 {
        return Err(bad);
    }
    let (name, end) = read_name(buf, 12).ok_or(bad.clone())?;
    let rest = buf.get(end..end + 4).ok_or(bad)?;
    Ok(Query {
        id,
        opcode: ((flags >> 11) & 0xf) as u8,
        recursion_desired: flags & 0x0100 != 0,
        name,
        qtype: u16::from_be_bytes([rest[0], rest[1]]),
        qclass: u16::from_be_bytes([rest[2], rest[3]]),
    })
}

/// A name at `pos` (following compression pointers); the name and the offset after it.
fn read_name(buf: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *buf.get(pos)? as usize;
        match len {
            0 => {
                let name = labels.join(".");
                return (name.len() <= 253).then(|| (name, end.unwrap_or(pos + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let target = ((l & 0x3f) << 8) | *buf.get(pos + 1)? as usize;
                end.get_or_insert(pos + 2);
                pos = target;
            }
            l if l <= 63 => {
                let label = buf.get(pos + 1..pos + 1 + l)?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                pos += 1 + l;
            }
            _ => return None,
        }
    }
    None
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let bytes = &label.as_bytes()[..label.len().min(63)];
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.push(0);
}

fn write_record(out: &mut Vec<u8>, r: &Record) {
    write_name(out, &r.name);
    out.extend_from_slice(&r.data.rtype().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&r.ttl.to_be_bytes());
    let mut data = Vec::new();
    match &r.data {
        Rdata::A(ip) => data.extend_from_slice(&ip.octets()),
        Rdata::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            for v in [priority, weight, port] {
                data.extend_from_slice(&v.to_be_bytes());
            }
            write_name(&mut data, target);
        }
        Rdata::Ptr(target) | Rdata::Cname(target) => write_name(&mut data, target),
    }
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(&data);
}

/// The answer to `q`: authoritative, no recursion available, the question echoed. `limit`
/// caps the size (UDP): records that do not fit are left out and TC is set.
pub fn response(q: &Query, rcode: Rcode, answers: &[Record], limit: Option<usize>) -> Vec<u8> {
    let mut body = Vec::new();
    write_name(&mut body, &q.name);
    body.extend_from_slice(&q.qtype.to_be_bytes());
    body.extend_from_slice(&q.qclass.to_be_bytes());
    let mut count: u16 = 0;
    let mut truncated = false;
    for r in answers {
        let mut rec = Vec::new();
        write_record(&mut rec, r);
        if limit.is_some_and(|l| 12 + body.len() + rec.len() > l) {
            truncated = true;
            break;
        }
        body.extend_from_slice(&rec);
        count += 1;
    }
    let mut flags: u16 = 0x8000 | (u16::from(q.opcode) << 11) | 0x0400 | rcode as u16;
    if q.recursion_desired {
        flags |= 0x0100;
    }
    if truncated {
        flags |= 0x0200;
    }
    let mut out = Vec::with_capacity(12 + body.len());
    for v in [q.id, flags, 1, count, 0, 0] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&body);
    out
}

/// The answer to a message that could not be read: FORMERR with no question.
pub fn format_error(id: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    for v in [id, 0x8000 | Rcode::FormErr as u16, 0, 0, 0, 0] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
pub(crate) fn query_bytes(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [id, 0x0100, 1, 0, 0, 0] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    write_name(&mut out, name);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_query_case_insensitively() {
        let q = parse_query(&query_bytes(7, "Web.Default.svc.cluster.local", TYPE_A)).expect("q");
        assert_eq!(q.id, 7);
        assert_eq!(q.name, "web.default.svc.cluster.local");
        assert_eq!(q.qtype, TYPE_A);
        assert!(q.recursion_desired);
        assert_eq!(parse_query(&[0, 1, 2]), Err(Malformed { id: None }));
        let mut reply = query_bytes(9, "x", TYPE_A);
        reply[2] |= 0x80;
        assert_eq!(parse_query(&reply), Err(Malformed { id: Some(9) }));
    }

    #[test]
    fn follows_compression_pointers() {
        // Question name at 12 is a pointer to a name placed after the question.
        let mut buf = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 18, 0, 1, 0, 1];
        buf.extend_from_slice(&[1, b'a', 1, b'b', 0]);
        let q = parse_query(&buf).expect("q");
        assert_eq!(q.name, "a.b");
        assert_eq!(q.qtype, TYPE_A);
    }

    #[test]
    fn writes_answers_and_truncates() {
        let q = parse_query(&query_bytes(1, "a.b", TYPE_A)).expect("q");
        let rec = Record {
            name: "a.b".into(),
            ttl: 5,
            data: Rdata::A(Ipv4Addr::new(10, 96, 0, 1)),
        };
        let out = response(&q, Rcode::NoError, std::slice::from_ref(&rec), None);
        assert_eq!(&out[..12], &[0, 1, 0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(&out[out.len() - 4..], &[10, 96, 0, 1]);
        let many = vec![rec; 40];
        let out = response(&q, Rcode::NoError, &many, Some(UDP_LIMIT));
        assert!(out.len() <= UDP_LIMIT);
        assert_eq!(out[2] & 0x02, 0x02, "TC set");
        let nx = response(&q, Rcode::NxDomain, &[], None);
        assert_eq!(nx[3] & 0x0f, 3);
    }
}
