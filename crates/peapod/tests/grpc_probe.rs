//! Root integration test of gRPC probes (issue 4) through `peapod run -f`: the kubelet's
//! `grpc: {port, service}` probe calls `grpc.health.v1.Health/Check` inside the pod's network
//! namespace. The health server is this test's own: a small HTTP/2 server whose listening
//! socket was made inside the pod's network namespace (so only a dial from inside the pod
//! reaches it), answering each service with the status the test sets. The pod's init container
//! waits for the test's go-ahead, so the server is up before the first probe.
//!
//! Run as root: `cargo test -p peapod --test grpc_probe`. The busybox image comes from
//! `python3 images/build.py` (or `PEAPOD_TEST_IMAGES`).

mod common;

use common::{deadline_in, poll_until, RunningPod, TestRoot};
use peapod_kubelet::grpc_probe::{frame, unframe, SERVING};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Generous: two cores, tests in parallel, a debug build.
const START: Duration = Duration::from_secs(60);
const EXIT: Duration = Duration::from_secs(60);
const NOT_SERVING: i32 = 2;
/// The health server's port inside the pod.
const PORT: u16 = 50051;

/// A gRPC health server listening on 0.0.0.0:PORT inside a network namespace (probes dial the
/// pod's IP), answering
/// `Check` of each service with the status in `statuses` (SERVICE_UNKNOWN when absent).
struct HealthServer {
    statuses: Arc<Mutex<HashMap<String, i32>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthServer {
    fn start_in(netns: &Path) -> HealthServer {
        let netns = netns.to_path_buf();
        // The socket belongs to the namespace of the thread that made it, for its whole life.
        let listener = std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).expect("open the pod's network namespace");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            std::net::TcpListener::bind(("0.0.0.0", PORT)).expect("bind in the pod")
        })
        .join()
        .expect("listener thread");
        listener.set_nonblocking(true).expect("nonblocking");
        let statuses = Arc::new(Mutex::new(HashMap::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = statuses.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let serve = async {
                    loop {
                        let (socket, _) = listener.accept().await.expect("accept");
                        tokio::spawn(serve_connection(socket, shared.clone()));
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        HealthServer {
            statuses,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn set(&self, service: &str, status: i32) {
        let mut statuses = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        statuses.insert(service.to_string(), status);
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers every `Check` call of one HTTP/2 connection.
async fn serve_connection(
    socket: tokio::net::TcpStream,
    statuses: Arc<Mutex<HashMap<String, i32>>>,
) {
    let Ok(mut conn) = h2::server::handshake(socket).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = conn.accept().await {
        let mut body = request.into_body();
        let mut data = Vec::new();
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        // HealthCheckRequest: field 1 (0x0a), a one-byte length, the name.
        let msg = unframe(&data).ok().flatten().unwrap_or(&[]);
        let service = String::from_utf8_lossy(msg.get(2..).unwrap_or(&[])).into_owned();
        let status = {
            let statuses = statuses.lock().unwrap_or_else(|e| e.into_inner());
            statuses.get(&service).copied().unwrap_or(3)
        };
        let head = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .expect("response");
        let Ok(mut send) = respond.send_response(head, false) else {
            continue;
        };
        let _ = send.send_data(frame(&[0x08, status as u8]).into(), false);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let _ = send.send_trailers(trailers);
    }
}

const GRPC: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: grpc
spec:
  terminationGracePeriodSeconds: 10
  volumes:
  - name: control
    hostPath:
      path: CONTROL_DIR
      type: Directory
  - name: state
    emptyDir: {}
  initContainers:
  - name: wait
    image: busybox
    command: ["sh", "-c", "until [ -e /control/go ]; do sleep 0.1; done"]
    volumeMounts:
    - name: control
      mountPath: /control
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c"]
    args:
    - |
      trap 'echo got-TERM; exit 0' TERM
      n=$(( $(cat /state/n 2>/dev/null || echo 0) + 1 ))
      echo $n > /state/n
      echo "started $n"
      while true; do sleep 1 & wait $!; done
    readinessProbe:
      grpc:
        port: 50051
        service: ready
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      grpc:
        port: 50051
        service: live
      periodSeconds: 1
      failureThreshold: 2
    volumeMounts:
    - name: state
      mountPath: /state
"#;

/// The network namespace of the only pod of `pod`, once its sandbox exists.
fn pod_netns(root: &TestRoot, pod: &RunningPod) -> PathBuf {
    poll_until(deadline_in(START), || {
        pod.sample();
        let uid = root.entries("pods").into_iter().next()?;
        let ns = root.path().join("pods").join(uid).join("ns/net");
        ns.exists().then_some(ns)
    })
    .unwrap_or_else(|| panic!("no pod network namespace\n{}", pod.transcript()))
}

/// Readiness over gRPC: NOT_SERVING keeps the container unready (an Unhealthy event with the
/// kubelet's message), SERVING makes it and the pod Ready. Liveness over gRPC: NOT_SERVING
/// restarts the container (Unhealthy, then Killing, then a second instance).
#[test]
fn grpc_probes_drive_readiness_and_liveness() {
    let root = TestRoot::new();
    let control = common::control_dir(&root);
    let manifest = GRPC.replace("CONTROL_DIR", &control.display().to_string());
    let mut pod = root.run(&root.manifest("pod.yaml", &manifest));
    let server = HealthServer::start_in(&pod_netns(&root, &pod));
    server.set("ready", NOT_SERVING);
    server.set("live", SERVING);
    std::fs::write(control.join("go"), "").expect("write control file");

    pod.wait_for("grpc/app | started 1", START);
    pod.wait_for(
        "pod/grpc: Unhealthy: Readiness probe failed: service unhealthy (responded with \
         \"NOT_SERVING\")",
        START,
    );
    server.set("ready", SERVING);
    pod.wait_for("pod/grpc: container app ready", START);
    pod.wait_for("pod/grpc: Ready", START);

    server.set("live", NOT_SERVING);
    pod.wait_for(
        "pod/grpc: Killing: Container app failed liveness probe, will be restarted",
        START,
    );
    server.set("live", SERVING);
    pod.wait_for("grpc/app | started 2", START);
    let stderr = pod.stderr();
    let unhealthy = stderr
        .iter()
        .position(|l| {
            l == "pod/grpc: Unhealthy: Liveness probe failed: service unhealthy (responded \
                  with \"NOT_SERVING\")"
        })
        .unwrap_or_else(|| panic!("no liveness Unhealthy event\n{}", pod.transcript()));
    let killing = stderr
        .iter()
        .position(|l| l.starts_with("pod/grpc: Killing: "))
        .unwrap_or_else(|| panic!("no Killing event\n{}", pod.transcript()));
    assert!(unhealthy < killing, "{stderr:?}");

    drop(server);
    pod.interrupt();
    let code = pod.exit_code(deadline_in(EXIT));
    assert_eq!(code, 0, "exit code after SIGINT\n{}", pod.transcript());
    pod.assert_no_leaks(&root);
}
