//! `cri-adapter` in front of a real CRI-O: render → CRI-O starts with that
//! drop-in → detect → wait (not ready without a CNI config, steadily ready
//! with one) → seed into CRI-O's non-default store → a pod on our bridge and
//! host-local gets its address and releases it.
//!
//! CRI-O is not packaged for Debian 12, so these tests need `CRIO_BIN` (see
//! `integration::crio`) and are ignored without it; run them with
//! `CRIO_BIN=/path/to/crio cargo test -p integration --test crio_e2e --
//! --include-ignored`. Also needs root, runc, conmon, skopeo, gcc,
//! busybox-static, iproute2 and a built workspace.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use integration::cri::*;
use integration::crio::{crio_bin, Crio};
use integration::oci;
use k8s_cri::v1::{
    Capability, ContainerConfig, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    ImageStatusRequest, LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, RemovePodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};

fn need_crio() {
    assert!(
        crio_bin().is_some(),
        "set CRIO_BIN to a CRI-O binary (this test is meant to be run with --include-ignored only then)"
    );
}

#[track_caller]
fn assert_mentions(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "lacks {w:?}: {text}");
    }
}

/// The rendered drop-in alone makes CRI-O start; without `conmon_cgroup`
/// (what `render` wrote before) CRI-O refuses to start.
#[test]
#[ignore = "needs CRIO_BIN: a real CRI-O"]
fn rendered_drop_in_starts_crio_and_old_one_does_not() {
    need_crio();
    // The old output: no conmon_cgroup, no runc table.
    let mut old = Crio::prepare("crio-old");
    let ours = old.conf_dir.join("10-k8s-shims.conf");
    let text = std::fs::read_to_string(&ours).unwrap();
    let cut = text.find("[crio.runtime.runtimes.runc]").unwrap();
    let without: String = text[..cut]
        .lines()
        .filter(|l| !l.starts_with("conmon_cgroup"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&ours, without).unwrap();
    old.spawn();
    let start = Instant::now();
    while old.alive() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!old.alive(), "CRI-O started without conmon_cgroup");
    assert_mentions(
        &old.log_text(),
        &["cgroupfs manager conmon cgroup should be 'pod' or empty"],
    );
    drop(old);

    let mut c = Crio::prepare("crio-new");
    c.spawn();
    assert!(c.alive(), "CRI-O did not start:\n{}", c.log_text());
    let out = adapter_ok(&["detect", "--endpoint", &c.endpoint(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["runtime"], "cri-o", "{out}");
    assert_eq!(v["runtimeName"], "cri-o", "{out}");
    eprintln!("CRI-O version: {}", v["runtimeVersion"]);
    // serve in front of it, both modes, with --runtime auto and the
    // upstream given: Version answers through it.
    for mode in ["splice", "h2"] {
        let listen = c.tmp.path().join(format!("serve-{mode}.sock"));
        let s = Serve::start(&listen, &c.socket, &["--runtime", "auto", "--mode", mode]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name = rt.block_on(async {
            runtime_client(channel(&s.socket).await)
                .version(k8s_cri::v1::VersionRequest::default())
                .await
                .unwrap()
                .into_inner()
                .runtime_name
        });
        assert_eq!(name, "cri-o", "serve --mode {mode}");
    }
}

/// wait, seed and a pod against a real CRI-O.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CRIO_BIN: a real CRI-O"]
async fn wait_seed_and_pod() {
    need_crio();
    let mut c = Crio::prepare("crio-e2e");
    c.spawn();
    assert!(c.alive(), "CRI-O did not start:\n{}", c.log_text());

    // No CNI config yet: CRI-O says NetworkReady=true until its first CNI
    // poll; `wait` must not believe it.
    let out = adapter(&[
        "wait",
        "--runtime",
        "cri-o",
        "--endpoint",
        &c.endpoint(),
        "--timeout",
        "3",
    ]);
    assert!(
        !out.status.success(),
        "wait reported a CRI-O without CNI config ready"
    );
    assert_mentions(&out.stderr_str(), &["condition NetworkReady is false"]);
    c.write_conflist();
    let t = Instant::now();
    adapter_ok(&[
        "wait",
        "--runtime",
        "auto",
        "--endpoint",
        &c.endpoint(),
        "--timeout",
        "30",
    ]);
    assert!(t.elapsed() >= Duration::from_secs(1), "no settle time");

    // seed: CRI-O's store is vfs at a non-default root; only asking CRI-O
    // finds it. stdout holds only the result lines.
    let dir = c.tmp.path().join("archives");
    std::fs::create_dir_all(&dir).unwrap();
    let pause = oci::pause_image().write_oci(&dir, "pause.oci.tar");
    let busybox = dir.join("busybox.docker.tar");
    std::fs::write(&busybox, oci::busybox_image().docker_archive()).unwrap();
    let out = adapter(&[
        "seed",
        "--runtime",
        "auto",
        "--endpoint",
        &c.endpoint(),
        pause.to_str().unwrap(),
        busybox.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "seed failed: {}\n--- CRI-O ---\n{}",
        out.stderr_str(),
        c.log_text()
    );
    let stdout = out.stdout_str();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "stdout: {stdout}");
    assert!(
        lines[0].starts_with(&format!("{} ", oci::PAUSE_NAME)),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!("{} ", oci::BUSYBOX_NAME)),
        "{stdout}"
    );
    assert!(lines.iter().all(|l| l.ends_with(" imported")), "{stdout}");
    assert!(
        c.storage_root.join("vfs-images").is_dir(),
        "nothing in CRI-O's store {}",
        c.storage_root.display()
    );
    let st = image_client(channel(&c.socket).await)
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: oci::BUSYBOX_NAME.into(),
                ..ImageSpec::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(st.image.is_some(), "CRI ImageStatus does not find busybox");
    // Again: present, nothing copied.
    let again = adapter_ok(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &c.endpoint(),
        pause.to_str().unwrap(),
    ]);
    assert!(again.trim_end().ends_with(" present"), "{again}");

    // A pod on our bridge + host-local.
    let mut rt = runtime_client(channel(&c.socket).await);
    // PID namespace per container: CRI-O then runs no infra container,
    // whose oom_score_adj -998 fails on a host without CAP_SYS_RESOURCE.
    let mut config = pod_config("crio-pod", &c.pod_logs);
    let pod_logs = config.log_directory.clone();
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Container as i32,
                ..NamespaceOption::default()
            }),
            ..LinuxSandboxSecurityContext::default()
        }),
        ..LinuxPodSandboxConfig::default()
    });
    let config_linux = config.linux.clone();
    let pod = run_pod(&mut rt, config, || {
        format!("--- CRI-O ---\n{}", c.log_text())
    })
    .await;
    let status = pod_status(&mut rt, &pod).await;
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    assert!(ip.starts_with("10.88."), "pod IP {ip:?}");
    assert_eq!(c.ipam().ip_names(), vec![ip.clone()]);
    // A busybox container in it sees that address and reaches the gateway.
    let sandbox_config = {
        let mut s = pod_config("crio-pod", &c.pod_logs);
        s.log_directory = pod_logs;
        s.linux = config_linux.clone();
        s
    };
    let cid = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(ContainerConfig {
                linux: Some(LinuxContainerConfig {
                    security_context: Some(LinuxContainerSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            pid: NamespaceMode::Container as i32,
                            ..NamespaceOption::default()
                        }),
                        // CRI-O's default capabilities lack NET_RAW (ping).
                        capabilities: Some(Capability {
                            add_capabilities: vec!["NET_RAW".into()],
                            ..Capability::default()
                        }),
                        ..LinuxContainerSecurityContext::default()
                    }),
                    ..LinuxContainerConfig::default()
                }),
                ..busybox_container("sleeper", &["sleep", "3600"])
            }),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n--- CRI-O ---\n{}", c.log_text()))
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest {
        container_id: cid.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer: {e}\n--- CRI-O ---\n{}", c.log_text()));
    let exec = |cmd: &[&str]| ExecSyncRequest {
        container_id: cid.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 20,
    };
    let out = rt
        .exec_sync(exec(&["ip", "-4", "addr", "show", "eth0"]))
        .await
        .unwrap()
        .into_inner();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("inet {ip}/16")), "eth0: {text}");
    let out = rt
        .exec_sync(exec(&["ping", "-c", "1", "-W", "5", "10.88.0.1"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        out.exit_code,
        0,
        "ping gateway: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
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
    assert!(c.ipam().ip_names().is_empty(), "address {ip} not released");
}

/// Every file name under `dir`, recursively (the store's state).
fn tree(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.insert(p.to_string_lossy().into_owned());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            }
        }
    }
    out
}

fn small_image(name: &str) -> oci::ImageDef {
    oci::ImageDef {
        name: name.into(),
        entrypoint: Vec::new(),
        cmd: vec!["/marker".into()],
        env: Vec::new(),
        layer: oci::layer_tar(&[oci::Entry::File {
            path: "marker".into(),
            data: format!("{name}\n").into_bytes(),
            mode: 0o644,
        }]),
        diff_id_override: None,
    }
}

/// gzip docker archives and multi-image docker and OCI archives import
/// every image; an archive whose second layer is not a tar fails and leaves
/// CRI-O's store as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CRIO_BIN: a real CRI-O"]
async fn seed_every_archive_format() {
    need_crio();
    let mut c = Crio::prepare("crio-fmt");
    c.spawn();
    assert!(c.alive(), "CRI-O did not start:\n{}", c.log_text());
    adapter_ok(&[
        "wait",
        "--runtime",
        "cri-o",
        "--endpoint",
        &c.endpoint(),
        "--no-network",
        "--timeout",
        "30",
    ]);
    let dir = c.tmp.path().join("archives");
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (1..=5)
        .map(|i| format!("example.com/k8s-shims/fmt{i}:v{i}"))
        .collect();
    let img = |i: usize| small_image(&names[i]);
    let write = |file: &str, data: Vec<u8>| {
        let p = dir.join(file);
        std::fs::write(&p, data).unwrap();
        p
    };
    let gz_docker = write("one.docker.tar.gz", oci::gzip(&img(0).docker_archive()));
    let multi_docker = write(
        "two.docker.tar",
        oci::multi_docker_archive(&[img(1), img(2)]),
    );
    let multi_oci = write(
        "two.oci.tar.gz",
        oci::gzip(&oci::multi_oci_archive(&[img(3), img(4)])),
    );
    let out = adapter(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &c.endpoint(),
        gz_docker.to_str().unwrap(),
        multi_docker.to_str().unwrap(),
        multi_oci.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "seed failed: {}\n--- CRI-O ---\n{}",
        out.stderr_str(),
        c.log_text()
    );
    let stdout = out.stdout_str();
    let got: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        got,
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        "{stdout}"
    );
    assert!(stdout.lines().all(|l| l.ends_with(" imported")), "{stdout}");
    let mut images = image_client(channel(&c.socket).await);
    for n in &names {
        let st = images
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: n.clone(),
                    ..ImageSpec::default()
                }),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(st.image.is_some(), "CRI ImageStatus does not find {n}");
    }

    // Second layer not a tar: refused before the store is touched.
    let before = tree(&c.storage_root);
    let first = oci::layer_tar(&[oci::Entry::File {
        path: "first".into(),
        data: format!("first layer {}\n", std::process::id()).into_bytes(),
        mode: 0o644,
    }]);
    let bad = write(
        "bad.docker.tar",
        oci::two_layer_docker_archive("example.com/k8s-shims/bad:1", &first, &vec![b'x'; 4096]),
    );
    let out = adapter(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &c.endpoint(),
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "a bad archive was imported");
    assert_mentions(&out.stderr_str(), &["layer 1", "tar", "bad.docker.tar"]);
    assert_eq!(tree(&c.storage_root), before, "the store changed");
}

/// With `--restrict-oom-score-adj true --runc-wrapper`, a pod with an infra
/// container (oom_score_adj -998) starts even on a host without
/// CAP_SYS_RESOURCE: the wrapper clamps the score to its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CRIO_BIN: a real CRI-O"]
async fn oom_clamping_wrapper_lets_infra_containers_start() {
    need_crio();
    let mut c = Crio::prepare("crio-oom");
    let wrapper = c.render_with_wrapper();
    let conf = std::fs::read_to_string(c.conf_dir.join("10-k8s-shims.conf")).unwrap();
    assert!(
        conf.contains(&format!("runtime_path = \"{}\"", wrapper.display())),
        "{conf}"
    );
    c.write_conflist();
    c.spawn();
    assert!(c.alive(), "CRI-O did not start:\n{}", c.log_text());
    adapter_ok(&["wait", "--endpoint", &c.endpoint(), "--timeout", "30"]);
    let dir = c.tmp.path().join("archives");
    std::fs::create_dir_all(&dir).unwrap();
    let pause = oci::pause_image().write_oci(&dir, "pause.oci.tar");
    adapter_ok(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &c.endpoint(),
        pause.to_str().unwrap(),
    ]);
    // Default namespace options: a pod-level PID namespace, so CRI-O runs
    // an infra container with oom_score_adj -998.
    let mut rt = runtime_client(channel(&c.socket).await);
    let pod = run_pod(&mut rt, pod_config("oom-pod", &c.pod_logs), || {
        format!("--- CRI-O ---\n{}", c.log_text())
    })
    .await;
    let st = pod_status(&mut rt, &pod).await;
    assert_eq!(st.state, k8s_cri::v1::PodSandboxState::SandboxReady as i32);
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
}
