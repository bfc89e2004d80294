//! A `hostPort` pod through containerd's CRI on a CNI chain that is ours
//! end to end (loopback, bridge + host-local, portmap), and the same pod
//! with the reference's portmap in its place: the port published on the
//! node answers from the pod, and nothing is left once the pod is gone.
//!
//! Needs root, containerd, runc, gcc, busybox-static and a built workspace.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use integration::cri::*;
use integration::oci;
use integration::ref_dir;
use k8s_cri::v1::{
    CreateContainerRequest, PortMapping, RemovePodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};

const HOST_PORT: i32 = 18080;
const GATEWAY: &str = "10.88.0.1";

/// What a TCP client on the node reads from `GATEWAY:HOST_PORT`, retried
/// until `within` (the container needs a moment to listen).
fn read_from_node(cd: &Containerd, within: Duration) -> String {
    let start = Instant::now();
    loop {
        let out = cd
            .ns
            .run(&["busybox", "nc", "-w", "2", GATEWAY, &HOST_PORT.to_string()]);
        let text = out.stdout_str();
        if !text.trim().is_empty() || start.elapsed() > within {
            return text;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn host_port_pod(portmap: &str) {
    let cd = Containerd::start(&format!("hostport-{portmap}"));
    if portmap == "reference" {
        let link = cd.cni_bin_dir.join("portmap");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(ref_dir().join("portmap"), &link).unwrap();
    }
    let dir = cd.tmp.path();
    cd.seed_each(
        &cd.socket,
        &[
            &oci::pause_image().write_oci(dir, "pause.oci.tar"),
            &oci::busybox_image().write_oci(dir, "busybox.oci.tar"),
        ],
    );
    let mut rt = runtime_client(channel(&cd.socket).await);
    let mut cfg = pod_config(&format!("hostport-{portmap}"), &cd.pod_logs);
    cfg.port_mappings = vec![PortMapping {
        protocol: 0, // TCP
        container_port: 8080,
        host_port: HOST_PORT,
        host_ip: String::new(),
    }];
    let pod = run_pod(&mut rt, cfg.clone(), || cd.log_text()).await;
    let rules = cd.ns.cni_nat_rules().join("\n");
    assert!(rules.contains("CNI-HOSTPORT-DNAT"), "{portmap}: {rules}");
    let serve = busybox_container(
        "web",
        &[
            "sh",
            "-c",
            "while true; do echo hello-from-the-pod | nc -l -p 8080; done",
        ],
    );
    let cid = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(serve),
            sandbox_config: Some(cfg),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", cd.log_text()))
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest { container_id: cid })
        .await
        .unwrap();
    let got = read_from_node(&cd, Duration::from_secs(20));
    assert_eq!(
        got.trim(),
        "hello-from-the-pod",
        "{portmap}: through the host port"
    );
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    let left = cd.ns.portmap_attachment_rules();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "{portmap}: rules left after the pod"
    );
    assert!(cd.ipam().ips().is_empty(), "{portmap}: reservations left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_with_our_portmap() {
    host_port_pod("ours").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_with_the_reference_portmap() {
    host_port_pod("reference").await;
}
