//! Root integration test of the pod network, on a bridge, CIDRs and nftables table of its own
//! (`pptnet0`, pods 10.123.0.0/24, Services 10.123.1.0/24, table `pptnet`), with network
//! namespaces made by `ip netns add` standing in for pod sandboxes, and one more namespace
//! behind a plain routed veth standing in for "the outside". All traffic stays between these
//! namespaces and the host. Everything made here is removed at the end, or by the guard when
//! an assertion fails; the test checks that no device, route, table or file is left.
//!
//! Skipped (with a message) when not root or when `ip`/`nft` are missing.

use peapod_net::dns::{DnsServer, Records};
use peapod_net::service::rules::{Frontend, Protocol, ServiceRule};
use peapod_net::{nft, HostPort, NetworkConfig, Outbound, PodNetwork};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

const BRIDGE: &str = "pptnet0";
const TABLE: &str = "pptnet";
const PODS: [&str; 2] = ["pptnet-a", "pptnet-b"];
const OUTSIDE: &str = "pptnet-x";
/// The "outside" link: host end 10.123.2.1/30, namespace end 10.123.2.2/30.
const OUTSIDE_HOST_DEV: &str = "pptnetx0";
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 123, 2, 2);

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn nft_tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft list tables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The elements of map `map` of the test bridge's node table.
fn host_port_map(map: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "map", "ip", &format!("{BRIDGE}_guard"), map])
        .output()
        .expect("nft list map");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Removes whatever this test may have made, in any state.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        for ns in PODS.iter().chain([&OUTSIDE]) {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", OUTSIDE_HOST_DEV]);
        let _ = ip(&["link", "del", BRIDGE]);
        for table in [
            TABLE.to_string(),
            format!("{TABLE}2"),
            format!("{BRIDGE}_guard"),
        ] {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &table])
                .output();
        }
    }
}

/// Runs `f` on a thread inside the network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = netns_path(ns);
    std::thread::spawn(move || {
        peapod_sys::ns::enter_net(&path).expect("enter netns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// A one-line-per-connection TCP server on `0.0.0.0:port` inside `ns`, answering `reply`.
fn serve_in(ns: &str, port: u16, reply: &'static str) {
    let listener = in_netns(ns, move || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind in netns")
    });
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(reply.as_bytes());
        }
    });
}

/// What a connection to `addr` reads (None when it cannot connect within 3 s, which covers
/// one SYN retransmission while a just-plugged link comes up).
fn fetch(addr: SocketAddrV4) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(addr), Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

fn fetch_from(ns: &str, addr: SocketAddrV4) -> Option<String> {
    in_netns(ns, move || fetch(addr))
}

fn config(ipam: &Path) -> NetworkConfig {
    NetworkConfig {
        bridge: BRIDGE.into(),
        pod_cidr: "10.123.0.0/24".parse().expect("cidr"),
        service_cidr: "10.123.1.0/24".parse().expect("cidr"),
        table: TABLE.into(),
        node_ports: 30000..=32767,
        cluster_domain: "cluster.local".into(),
        outbound: Outbound::Isolated,
        ipam_dir: ipam.to_path_buf(),
    }
}

fn usable() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return false;
    }
    let has = |p: &str| Command::new(p).arg("-V").output().is_ok();
    if !has("ip") || !has("nft") {
        eprintln!("skipped: needs ip (iproute2) and nft (nftables)");
        return false;
    }
    true
}

fn setup_outside() {
    ip(&["netns", "add", OUTSIDE]).expect("netns add outside");
    ip(&[
        "link",
        "add",
        OUTSIDE_HOST_DEV,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &netns_path(OUTSIDE).to_string_lossy(),
    ])
    .expect("outside veth");
    ip(&["addr", "add", "10.123.2.1/30", "dev", OUTSIDE_HOST_DEV]).expect("addr");
    ip(&["link", "set", OUTSIDE_HOST_DEV, "up"]).expect("up");
    let status = Command::new("nsenter")
        .arg(format!("--net={}", netns_path(OUTSIDE).display()))
        .args(["ip", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin
                .take()
                .expect("stdin")
                .write_all(b"link set lo up\naddr add 10.123.2.2/30 dev eth0\nlink set eth0 up\nroute add default via 10.123.2.1\n")?;
            c.wait()
        })
        .expect("configure outside");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_services_dns_and_cleanup() {
    if !usable() {
        return;
    }
    let _cleanup = Cleanup;
    drop(Cleanup); // a leftover of an earlier, killed run
    let ipam = tempfile::tempdir().expect("tempdir");
    let net = PodNetwork::start(config(ipam.path())).await.expect("start");
    for ns in PODS {
        ip(&["netns", "add", ns]).expect("netns add");
        ip(&["-n", ns, "link", "set", "lo", "up"]).expect("lo up");
    }
    let mut addrs = Vec::new();
    for ns in PODS {
        let allocated = net.allocate(ns).await.expect("allocate");
        let connected = net.connect(ns, &netns_path(ns)).await.expect("connect");
        assert_eq!(allocated, connected);
        assert_eq!(net.pod_ip(ns), Some(allocated));
        addrs.push(allocated);
    }
    assert_eq!(
        addrs,
        vec![Ipv4Addr::new(10, 123, 0, 2), Ipv4Addr::new(10, 123, 0, 3)]
    );
    // Both pods listen on port 80.
    serve_in(PODS[0], 80, "from-a");
    serve_in(PODS[1], 80, "from-b");
    let a = SocketAddrV4::new(addrs[0], 80);
    let b = SocketAddrV4::new(addrs[1], 80);
    assert_eq!(fetch(a).as_deref(), Some("from-a"), "host to pod a");
    assert_eq!(fetch(b).as_deref(), Some("from-b"), "host to pod b");
    assert_eq!(
        fetch_from(PODS[0], b).as_deref(),
        Some("from-b"),
        "pod to pod"
    );

    // A Service in front of pod b, with a node port; one with no endpoints.
    let node_port = 32000 + (std::process::id() % 700) as u16;
    let cluster_ip = Ipv4Addr::new(10, 123, 1, 10);
    let rules = vec![
        ServiceRule {
            name: "default/b:http".into(),
            protocol: Protocol::Tcp,
            frontend: Frontend::ClusterIp {
                ip: cluster_ip,
                port: 8080,
            },
            backends: vec![b],
        },
        ServiceRule {
            name: "default/b:http".into(),
            protocol: Protocol::Tcp,
            frontend: Frontend::NodePort { port: node_port },
            backends: vec![b],
        },
    ];
    net.apply_ruleset(nft::ruleset(net.config(), &rules))
        .await
        .expect("apply");
    let svc = SocketAddrV4::new(cluster_ip, 8080);
    assert_eq!(
        fetch_from(PODS[0], svc).as_deref(),
        Some("from-b"),
        "pod to service"
    );
    assert_eq!(
        fetch_from(PODS[1], svc).as_deref(),
        Some("from-b"),
        "hairpin"
    );
    assert_eq!(fetch(svc).as_deref(), Some("from-b"), "host to service");
    let np = SocketAddrV4::new(Ipv4Addr::LOCALHOST, node_port);
    assert_eq!(
        fetch(np).as_deref(),
        Some("from-b"),
        "node port on 127.0.0.1"
    );
    let started = std::time::Instant::now();
    let refused = in_netns(PODS[0], || {
        TcpStream::connect_timeout(
            &SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 123, 1, 11), 80)),
            Duration::from_secs(3),
        )
        .map(drop)
        .map_err(|e| e.kind())
    });
    assert_eq!(
        refused,
        Err(std::io::ErrorKind::ConnectionRefused),
        "no endpoints: rejected"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // The outside is reachable from the host, never from a pod (outbound is isolated).
    setup_outside();
    serve_in(OUTSIDE, 80, "outside");
    let outside = SocketAddrV4::new(OUTSIDE_IP, 80);
    assert_eq!(
        fetch(outside).as_deref(),
        Some("outside"),
        "host to outside"
    );
    assert_eq!(
        fetch_from(PODS[0], outside),
        None,
        "pod to outside is dropped"
    );

    // Cluster DNS on the bridge address, queried from a pod.
    let services: Vec<k8s_openapi::api::core::v1::Service> = serde_json::from_value(
        serde_json::json!([{"metadata": {"name": "b", "namespace": "default"}, "spec": {"clusterIP": "10.123.1.10", "ports": [{"port": 8080}]}}]),
    )
    .expect("services");
    let records = Records::build("cluster.local", &services, &[]);
    let server = DnsServer::bind((net.config().gateway(), 53).into())
        .await
        .expect("bind dns");
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(records));
    let dns = server.serve(rx);
    let gateway = net.config().gateway();
    let reply = in_netns(PODS[0], move || {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("udp");
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in "b.default.svc.cluster.local".split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        sock.send_to(&q, (gateway, 53)).expect("send");
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("recv");
        buf[..n].to_vec()
    });
    dns.abort();
    assert_eq!(&reply[..2], &[0x12, 0x34]);
    assert_eq!(&reply[reply.len() - 4..], &[10, 123, 1, 10], "A record");

    // A restarted daemon finds the same addresses and the bridge as it was.
    drop(net);
    let net = PodNetwork::start(config(ipam.path()))
        .await
        .expect("restart");
    assert_eq!(net.pod_ip(PODS[1]), Some(addrs[1]));
    assert_eq!(
        fetch_from(PODS[0], b).as_deref(),
        Some("from-b"),
        "after restart"
    );
    // Its Service controller writes the rules again.
    net.apply_ruleset(nft::ruleset(net.config(), &rules))
        .await
        .expect("apply again");

    // A second daemon on the same bridge stops first: the bridge, its guard and the first
    // daemon's table stay while pods are on the bridge.
    let other_ipam = tempfile::tempdir().expect("tempdir");
    let other = PodNetwork::start(NetworkConfig {
        table: format!("{TABLE}2"),
        ..config(other_ipam.path())
    })
    .await
    .expect("second daemon");
    assert!(
        !nft_tables().contains(&format!("{TABLE}2")),
        "no table is written before there is a rule"
    );
    // Its own allocation files know nothing of the first root's: the host-wide reservations
    // keep it off the addresses the first one holds.
    let theirs = other.allocate("other-pod").await.expect("allocate");
    assert!(!addrs.contains(&theirs), "{theirs} is already taken");
    other.release("other-pod").await.expect("release");
    other.stop().expect("stop second daemon");
    assert!(ip(&["link", "show", BRIDGE]).is_ok(), "bridge kept");
    assert!(
        nft_tables().contains(&format!("{BRIDGE}_guard")),
        "guard kept"
    );
    assert!(
        !nft_tables().contains(&format!("{TABLE}2")),
        "second table removed"
    );
    assert_eq!(fetch_from(PODS[0], outside), None, "still isolated");
    assert_eq!(
        fetch_from(PODS[0], svc).as_deref(),
        Some("from-b"),
        "service kept"
    );

    // Host ports of pod a, on every local address and on 127.0.0.1 only: translated for
    // the host (loopback and its own address) and for the outside; publishing is idempotent.
    let host_port = 18000 + (std::process::id() % 1000) as u16;
    let tcp = |host_ip, host_port| HostPort {
        protocol: Protocol::Tcp,
        host_ip,
        host_port,
        container_port: 80,
    };
    let ports = vec![
        tcp(None, host_port),
        tcp(Some(Ipv4Addr::LOCALHOST), host_port + 1),
    ];
    for _ in 0..2 {
        net.publish(PODS[0], ports.clone()).await.expect("publish");
    }
    assert!(host_port_map("hostports").contains(&format!("tcp . {host_port} : 10.123.0.2 . 80")));
    let own = Ipv4Addr::new(10, 123, 2, 1);
    for (addr, what) in [
        (
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port),
            "127.0.0.1",
        ),
        (SocketAddrV4::new(own, host_port), "the host's own address"),
        (
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port + 1),
            "hostIP 127.0.0.1",
        ),
    ] {
        assert_eq!(
            fetch(addr).as_deref(),
            Some("from-a"),
            "host port on {what}"
        );
    }
    assert_eq!(
        fetch_from(OUTSIDE, SocketAddrV4::new(own, host_port)).as_deref(),
        Some("from-a"),
        "host port from outside"
    );
    assert_eq!(
        fetch(SocketAddrV4::new(own, host_port + 1)),
        None,
        "hostIP is 127.0.0.1 only"
    );
    // A pod found gone by a restarted daemon: its host ports go with its address.
    let udp = HostPort {
        protocol: Protocol::Udp,
        host_ip: None,
        host_port,
        container_port: 53,
    };
    net.publish(PODS[1], vec![udp]).await.expect("publish b");
    assert!(host_port_map("hostports").contains(&format!("udp . {host_port} : 10.123.0.3 . 53")));
    let freed = net
        .collect_garbage(|uid| uid != PODS[1])
        .await
        .expect("collect");
    assert_eq!(freed, vec![addrs[1]]);
    assert!(
        !host_port_map("hostports").contains("udp"),
        "{}",
        host_port_map("hostports")
    );

    // Release: veths gone, addresses free; stop: table gone, the bridge kept until removed.
    for ns in PODS {
        net.release(ns).await.expect("release");
        assert_eq!(net.pod_ip(ns), None);
    }
    assert!(!ip(&["-br", "link"]).expect("links").contains("pp0a7b"));
    assert!(
        !host_port_map("hostports").contains("tcp"),
        "{}",
        host_port_map("hostports")
    );
    assert!(!host_port_map("hostports_ip").contains("tcp"));
    assert_eq!(
        fetch(SocketAddrV4::new(Ipv4Addr::LOCALHOST, host_port)),
        None,
        "host port after release"
    );
    net.stop().expect("stop");
    assert!(
        !nft_tables().contains(&format!("{TABLE}\n")),
        "table removed"
    );
    assert!(ip(&["link", "show", BRIDGE]).is_ok(), "bridge kept");
    assert!(
        peapod_net::network::remove_bridge(net.config()).expect("remove bridge"),
        "bridge removed"
    );
    assert!(ip(&["link", "show", BRIDGE]).is_err(), "bridge removed");
    assert!(!ip(&["route"]).expect("routes").contains("10.123.1.0/24"));
    assert!(
        !nft_tables().contains(TABLE),
        "tables left: {}",
        nft_tables()
    );
    let left: Vec<_> = std::fs::read_dir(ipam.path())
        .expect("ipam dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "last")
        .collect();
    assert!(left.is_empty(), "allocations left: {left:?}");
}
