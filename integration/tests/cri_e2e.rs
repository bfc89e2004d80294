//! End-to-end tests of `cri-adapter` against a real containerd (Debian's 1.6,
//! started by the test in a throwaway network namespace with a config from
//! `cri-adapter render`), with our CRI client talking through `cri-adapter
//! serve`; our `bridge` + `host-local` give the pods their network.
//!
//! Needs root, containerd, runc, gcc, busybox-static, iproute2 and a built
//! workspace (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use integration::cri::*;
use integration::oci::{self, Naming};
use k8s_cri::v1::{
    ContainerState, CreateContainerRequest, ExecSyncRequest, ImageSpec, ImageStatusRequest,
    ListContainersRequest, ListImagesRequest, ListPodSandboxRequest, RemovePodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tonic::Code;

fn in_pod_subnet(ip: &str) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap_or_else(|e| panic!("pod ip {ip:?}: {e}"));
    ip.octets()[0] == 10 && ip.octets()[1] == 88
}

/// `<name> <config digest> <outcome>`: what `seed` prints per image.
fn seed_line(img: &oci::ImageDef, outcome: &str) -> String {
    format!("{} {} {outcome}", img.name, img.blobs().config.0)
}

async fn image_id(sock: &Path, name: &str) -> Option<String> {
    let mut images = image_client(channel(sock).await);
    images
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.into(),
                ..ImageSpec::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .map(|i| {
            assert!(
                i.repo_tags.iter().any(|t| t == name),
                "ImageStatus {name}: repo_tags {:?}",
                i.repo_tags
            );
            i.id
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_with_busybox_through_serve() {
    let cd = Containerd::start("e2e");
    let proxy = Serve::start(&cd.tmp.path().join("cri.sock"), &cd.socket, &[]);
    let dir = cd.tmp.path();

    // --- seed both images through the adapter's socket -------------------
    let pause = oci::pause_image();
    let busybox = oci::busybox_image();
    let pause_tar = pause.write_oci(dir, "pause.oci.tar");
    let busybox_tar = busybox.write_oci(dir, "busybox.oci.tar");
    let out = cd.seed(&proxy.socket, &[&pause_tar, &busybox_tar]);
    assert!(out.status.success(), "seed: {}", out.stderr_str());
    assert_eq!(
        out.stdout_str(),
        format!(
            "{}\n{}\n",
            seed_line(&pause, "imported"),
            seed_line(&busybox, "imported")
        )
    );
    for img in [&pause, &busybox] {
        assert_eq!(
            image_id(&proxy.socket, &img.name).await,
            Some(img.blobs().config.0),
            "CRI ImageStatus through the proxy for {}",
            img.name
        );
    }
    let names = cd.image_names();
    assert!(names.contains(oci::PAUSE_NAME) && names.contains(oci::BUSYBOX_NAME));
    // Seeding again changes nothing.
    let digests = cd.content_digests();
    let out = cd.seed(&proxy.socket, &[&pause_tar, &busybox_tar]);
    assert!(out.status.success(), "re-seed failed: {}", out.stderr_str());
    assert_eq!(
        out.stdout_str(),
        format!(
            "{}\n{}\n",
            seed_line(&pause, "present"),
            seed_line(&busybox, "present")
        )
    );
    assert_eq!(cd.content_digests(), digests);

    // --- a pod on our bridge with an address from our host-local -----------
    let mut rt = runtime_client(channel(&proxy.socket).await);
    let v = rt
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "containerd");
    let pod_cfg = pod_config("e2e-pod", &cd.pod_logs);
    let pod_id = run_pod(&mut rt, pod_cfg.clone(), || cd.log_text()).await;
    let status = pod_status(&mut rt, &pod_id).await;
    let ip = status.network.unwrap().ip;
    assert!(in_pod_subnet(&ip), "pod ip {ip} not in {SUBNET}");
    let store = cd.ipam();
    assert_eq!(
        store.ip_names(),
        vec![ip.clone()],
        "host-local reservations"
    );
    assert_eq!(
        store.read_ip(&ip).as_deref(),
        Some(format!("{pod_id}\r\neth0").as_str()),
        "reservation owner"
    );
    let veths = cd.ns.veths();
    assert_eq!(veths.len(), 1, "one veth in containerd's netns: {veths:?}");
    let veth = cd.ns.must_link(&veths[0]);
    assert_eq!(veth["master"], "cni0", "veth not on cni0: {veth}");
    let gw: Vec<String> = cd
        .ns
        .addr_info("cni0")
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert!(
        gw.contains(&"10.88.0.1/16".to_string()),
        "cni0 addrs {gw:?}"
    );

    // --- busybox: create, start, exec, list ---------------------------------
    let cid = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(busybox_container("sleeper", &["sleep", "3600"])),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", cd.log_text()))
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", cd.log_text()));
    let exec = rt
        .exec_sync(ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec!["echo".into(), "hello".into()],
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            exec.exit_code,
            String::from_utf8_lossy(&exec.stdout).as_ref()
        ),
        (0, "hello\n"),
        "stderr: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
    // The container sees the address host-local gave the pod.
    let exec = rt
        .exec_sync(ExecSyncRequest {
            container_id: cid.clone(),
            cmd: vec!["ip".into(), "-4".into(), "addr".into(), "show".into()],
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8_lossy(&exec.stdout);
    assert!(
        text.contains(&format!("inet {ip}/16")),
        "pod interfaces: {text}"
    );
    let list = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    let c = list
        .iter()
        .find(|c| c.id == cid)
        .unwrap_or_else(|| panic!("{cid} not listed: {list:?}"));
    assert_eq!(c.state, ContainerState::ContainerRunning as i32);
    assert_eq!(c.pod_sandbox_id, pod_id);
    assert_eq!(c.image_ref, busybox.blobs().config.0);

    // --- teardown releases the address and the veth -------------------------
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        store.ip_names(),
        Vec::<String>::new(),
        "address not released"
    );
    cd.ns.wait_no_veths(Duration::from_secs(10));
    let pods = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    let containers = rt
        .list_containers(ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(containers.is_empty(), "containers left: {containers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_gzip_and_docker_archives() {
    let cd = Containerd::start("seedfmt");
    let dir = cd.tmp.path();
    let gz = oci::busybox_image().renamed("example.com/k8s-shims/gz-busybox:1");
    let gz_path = dir.join("busybox.oci.tar.gz");
    std::fs::write(&gz_path, oci::gzip(&gz.oci_archive(Naming::Annotated))).unwrap();
    let docker = oci::pause_image().renamed("example.com/k8s-shims/docker-pause:2");
    let docker_path = dir.join("pause.docker.tar");
    std::fs::write(&docker_path, docker.docker_archive()).unwrap();
    let docker_gz_path = dir.join("pause.docker.tar.gz");
    let docker_gz = oci::pause_image().renamed("example.com/k8s-shims/docker-pause:gz");
    std::fs::write(&docker_gz_path, oci::gzip(&docker_gz.docker_archive())).unwrap();

    let lines = cd.seed_each(&cd.socket, &[&gz_path, &docker_path, &docker_gz_path]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0], seed_line(&gz, "imported"));
    // A docker archive's image id is its config digest too.
    assert_eq!(lines[1], seed_line(&docker, "imported"));
    assert_eq!(lines[2], seed_line(&docker_gz, "imported"));
    for img in [&gz, &docker, &docker_gz] {
        assert_eq!(
            image_id(&cd.socket, &img.name).await,
            Some(img.blobs().config.0)
        );
    }
    // The gzip archive was unpacked: a container of it runs.
    let mut rt = runtime_client(channel(&cd.socket).await);
    let pause = oci::pause_image();
    cd.seed_each(&cd.socket, &[&pause.write_oci(dir, "pause.oci.tar")]);
    let pod_cfg = pod_config("gz-pod", &cd.pod_logs);
    let pod_id = run_pod(&mut rt, pod_cfg.clone(), || cd.log_text()).await;
    let mut cfg = busybox_container("gz", &["sleep", "3600"]);
    cfg.image.as_mut().unwrap().image = gz.name.clone();
    let cid = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(cfg),
            sandbox_config: Some(pod_cfg),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .unwrap();
    let exec = rt
        .exec_sync(ExecSyncRequest {
            container_id: cid,
            cmd: vec!["cat".into(), "/etc/group".into()],
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(String::from_utf8_lossy(&exec.stdout).starts_with("root:x:0:"));
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    assert!(cd.ipam().ip_names().is_empty());
}

/// h2 mode: client connections survive the outage and each call waits for
/// the runtime up to its deadline (or `--max-wait`), then gets UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_restart_while_serving_h2() {
    let mut cd = Containerd::start("restart");
    let dir = cd.tmp.path().to_path_buf();
    let proxy = Serve::start(
        &dir.join("cri.sock"),
        &cd.socket,
        &["--mode", "h2", "--max-wait", "30"],
    );
    // A second adapter that waits at most 1 s for calls without a deadline.
    let mut short = Serve::start(
        &dir.join("short.sock"),
        &cd.socket,
        &["--mode", "h2", "--max-wait", "1"],
    );
    let pause = oci::pause_image();
    cd.seed_each(&proxy.socket, &[&pause.write_oci(&dir, "pause.oci.tar")]);

    let ch = channel(&proxy.socket).await;
    let short_ch = channel(&short.socket).await;
    let version = |ch: tonic::transport::Channel, timeout: Option<Duration>| async move {
        let mut req = tonic::Request::new(VersionRequest {
            version: "v1".into(),
        });
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        runtime_client(ch).version(req).await
    };
    version(ch.clone(), None).await.unwrap();
    version(short_ch.clone(), None).await.unwrap();
    let pid = proxy.pid();

    cd.kill();
    // Without a deadline the adapter waits --max-wait, then UNAVAILABLE.
    let t = Instant::now();
    let err = version(short_ch.clone(), None).await.unwrap_err();
    let took = t.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "UNAVAILABLE after {took:?}, expected about --max-wait 1s"
    );
    // With a deadline: the call ends at its deadline.
    let t = Instant::now();
    let err = version(ch.clone(), Some(Duration::from_millis(800)))
        .await
        .unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        ),
        "{err:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "deadline 800ms took {took:?}"
    );
    // A call made during the outage succeeds once containerd is back.
    let pending = tokio::spawn(version(ch.clone(), Some(Duration::from_secs(30))));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!pending.is_finished(), "call did not wait for the runtime");
    let t = Instant::now();
    tokio::task::block_in_place(|| cd.spawn());
    let restarted = t.elapsed();
    let v = pending.await.unwrap().unwrap_or_else(|e| {
        panic!(
            "call during the outage failed after restart ({restarted:?}): {e:?}\n{}",
            proxy.log_text()
        )
    });
    assert_eq!(v.into_inner().runtime_name, "containerd");

    // After the restart everything works through the same adapter process.
    assert_eq!(proxy.pid(), pid);
    assert!(short.alive(), "second adapter died: {}", short.log_text());
    version(ch.clone(), None).await.unwrap();
    version(short_ch.clone(), None).await.unwrap();
    let images = image_client(ch.clone())
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == oci::PAUSE_NAME)),
        "{images:?}"
    );
    // And a pod runs.
    let mut rt = runtime_client(ch.clone());
    let pod_id = run_pod(&mut rt, pod_config("after-restart", &cd.pod_logs), || {
        format!("after the restart\n{}", cd.log_text())
    })
    .await;
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    assert!(cd.ipam().ip_names().is_empty());
}

/// Splice mode (the default): a runtime restart closes the spliced
/// connections; calls during the outage get UNAVAILABLE (or wait for the
/// runtime when they connect while it is down), and afterwards the same
/// adapter process serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_restart_while_serving_splice() {
    let mut cd = Containerd::start("restart-splice");
    let dir = cd.tmp.path().to_path_buf();
    let proxy = Serve::start(&dir.join("cri.sock"), &cd.socket, &["--max-wait", "30"]);
    let ch = channel(&proxy.socket).await;
    let version = |ch: tonic::transport::Channel, timeout: Option<Duration>| async move {
        let mut req = tonic::Request::new(VersionRequest {
            version: "v1".into(),
        });
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        runtime_client(ch).version(req).await
    };
    version(ch.clone(), None).await.unwrap();
    let pid = proxy.pid();

    cd.kill();
    let err = version(ch.clone(), Some(Duration::from_millis(800)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
        ),
        "{err:?}"
    );
    // A call made during the outage succeeds once containerd is back.
    let pending = tokio::spawn(version(ch.clone(), Some(Duration::from_secs(30))));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    tokio::task::block_in_place(|| cd.spawn());
    let v = pending
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("call during the outage: {e:?}\n{}", proxy.log_text()));
    assert_eq!(v.into_inner().runtime_name, "containerd");
    assert_eq!(proxy.pid(), pid);
    // Fresh connections and the old channel both work again.
    version(ch.clone(), None).await.unwrap();
    version(channel(&proxy.socket).await, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_and_render_cli() {
    let cd = Containerd::start("detect");
    let dir = cd.tmp.path();

    // render: byte-identical across runs; containerd accepted it (it runs).
    let second = dir.join("config-again.toml");
    let args = Containerd::render_args(
        &cd.root,
        &cd.state,
        &cd.socket,
        &cd.cni_bin_dir,
        &cd.cni_conf_dir,
        &second,
    );
    adapter_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let first = std::fs::read(&cd.config).unwrap();
    assert_eq!(
        first,
        std::fs::read(&second).unwrap(),
        "render not deterministic"
    );
    // And to stdout, the same bytes.
    let stdout_args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .take_while(|a| *a != "--output")
        .collect();
    assert_eq!(adapter_ok(&stdout_args).into_bytes(), first);
    let text = String::from_utf8(first).unwrap();
    for want in [
        "version = 2\n".to_string(),
        format!("root = \"{}\"\n", cd.root.display()),
        format!("state = \"{}\"\n", cd.state.display()),
        format!("[grpc]\n  address = \"{}\"\n", cd.socket.display()),
        format!("  sandbox_image = \"{}\"\n", oci::PAUSE_NAME),
        format!("  bin_dir = \"{}\"\n", cd.cni_bin_dir.display()),
        format!("  conf_dir = \"{}\"\n", cd.cni_conf_dir.display()),
    ] {
        assert!(
            text.contains(&want),
            "rendered config lacks {want:?}:\n{text}"
        );
    }
    // restrict_oom_score_adj follows CAP_SYS_RESOURCE in the bounding set.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let capbnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let restrict = capbnd & (1 << 24) == 0;
    assert!(
        text.contains(&format!("  restrict_oom_score_adj = {restrict}\n")),
        "restrict_oom_score_adj should be {restrict}:\n{text}"
    );
    // `wait` answered in Containerd::start; a config containerd rejected
    // would not have got there. Status through CRI confirms the network.
    let out = adapter_ok(&["wait", "--endpoint", &cd.endpoint(), "--timeout", "5"]);
    assert!(out.is_empty(), "wait printed {out:?}");

    // detect: JSON names containerd and its version.
    let cv = std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .unwrap();
    let cv = String::from_utf8_lossy(&cv.stdout).into_owned();
    let version = cv.split_whitespace().nth(2).unwrap().to_string();
    let json: serde_json::Value = serde_json::from_str(&adapter_ok(&[
        "detect",
        "--endpoint",
        &cd.endpoint(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "runtime": "containerd",
            "endpoint": cd.endpoint(),
            "runtimeName": "containerd",
            "runtimeVersion": version,
            "runtimeApiVersion": "v1",
        })
    );
    let text = adapter_ok(&[
        "detect",
        "--runtime",
        "containerd",
        "--endpoint",
        &cd.endpoint(),
    ]);
    assert_eq!(
        text,
        format!("containerd {version} at {} (CRI v1)\n", cd.endpoint())
    );
    // Asking for CRI-O at containerd's socket is refused.
    let err = adapter_fails(&["detect", "--runtime", "cri-o", "--endpoint", &cd.endpoint()]);
    assert!(err.contains("is containerd, not cri-o"), "{err}");
    // Through the adapter's own socket, detect sees the same runtime.
    let proxy = Serve::start(&dir.join("cri.sock"), &cd.socket, &[]);
    let json: serde_json::Value = serde_json::from_str(&adapter_ok(&[
        "detect",
        "--endpoint",
        &unix(&proxy.socket),
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["runtimeName"], "containerd");
    assert_eq!(json["runtimeVersion"], version.as_str());
}

/// `seed` verifies each image with CRI `ImageStatus`; containerd 1.6's CRI
/// plugin learns about new images from image events, asynchronously, so the
/// check must tolerate a short delay. Seeds many images one by one: every
/// run must succeed, and every image must be visible to CRI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_verification_waits_for_cri() {
    let cd = Containerd::start("seedrace");
    let dir = cd.tmp.path();
    let base = oci::pause_image();
    let mut failures = Vec::new();
    for i in 0..30 {
        let img = base.renamed(&format!("example.com/k8s-shims/race:{i}"));
        let path = img.write_oci(dir, &format!("race-{i}.tar"));
        let out = cd.seed(&cd.socket, &[&path]);
        if out.status.success() {
            assert_eq!(
                out.stdout_str(),
                format!("{}\n", seed_line(&img, "imported"))
            );
            continue;
        }
        // Did CRI see the image a moment later (a race), or never?
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = image_id(&cd.socket, &img.name).await;
        failures.push(format!(
            "seed #{i} failed: {} (500 ms later CRI ImageStatus finds it: {})",
            out.stderr_str().trim(),
            later.is_some()
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of 30 seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
