//! The cluster's DNS records, built from Services and Endpoints (pure), following the
//! Kubernetes DNS specification
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md>):
//!
//! - `<svc>.<ns>.svc.<domain>` A: the ClusterIP; for a headless Service (`clusterIP: None`)
//!   the ready endpoint addresses.
//! - `<host>.<svc>.<ns>.svc.<domain>` A for each ready endpoint of a headless Service: `host`
//!   is the endpoint's hostname (pod `hostname` + `subdomain`) or its IP with dashes.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for each named port.
//! - PTR for ClusterIPs and headless endpoint addresses.
//!
//! Names that exist without records of the asked type (AAAA on an IPv4 cluster, and the empty
//! non-terminals such as `<ns>.svc.<domain>`) answer NOERROR with no records; anything else is
//! NXDOMAIN. Names outside the cluster are not forwarded.

use super::wire::{Rdata, Record, TYPE_ANY};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Seconds a client may cache an answer (CoreDNS' kubernetes plugin default).
pub const TTL: u32 = 5;

/// Every record of the cluster, by lowercase name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    records: BTreeMap<String, Vec<Rdata>>,
    /// Names with records, and every name above them inside the cluster domain.
    names: BTreeSet<String>,
    /// The cluster domain (`cluster.local`), lowercase; empty before the first build.
    domain: String,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Vec<Record>),
    /// The name exists, with no record of that type.
    NoData,
    NxDomain,
}

impl Records {
    pub fn build(domain: &str, services: &[Service], endpoints: &[Endpoints]) -> Records {
        let mut r = Records {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            ..Records::default()
        };
        let eps: BTreeMap<(String, String), &Endpoints> =
            endpoints.iter().map(|e| (key(&e.metadata), e)).collect();
        for svc in services {
            let Some(spec) = &svc.spec else { continue };
            let (ns, name) = key(&svc.metadata);
            let fqdn = format!("{name}.{ns}.svc.{domain}");
            let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
            if let Ok(ip) = cluster_ip.parse::<Ipv4Addr>() {
                r.add(&fqdn, Rdata::A(ip), domain);
                r.add(&reverse(ip), Rdata::Ptr(fqdn.clone()), domain);
                for p in spec.ports.iter().flatten() {
                    if let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) {
                        let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                        let srv = Rdata::Srv {
                            priority: 0,
                            weight: 100,
                            port: p.port as u16,
                            target: fqdn.clone(),
                        };
                        r.add(&format!("_{pname}._{proto}.{fqdn}"), srv, domain);
                    }
                }
            } else if spec.type_.as_deref() == Some("ExternalName") {
                // <https://kubernetes.io/docs/concepts/services-networking/service/#externalname>
                if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                    let target = target.trim_end_matches('.').to_ascii_lowercase();
                    r.add(&fqdn, Rdata::Cname(target), domain);
                }
            } else if cluster_ip == "None" {
                r.names_above(&fqdn, domain);
                let e = eps.get(&(ns.clone(), name.clone()));
                for subset in e.and_then(|e| e.subsets.as_ref()).into_iter().flatten() {
                    for addr in subset.addresses.iter().flatten() {
                        let Ok(ip) = addr.ip.parse::<Ipv4Addr>() else {
                            continue;
                        };
                        let host = addr
                            .hostname
                            .clone()
                            .unwrap_or_else(|| addr.ip.replace('.', "-"));
                        let host_fqdn = format!("{host}.{fqdn}");
                        r.add(&fqdn, Rdata::A(ip), domain);
                        r.add(&host_fqdn, Rdata::A(ip), domain);
                        r.add(&reverse(ip), Rdata::Ptr(host_fqdn.clone()), domain);
                        for p in subset.ports.iter().flatten() {
                            if let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) {
                                let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                                let srv = Rdata::Srv {
                                    priority: 0,
                                    weight: 100,
                                    port: p.port as u16,
                                    target: host_fqdn.clone(),
                                };
                                r.add(&format!("_{pname}._{proto}.{fqdn}"), srv, domain);
                            }
                        }
                    }
                }
            }
        }
        r
    }

    fn add(&mut self, name: &str, data: Rdata, domain: &str) {
        let name = name.to_ascii_lowercase();
        let list = self.records.entry(name.clone()).or_default();
        if !list.contains(&data) {
            list.push(data);
        }
        self.names_above(&name, domain);
    }

    /// Records `name` and its ancestors down to `domain` (or `in-addr.arpa`) as existing.
    fn names_above(&mut self, name: &str, domain: &str) {
        let mut n = name.to_ascii_lowercase();
        loop {
            self.names.insert(n.clone());
            if n == domain || n == "in-addr.arpa" {
                return;
            }
            match n.split_once('.') {
                Some((_, rest)) => n = rest.to_string(),
                None => return,
            }
        }
    }

    /// The answer for `name` (lowercase) and query type `qtype`.
    /// Whether this server answers for `name` itself: the cluster domain and everything below
    /// it, and the reverse names of cluster addresses. Other names go to the upstream servers.
    pub fn is_local(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.domain.is_empty()
            || name == self.domain
            || name
                .strip_suffix(self.domain.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
            || self.names.contains(&name)
    }

    pub fn lookup(&self, name: &str, qtype: u16) -> Lookup {
        if !self.names.contains(name) {
            return Lookup::NxDomain;
        }
        let found: Vec<Record> = self
            .records
            .get(name)
            .into_iter()
            .flatten()
            // An alias answers every type with itself (RFC 1034 3.6.2); the client follows it.
            .filter(|d| qtype == TYPE_ANY || d.rtype() == qtype || matches!(d, Rdata::Cname(_)))
            .map(|d| Record {
                name: name.to_string(),
                ttl: TTL,
                data: d.clone(),
            })
            .collect();
        if found.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Found(found)
        }
    }
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// `d.c.b.a.in-addr.arpa` for `a.b.c.d`.
pub fn reverse(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

#[cfg(test)]
mod tests {
    use super::super::wire::{TYPE_A, TYPE_AAAA, TYPE_PTR, TYPE_SRV};
    use super::*;
    use serde_json::json;

    fn records() -> Records {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}},
            {"metadata": {"name": "db", "namespace": "prod"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
            {"metadata": {"name": "ext", "namespace": "default"}, "spec": {"type": "ExternalName", "externalName": "DB.Example.com."}},
        ]))
        .expect("services");
        let endpoints: Vec<Endpoints> = serde_json::from_value(json!([
            {"metadata": {"name": "db", "namespace": "prod"}, "subsets": [{
                "addresses": [{"ip": "10.88.0.5", "hostname": "db-0"}, {"ip": "10.88.0.6"}],
                "notReadyAddresses": [{"ip": "10.88.0.7"}],
                "ports": [{"name": "pg", "port": 5432}]}]}
        ]))
        .expect("endpoints");
        Records::build("cluster.local", &services, &endpoints)
    }

    fn ips(l: Lookup) -> Vec<Rdata> {
        match l {
            Lookup::Found(r) => r.into_iter().map(|r| r.data).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cluster_ip_services() {
        let r = records();
        assert_eq!(
            ips(r.lookup("web.default.svc.cluster.local", TYPE_A)),
            vec![Rdata::A(Ipv4Addr::new(10, 96, 0, 10))]
        );
        assert_eq!(
            r.lookup("web.default.svc.cluster.local", TYPE_AAAA),
            Lookup::NoData
        );
        assert_eq!(
            r.lookup("default.svc.cluster.local", TYPE_A),
            Lookup::NoData
        );
        assert_eq!(
            r.lookup("nope.default.svc.cluster.local", TYPE_A),
            Lookup::NxDomain
        );
        assert_eq!(r.lookup("example.com", TYPE_A), Lookup::NxDomain);
        assert_eq!(
            ips(r.lookup("_http._tcp.web.default.svc.cluster.local", TYPE_SRV)),
            vec![Rdata::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: "web.default.svc.cluster.local".into()
            }]
        );
        assert_eq!(
            ips(r.lookup("10.0.96.10.in-addr.arpa", TYPE_PTR)),
            vec![Rdata::Ptr("web.default.svc.cluster.local".into())]
        );
    }

    #[test]
    fn external_name_is_an_alias_for_every_type_and_names_outside_are_not_local() {
        let r = records();
        let alias = vec![Rdata::Cname("db.example.com".into())];
        assert_eq!(
            ips(r.lookup("ext.default.svc.cluster.local", TYPE_A)),
            alias
        );
        assert_eq!(
            ips(r.lookup("ext.default.svc.cluster.local", TYPE_AAAA)),
            alias
        );
        assert!(r.is_local("ext.default.svc.cluster.local"));
        assert!(r.is_local("cluster.local"));
        assert!(r.is_local("10.0.96.10.in-addr.arpa"));
        assert!(!r.is_local("db.example.com"));
        assert!(!r.is_local("notcluster.local"));
        assert!(!r.is_local("1.0.0.10.in-addr.arpa"));
    }

    #[test]
    fn headless_services_answer_ready_pods() {
        let r = records();
        assert_eq!(
            ips(r.lookup("db.prod.svc.cluster.local", TYPE_A)),
            vec![
                Rdata::A(Ipv4Addr::new(10, 88, 0, 5)),
                Rdata::A(Ipv4Addr::new(10, 88, 0, 6))
            ]
        );
        assert_eq!(
            ips(r.lookup("db-0.db.prod.svc.cluster.local", TYPE_A)),
            vec![Rdata::A(Ipv4Addr::new(10, 88, 0, 5))]
        );
        assert_eq!(
            ips(r.lookup("10-88-0-6.db.prod.svc.cluster.local", TYPE_A)),
            vec![Rdata::A(Ipv4Addr::new(10, 88, 0, 6))]
        );
        assert_eq!(
            r.lookup("10-88-0-7.db.prod.svc.cluster.local", TYPE_A),
            Lookup::NxDomain
        );
        assert_eq!(
            ips(r.lookup("5.0.88.10.in-addr.arpa", TYPE_PTR)),
            vec![Rdata::Ptr("db-0.db.prod.svc.cluster.local".into())]
        );
        assert_eq!(
            ips(r.lookup("_pg._tcp.db.prod.svc.cluster.local", TYPE_SRV)).len(),
            2
        );
    }
}
