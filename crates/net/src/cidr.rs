//! IPv4 CIDR blocks (`10.88.0.0/16`): the pod and service ranges, validated once into a type.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: the address with the host bits cleared, and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// A string that is not `a.b.c.d/len` with len 0-32.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 CIDR {value:?}")]
pub struct CidrError {
    pub value: String,
}

impl Ipv4Cidr {
    /// The network of `addr` with `prefix` (host bits are cleared).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        (prefix <= 32).then(|| Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// A block written in the source: `network` must have its host bits clear, `prefix` <= 32.
    pub(crate) const fn literal(network: [u8; 4], prefix: u8) -> Ipv4Cidr {
        let [a, b, c, d] = network;
        Ipv4Cidr {
            network: Ipv4Addr::new(a, b, c, d),
            prefix,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two blocks share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The `n`th address of the block (0 is the network address), if inside it.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }

    /// The index of `ip` inside the block.
    pub fn index_of(&self, ip: Ipv4Addr) -> Option<u32> {
        self.contains(ip)
            .then(|| u32::from(ip) - u32::from(self.network))
    }

    /// How many usable host addresses there are (network and broadcast excluded).
    pub fn host_count(&self) -> u32 {
        match self.prefix {
            32 => 1,
            31 => 2,
            p => (1u32 << (32 - u32::from(p))) - 2,
        }
    }

    /// The first host address: the bridge's own address in a pod CIDR.
    pub fn first_host(&self) -> Ipv4Addr {
        let offset = u32::from(self.prefix < 31);
        Ipv4Addr::from(u32::from(self.network) + offset)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Ipv4Cidr, CidrError> {
        let err = || CidrError {
            value: s.to_string(),
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Ipv4Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_clears_host_bits() {
        let c: Ipv4Cidr = "10.88.3.4/16".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.88.0.0/16");
        assert_eq!(c.first_host(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(c.host_count(), 65534);
        assert!(c.contains(Ipv4Addr::new(10, 88, 255, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 89, 0, 0)));
        assert_eq!(c.nth(256), Some(Ipv4Addr::new(10, 88, 1, 0)));
        assert_eq!(c.nth(65536), None);
        assert_eq!(c.index_of(Ipv4Addr::new(10, 88, 1, 2)), Some(258));
        for bad in ["10.88.0.0", "10.88.0.0/33", "x/8", "10.88.0/16"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn overlap() {
        let a: Ipv4Cidr = "10.88.0.0/16".parse().expect("a");
        let b: Ipv4Cidr = "10.88.7.0/24".parse().expect("b");
        let c: Ipv4Cidr = "10.96.0.0/16".parse().expect("c");
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }
}
