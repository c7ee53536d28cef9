//! rtnetlink against the real kernel (root): a veth pair on a bridge whose peer is made inside a
//! network namespace of the test's own, configured from a socket opened in that namespace.

use peapod_sys::netlink::Netlink;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

const NS: &str = "ppt-nl";
const HOST: &str = "pptnl0";
const BRIDGE: &str = "pptnlbr";
/// The peer's name in the namespace (peapod names it eth0; the host has an eth0 of its own).
const PEER: &str = "pptnl0p";

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
        let _ = Command::new("ip").args(["link", "del", HOST]).output();
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    }
}

#[test]
fn veth_into_a_namespace_with_address_and_route() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    drop(Cleanup);
    let _cleanup = Cleanup;
    ip(&["netns", "add", NS]);
    let pin = Path::new("/run/netns").join(NS);
    let mut host = Netlink::open().expect("open");
    assert!(host.link_index("lo").expect("lo").is_some());
    assert_eq!(host.link_index("pptnl-none").expect("lookup"), None);
    ip(&["link", "add", BRIDGE, "type", "bridge"]);
    let bridge = host.link_index(BRIDGE).expect("bridge").expect("made");
    host.add_veth_into(HOST, bridge, PEER, &pin)
        .expect("add veth into the namespace");
    let host_index = host.link_index(HOST).expect("host end").expect("made");
    assert_eq!(
        host.link_index(PEER).expect("lookup"),
        None,
        "made in the namespace"
    );
    assert!(host.link_index(HOST).expect("host end") == Some(host_index));
    let host_link = ip(&["link", "show", HOST]);
    assert!(
        host_link.contains(&format!("master {BRIDGE}")),
        "{host_link}"
    );
    let hairpin = Path::new("/sys/class/net")
        .join(HOST)
        .join("brport/hairpin_mode");
    let read_hairpin = || std::fs::read_to_string(&hairpin).expect("hairpin_mode");
    assert_eq!(read_hairpin().trim(), "0");
    host.set_hairpin(host_index).expect("hairpin on");
    assert_eq!(read_hairpin().trim(), "1");
    // One queue each way on both ends (no grace period to lower them after creation).
    let details = ip(&["-d", "link", "show", HOST]);
    assert!(details.contains("numtxqueues 1 numrxqueues 1"), "{details}");
    let details = ip(&["-n", NS, "-d", "link", "show", PEER]);
    assert!(details.contains("numtxqueues 1 numrxqueues 1"), "{details}");
    let mut pod = Netlink::open_in(&pin).expect("open in netns");
    let eth0 = pod.link_index(PEER).expect("peer").expect("peer exists");
    pod.set_up(eth0).expect("up");
    pod.add_address(eth0, Ipv4Addr::new(10, 124, 0, 2), 24)
        .expect("address");
    pod.add_default_route(Ipv4Addr::new(10, 124, 0, 1))
        .expect("route");
    let addrs = ip(&["-n", NS, "-4", "addr", "show", PEER]);
    assert!(addrs.contains("10.124.0.2/24"), "{addrs}");
    assert!(addrs.contains("UP"), "{addrs}");
    let routes = ip(&["-n", NS, "route"]);
    assert!(
        routes.contains(&format!("default via 10.124.0.1 dev {PEER}")),
        "{routes}"
    );
    assert!(host.delete_link(HOST).expect("delete"));
    assert!(!host.delete_link(HOST).expect("delete again"));
}
