//! Pod networking, Services and cluster DNS end to end (issue 7), with `peapod serve` and the
//! real kubectl 1.33: two pods get distinct addresses and both listen on port 80, one reaches
//! the other by IP; a Service selecting a pod is reached by its DNS name from another pod;
//! `kubectl expose --type=NodePort` is reached from the host on 127.0.0.1:<nodePort>; a
//! hostPort something else holds keeps its pod Pending, a free one is reached from the host,
//! also while the daemon is killed and after it is restarted, until the pod is deleted. The
//! daemon runs on a network of its own (bridge `ppe2esvc0`, pods 10.124.0.0/24, Services
//! 10.124.1.0/24, nftables table `ppe2esvc`, set through `PEAPOD_*` variables), so it never
//! touches a developer's networks or another daemon's; all traffic stays on that bridge and
//! loopback. At the end the pods are deleted through kubectl, the daemon is stopped with
//! SIGTERM, and the test checks that no device, route, table, address file, process or mount
//! is left. A failing test still cleans up (`Drop`).
//!
//! The binary is `PEAPOD_BIN`, else `<workspace>/target/debug/peapod` (`cargo build -p peapod`
//! first); the image is `images/out/busybox.oci.tar` (`python3 images/build.py`), or
//! `$PEAPOD_TEST_IMAGES/busybox.oci.tar`. Runs as root, needs `ip` and `nft`. Waits poll with
//! deadlines.
//!
//! busybox `wget -T` crashes in Debian's busybox 1.35, so requests carry no timeout of their
//! own: the kubectl command timeout bounds them, and the network answers refusals at once.

use peapod_e2e::{
    http_get, mounts_under, peapod_processes_under, poll_every, root_tempdir, run_with_input,
    Daemon, Leftovers, Out, LATEST,
};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const POLL_INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(90);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

const BRIDGE: &str = "ppe2esvc0";
const TABLE: &str = "ppe2esvc";
const POD_CIDR_PREFIX: &str = "10.124.0.";
const SERVICE_CIDR: &str = "10.124.1.0/24";
/// Host ends of pod veths are `pp` + the address in hex: 10.124.0.x is `pp0a7c00xx`.
const VETH_PREFIX: &str = "pp0a7c00";

/// Calls `check` every `POLL_INTERVAL` until it returns `Some` or `deadline` passes.
fn poll_until<T>(deadline: Instant, check: impl FnMut() -> Option<T>) -> Option<T> {
    poll_every(POLL_INTERVAL, deadline, check)
}

/// Runs `cmd` to its end, killed after `COMMAND_TIMEOUT` (then its status says so).
fn run(cmd: Command, what: String) -> Out {
    run_with_input(cmd, what, COMMAND_TIMEOUT, None).unwrap_or_else(|e| panic!("{e}"))
}

fn text(out: &Out) -> String {
    format!(
        "{}\n--- stdout:\n{}--- stderr:\n{}",
        out.status, out.stdout, out.stderr
    )
}

/// Host links whose name starts with `prefix`.
fn links(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn nft_table_exists() -> bool {
    Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn service_route_exists() -> bool {
    Command::new("ip")
        .args(["route", "show", SERVICE_CIDR])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

/// peapod processes working below `root` (the monitors).
fn processes_of(root: &Path) -> Vec<i32> {
    peapod_processes_under(root)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// What the fake upstream resolver answers for every A query.
const UPSTREAM_ANSWER: &str = "192.0.2.7";

/// A resolver on loopback standing for the host's: every A query gets `UPSTREAM_ANSWER`,
/// others an empty answer. Its thread ends with the test process.
fn fake_upstream() -> std::net::SocketAddr {
    let sock = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind upstream");
    let addr = sock.local_addr().expect("upstream address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if let Some(reply) = upstream_reply(&buf[..n]) {
                let _ = sock.send_to(&reply, peer);
            }
        }
    });
    addr
}

/// The reply to one query: its header and question, and an A record when it asked for one.
fn upstream_reply(q: &[u8]) -> Option<Vec<u8>> {
    let mut end = 12;
    while *q.get(end)? != 0 {
        end += 1 + usize::from(q[end]);
    }
    end += 5; // the root label, QTYPE, QCLASS
    let question = q.get(12..end)?;
    let is_a = question[question.len() - 4..question.len() - 2] == [0, 1];
    let mut r = vec![q[0], q[1], 0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0];
    r.extend_from_slice(question);
    if is_a {
        // The name by pointer to the question, A, IN, TTL 60, four bytes.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
    }
    Some(r)
}

/// `peapod serve` on a temporary root and a network of its own.
struct Cluster {
    d: Daemon,
    upstream: String,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = root_tempdir("peapod-services-");
        let mut c = Cluster {
            d: Daemon::new(dir, Leftovers::Peapod),
            upstream: fake_upstream().to_string(),
        };
        c.remove_network();
        c.serve();
        c
    }

    fn serve(&mut self) {
        self.d.serve(&[
            ("PEAPOD_DNS_UPSTREAM", self.upstream.as_str()),
            ("PEAPOD_BRIDGE", BRIDGE),
            ("PEAPOD_POD_CIDR", "10.124.0.0/24"),
            ("PEAPOD_SERVICE_CIDR", SERVICE_CIDR),
            ("PEAPOD_NFT_TABLE", TABLE),
        ]);
    }

    fn log(&self) -> String {
        self.d.log()
    }

    fn kubectl(&self, args: &[&str]) -> Out {
        let (cmd, what) = self.d.kubectl_command(LATEST, args);
        run(cmd, what)
    }

    /// stdout of a kubectl command that must succeed.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}\n{}",
            args.join(" "),
            text(&out),
            self.log()
        );
        out.stdout
    }

    /// Polls a kubectl command until it succeeds with stdout satisfying `want`.
    fn ok_until(&self, args: &[&str], want: impl Fn(&str) -> bool) -> String {
        let mut last = None;
        let found = poll_until(Instant::now() + TIMEOUT, || {
            let out = self.kubectl(args);
            let stdout = out.stdout.clone();
            let good = out.status.success() && want(&stdout);
            last = Some(out);
            good.then_some(stdout)
        });
        found.unwrap_or_else(|| {
            panic!(
                "kubectl {}: no satisfying output in {TIMEOUT:?}; last: {}\n{}",
                args.join(" "),
                last.map(|o| text(&o)).unwrap_or_default(),
                self.log()
            )
        })
    }

    fn apply(&self, name: &str, yaml: &str) {
        let path = self.d.dir.path().join(name);
        std::fs::write(&path, yaml).expect("write manifest");
        self.ok(&["apply", "-f", path.to_str().expect("utf-8 path")]);
    }

    fn wait_ready_pod(&self, pod: &str) -> String {
        self.ok_until(
            &[
                "get",
                "pod",
                pod,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.podIP}",
            ],
            |s| s.starts_with("True ") && s.len() > 5,
        )
        .trim_start_matches("True ")
        .trim()
        .to_string()
    }

    /// Removes this test's network leftovers (a killed earlier run, or a failed one).
    fn remove_network(&self) {
        for link in links(VETH_PREFIX).into_iter().chain([BRIDGE.to_string()]) {
            if Path::new("/sys/class/net").join(&link).exists() {
                let _ = Command::new("ip").args(["link", "del", &link]).output();
            }
        }
        for table in [TABLE.to_string(), format!("{BRIDGE}_guard")] {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &table])
                .output();
        }
    }

    fn stop_daemon(&mut self) -> Option<std::process::ExitStatus> {
        self.d.stop().ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.d.is_finished() {
            return;
        }
        if self.d.is_running() {
            let _ = self.kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=30s"]);
        }
        self.stop_daemon();
        self.d.sweep();
        self.remove_network();
    }
}

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports:
    - name: http
      containerPort: 80
    readinessProbe:
      tcpSocket:
        port: 80
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; mkdir -p /www && echo hello-from-client > /www/index.html && httpd -p 80 -h /www; while true; do sleep 0.2; done"]
"#;

/// A pod serving `hello-from-NAME` on host port PORT.
const HOST_PORT_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: NAME
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-NAME > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports:
    - containerPort: 80
      hostPort: PORT
"#;

/// The elements of the test bridge's host port map (`nft list map`).
fn host_port_map() -> String {
    Command::new("nft")
        .args(["list", "map", "ip", &format!("{BRIDGE}_guard"), "hostports"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn pod_ips_services_dns_and_node_ports() {
    let mut c = Cluster::start();
    c.apply("pods.yaml", PODS);
    let web_ip = c.wait_ready_pod("web");
    let client_ip = c.wait_ready_pod("client");
    assert!(web_ip.starts_with(POD_CIDR_PREFIX), "web IP {web_ip}");
    assert!(
        client_ip.starts_with(POD_CIDR_PREFIX),
        "client IP {client_ip}"
    );
    assert_ne!(web_ip, client_ip);

    // Both pods listen on port 80; each reaches the other by IP.
    let body = c.ok_until(
        &[
            "exec",
            "client",
            "--",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{web_ip}/"),
        ],
        |s| !s.is_empty(),
    );
    assert_eq!(body, "hello-from-web\n");
    let body = c.ok_until(
        &[
            "exec",
            "web",
            "--",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{client_ip}/"),
        ],
        |s| !s.is_empty(),
    );
    assert_eq!(body, "hello-from-client\n");

    // The kubelet's files carry the pod network.
    let hosts = c.ok(&["exec", "web", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{web_ip}\tweb\n")), "{hosts}");
    let resolv = c.ok(&["exec", "web", "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(
        resolv,
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.124.0.1\noptions ndots:5\n"
    );

    // A Service by name, from another pod, through cluster DNS and the ClusterIP.
    c.ok(&[
        "expose",
        "pod",
        "web",
        "--port=80",
        "--target-port=http",
        "--name=web",
    ]);
    let cluster_ip = c.ok_until(
        &["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"],
        |s| s.starts_with("10.124.1."),
    );
    c.ok_until(
        &[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[0].addresses[0].ip}",
        ],
        |s| s == web_ip,
    );
    // The same endpoints as an EndpointSlice, which kubectl 1.31+ describes the Service from.
    c.ok_until(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[0].endpoints[0].addresses[0]} {.items[0].ports[0].port}",
        ],
        |s| s == format!("{web_ip} 80"),
    );
    let table = c.ok(&["get", "endpointslices"]);
    assert!(
        table.starts_with("NAME") && table.contains("IPv4") && table.contains(&web_ip),
        "{table}"
    );
    let described = c.ok(&["describe", "service", "web"]);
    assert!(
        described.contains("Endpoints:") && described.contains(&format!("{web_ip}:80")),
        "{described}"
    );
    let body = c.ok_until(
        &[
            "exec",
            "client",
            "--",
            "wget",
            "-q",
            "-O",
            "-",
            "http://web.default.svc.cluster.local:80/",
        ],
        |s| !s.is_empty(),
    );
    assert_eq!(body, "hello-from-web\n");
    let lookup = c.ok(&[
        "exec",
        "client",
        "--",
        "nslookup",
        "web.default.svc.cluster.local",
    ]);
    assert!(lookup.contains(&cluster_ip), "{lookup}");
    let nx = c.kubectl(&[
        "exec",
        "client",
        "--",
        "nslookup",
        "no-such-service.default.svc.cluster.local",
    ]);
    assert!(!nx.status.success(), "{}", text(&nx));
    // A name outside the cluster goes to the upstream resolver (the test's, on loopback).
    let external = c.ok_until(
        &["exec", "client", "--", "nslookup", "peapod-upstream.test"],
        |s| s.contains(UPSTREAM_ANSWER),
    );
    assert!(external.contains(UPSTREAM_ANSWER), "{external}");
    // An ExternalName Service is an alias (CNAME) for its external name.
    c.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=peapod-upstream.test",
    ]);
    let alias = c.ok_until(
        &[
            "exec",
            "client",
            "--",
            "nslookup",
            "ext.default.svc.cluster.local",
        ],
        |s| s.contains("canonical name = peapod-upstream.test"),
    );
    assert!(alias.contains("canonical name"), "{alias}");
    // `kubectl create service` sends protobuf.
    c.ok(&["create", "service", "clusterip", "made", "--tcp=81:8080"]);
    let made = c.ok(&[
        "get",
        "service",
        "made",
        "-o",
        "jsonpath={.spec.type} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector.app}",
    ]);
    assert_eq!(made, "ClusterIP 81 8080 made");

    // NodePort from the host.
    c.ok(&[
        "expose",
        "pod",
        "web",
        "--type=NodePort",
        "--port=80",
        "--name=web-np",
    ]);
    let node_port: u16 = c
        .ok_until(
            &[
                "get",
                "svc",
                "web-np",
                "-o",
                "jsonpath={.spec.ports[0].nodePort}",
            ],
            |s| !s.is_empty(),
        )
        .parse()
        .expect("node port");
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    let body = poll_until(Instant::now() + TIMEOUT, || http_get(node_port))
        .unwrap_or_else(|| panic!("nothing on 127.0.0.1:{node_port}\n{}", c.log()));
    assert_eq!(body, "hello-from-web\n");

    // Deleting a Service removes its rules and Endpoints.
    c.ok(&["delete", "svc", "web-np", "web", "ext", "made"]);
    c.ok_until(&["get", "endpoints", "-o", "name"], |s| s.trim().is_empty());
    assert!(
        poll_until(Instant::now() + TIMEOUT, || http_get(node_port)
            .is_none()
            .then_some(()))
        .is_some(),
        "node port {node_port} still answers after the Service was deleted"
    );

    // hostPort over the API: a port something else has keeps the pod Pending with the
    // scheduler's event, nothing created; a free one is translated to the pod (an element of
    // the bridge's host port map) until the pod is deleted.
    let taken = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("hold a port");
    let taken_port = taken.local_addr().expect("port").port();
    c.apply(
        "taken.yaml",
        &HOST_PORT_POD
            .replace("NAME", "taken")
            .replace("PORT", &taken_port.to_string()),
    );
    c.ok_until(&["get", "events", "--field-selector", "involvedObject.name=taken", "-o", "jsonpath={.items[*].message}"], |s| {
        s.contains(&format!("didn't have free ports for the requested pod ports: host port 0.0.0.0:{taken_port} is already in use"))
    });
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "taken",
            "-o",
            "jsonpath={.status.phase}/{.status.podIP}"
        ]),
        "Pending/"
    );
    c.ok(&["delete", "pod", "taken", "--wait=true", "--timeout=60s"]);
    drop(taken);
    let host_port = peapod_e2e::free_port();
    c.apply(
        "hp.yaml",
        &HOST_PORT_POD
            .replace("NAME", "hp")
            .replace("PORT", &host_port.to_string()),
    );
    let body = poll_until(Instant::now() + TIMEOUT, || http_get(host_port))
        .unwrap_or_else(|| panic!("nothing on 127.0.0.1:{host_port}\n{}", c.log()));
    assert_eq!(body, "hello-from-hp\n");
    let element = format!("tcp . {host_port} : {POD_CIDR_PREFIX}");
    assert!(host_port_map().contains(&element), "{}", host_port_map());
    // The kernel keeps translating while no daemon runs; a restarted one adopts the pod (and
    // publishes its port again), and deleting the pod then removes the element.
    c.d.kill();
    assert_eq!(
        http_get(host_port).as_deref(),
        Some("hello-from-hp\n"),
        "without a daemon"
    );
    c.serve();
    c.wait_ready_pod("hp");
    assert_eq!(
        http_get(host_port).as_deref(),
        Some("hello-from-hp\n"),
        "after the restart"
    );
    c.ok(&["delete", "pod", "hp", "--wait=true", "--timeout=60s"]);
    assert!(!host_port_map().contains(&element), "{}", host_port_map());
    assert_eq!(
        http_get(host_port),
        None,
        "host port {host_port} after the pod"
    );

    // Cleanup through kubectl, then the daemon; nothing of the network is left.
    c.d.set_finished();
    c.ok(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"]);
    c.ok_until(&["get", "pods", "-o", "name"], |s| s.trim().is_empty());
    assert_eq!(links(VETH_PREFIX), Vec::<String>::new(), "pod veths left");
    let ipam = c.d.root.join("ipam").join(BRIDGE);
    let left: Vec<String> = std::fs::read_dir(&ipam)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "last")
        .collect();
    assert!(left.is_empty(), "addresses still allocated: {left:?}");
    let status = c.stop_daemon();
    assert!(
        status.is_some_and(|s| s.success()),
        "daemon exit {status:?}\n{}",
        c.log()
    );
    assert!(!nft_table_exists(), "nft table {TABLE} left");
    // The bridge is node setup and stays (as a CNI bridge does) until it is removed.
    assert_eq!(links(BRIDGE), vec![BRIDGE.to_string()], "bridge kept");
    let removed = Command::new(peapod_e2e::binaries::peapod_bin())
        .args(["network", "remove"])
        .env("PEAPOD_ROOT", &c.d.root)
        .env("PEAPOD_BRIDGE", BRIDGE)
        .output()
        .expect("run peapod network remove");
    assert!(
        removed.status.success(),
        "peapod network remove: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert!(links(BRIDGE).is_empty(), "bridge {BRIDGE} left");
    let guard = Command::new("nft")
        .args(["list", "table", "ip", &format!("{BRIDGE}_guard")])
        .output()
        .expect("nft");
    assert!(!guard.status.success(), "guard table left");
    assert!(!service_route_exists(), "route {SERVICE_CIDR} left");
    assert_eq!(processes_of(&c.d.root), Vec::<i32>::new(), "processes left");
    assert_eq!(
        mounts_under(&c.d.root),
        Vec::<PathBuf>::new(),
        "mounts left"
    );
}
