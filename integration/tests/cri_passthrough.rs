//! Passthrough fidelity of `cri-adapter serve` against a real containerd:
//! RPC paths the adapter (and our client) were never compiled with, backend
//! status errors, deadlines, and responses over tonic's 4 MiB default, each
//! compared with the same call made directly to containerd.
//!
//! Needs root, containerd, runc, gcc, busybox-static, iproute2 and a built
//! workspace (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use integration::cri::*;
use integration::oci;
use k8s_cri::v1::{
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, GetEventsRequest,
    ListPodSandboxRequest, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest, VersionRequest,
};
use tonic::codegen::http;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::ServiceExt;

/// What a gRPC error looks like on the wire, minus transport headers.
fn shape(s: &Status) -> (Code, String, Vec<u8>, Vec<String>) {
    let mut keys: Vec<String> = s
        .metadata()
        .keys()
        .map(|k| match k {
            tonic::metadata::KeyRef::Ascii(k) => k.as_str().to_string(),
            tonic::metadata::KeyRef::Binary(k) => k.as_str().to_string(),
        })
        .filter(|k| !matches!(k.as_str(), "content-type" | "date"))
        .collect();
    keys.sort();
    (
        s.code(),
        s.message().to_string(),
        s.details().to_vec(),
        keys,
    )
}

/// A RuntimeService client whose every call goes to `path` instead: the
/// request is still a valid protobuf message, sent on a path neither the
/// adapter nor k8s-cri knows.
fn client_on_path(
    ch: Channel,
    path: &'static str,
) -> k8s_cri::v1::runtime_service_client::RuntimeServiceClient<
    impl tonic::client::GrpcService<
            tonic::body::Body,
            Error = impl Into<tonic::codegen::StdError>,
            ResponseBody = impl tonic::codegen::Body<
                Data = tonic::codegen::Bytes,
                Error = impl Into<tonic::codegen::StdError> + Send,
            > + Send
                               + 'static,
        > + Clone,
> {
    let svc = ch.map_request(move |mut req: http::Request<tonic::body::Body>| {
        *req.uri_mut() = http::Uri::builder()
            .scheme("http")
            .authority("localhost")
            .path_and_query(path)
            .build()
            .unwrap();
        req
    });
    runtime_client(svc)
}

async fn seed_and_pod(
    cd: &Containerd,
    rt: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<Channel>,
    name: &str,
    annotations: HashMap<String, String>,
) -> String {
    let dir = cd.tmp.path();
    cd.seed_each(
        &cd.socket,
        &[&oci::pause_image().write_oci(dir, "pause.oci.tar")],
    );
    let mut cfg = pod_config(name, &cd.pod_logs);
    cfg.annotations = annotations;
    rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(cfg),
        runtime_handler: String::new(),
    })
    .await
    .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", cd.log_text()))
    .into_inner()
    .pod_sandbox_id
}

async fn remove_pod(
    rt: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<Channel>,
    id: &str,
) {
    rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

/// containerd plus `serve` in `mode` (every test runs in both modes).
fn start(tag: &str, mode: &str) -> (Containerd, Serve) {
    let cd = Containerd::start(&format!("{tag}-{mode}"));
    let proxy = Serve::start(
        &cd.tmp.path().join("cri.sock"),
        &cd.socket,
        &["--mode", mode],
    );
    (cd, proxy)
}

async fn unknown_rpc_paths_are_forwarded(mode: &str) {
    let (cd, proxy) = start("unknown", mode);
    let direct = channel(&cd.socket).await;
    let via = channel(&proxy.socket).await;
    // Control: the rewriting client reaches a known method through both.
    for ch in [direct.clone(), via.clone()] {
        let v = client_on_path(ch, "/runtime.v1.RuntimeService/Version")
            .version(VersionRequest::default())
            .await
            .unwrap();
        assert_eq!(v.into_inner().runtime_name, "containerd");
    }
    for path in [
        // cri-api 1.33+, not in k8s-cri 0.11 nor in containerd 1.6.
        "/runtime.v1.RuntimeService/UpdatePodSandboxResources",
        // cri-api 1.36 server-streaming list.
        "/runtime.v1.RuntimeService/StreamContainers",
        "/runtime.v1.ImageService/StreamImages",
        // Made up.
        "/runtime.v1.RuntimeService/NoSuchMethod",
        "/runtime.v1.NoSuchService/Version",
        "/k8s.shims.Test/Anything",
    ] {
        let d = client_on_path(direct.clone(), path)
            .version(VersionRequest::default())
            .await
            .unwrap_err();
        let p = client_on_path(via.clone(), path)
            .version(VersionRequest::default())
            .await
            .unwrap_err();
        assert_eq!(d.code(), Code::Unimplemented, "{path} direct: {d:?}");
        // containerd's own wording names what it does not know.
        let (service, method) = path[1..].split_once('/').unwrap();
        assert!(
            d.message().contains(method) || d.message().contains(service),
            "{path}: {d:?}"
        );
        eprintln!("{path}: {:?} {:?}", p.code(), p.message());
        assert_eq!(
            shape(&p),
            shape(&d),
            "{path}: through the adapter vs direct"
        );
    }
    // A server-streaming RPC containerd 1.6 lacks (GetContainerEvents).
    let d = runtime_client(direct.clone())
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap_err();
    let p = runtime_client(via.clone())
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap_err();
    assert_eq!(d.code(), Code::Unimplemented, "{d:?}");
    assert_eq!(shape(&p), shape(&d));
}

async fn backend_errors_arrive_unchanged(mode: &str) {
    let (cd, proxy) = start("errors", mode);
    let direct = runtime_client(channel(&cd.socket).await);
    let via = runtime_client(channel(&proxy.socket).await);
    let calls = |mut c: k8s_cri::v1::runtime_service_client::RuntimeServiceClient<Channel>| async move {
        let mut out = Vec::new();
        out.push(
            c.container_status(ContainerStatusRequest {
                container_id: "no-such-container".into(),
                verbose: false,
            })
            .await
            .unwrap_err(),
        );
        out.push(
            c.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: "no-such-pod".into(),
                verbose: true,
            })
            .await
            .unwrap_err(),
        );
        out.push(
            c.exec_sync(ExecSyncRequest {
                container_id: "no-such-container".into(),
                cmd: vec!["true".into()],
                timeout: 1,
            })
            .await
            .unwrap_err(),
        );
        // Invalid argument: a pod without metadata.
        out.push(
            c.run_pod_sandbox(RunPodSandboxRequest::default())
                .await
                .unwrap_err(),
        );
        out
    };
    let d = calls(direct).await;
    let p = calls(via).await;
    assert_eq!(d[0].code(), Code::NotFound, "{:?}", d[0]);
    assert_eq!(d[1].code(), Code::NotFound, "{:?}", d[1]);
    assert_eq!(d[2].code(), Code::NotFound, "{:?}", d[2]);
    assert_ne!(d[3].code(), Code::Ok);
    for (d, p) in d.iter().zip(&p) {
        assert_eq!(shape(p), shape(d), "through the adapter vs direct");
    }
}

async fn deadlines_are_honoured(mode: &str) {
    let (mut cd, proxy) = start("deadline", mode);
    let ch = channel(&proxy.socket).await;
    let mut rt = runtime_client(ch.clone());
    let pod = seed_and_pod(&cd, &mut rt, "deadline-pod", HashMap::new()).await;
    cd.seed_each(
        &cd.socket,
        &[&oci::busybox_image().write_oci(cd.tmp.path(), "busybox.oci.tar")],
    );
    let cid = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(busybox_container("sleeper", &["sleep", "3600"])),
            sandbox_config: Some(pod_config("deadline-pod", &cd.pod_logs)),
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

    // A call that outlives its deadline ends at the deadline...
    let mut req = tonic::Request::new(ExecSyncRequest {
        container_id: cid.clone(),
        cmd: vec!["sleep".into(), "7".into()],
        timeout: 0,
    });
    req.set_timeout(Duration::from_secs(1));
    let t = Instant::now();
    let err = rt.exec_sync(req).await.unwrap_err();
    let took = t.elapsed();
    eprintln!("exec deadline: {err:?} after {took:?}");
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "1 s deadline took {took:?}"
    );
    // ...and containerd saw it too: the exec'd `sleep 7` is gone well before
    // it would have finished by itself.
    let start = Instant::now();
    loop {
        let ps = rt
            .exec_sync(ExecSyncRequest {
                container_id: cid.clone(),
                cmd: vec!["ps".into(), "-o".into(), "args".into()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        let text = String::from_utf8_lossy(&ps.stdout).into_owned();
        // Control: the format shows the container's own `sleep 3600`.
        assert!(text.lines().any(|l| l.trim() == "sleep 3600"), "{text}");
        if !text.lines().any(|l| l.trim() == "sleep 7") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "the exec outlived its deadline in containerd: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    remove_pod(&mut rt, &pod).await;

    // While containerd is down a call waits at most until its deadline.
    cd.kill();
    for ms in [300u64, 1500] {
        let mut req = tonic::Request::new(VersionRequest::default());
        req.set_timeout(Duration::from_millis(ms));
        let t = Instant::now();
        let err = runtime_client(ch.clone()).version(req).await.unwrap_err();
        let took = t.elapsed();
        eprintln!("outage deadline {ms} ms: {err:?} after {took:?}");
        assert!(
            matches!(
                err.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
            ),
            "{err:?}"
        );
        assert!(
            took < Duration::from_millis(ms + 1000),
            "{ms} ms deadline took {took:?}"
        );
    }
    tokio::task::block_in_place(|| cd.spawn());
}

async fn responses_over_4_mib_pass(mode: &str) {
    let (cd, proxy) = start("large", mode);
    let direct_ch = channel(&cd.socket).await;
    let via_ch = channel(&proxy.socket).await;
    let mut rt = runtime_client(via_ch.clone());
    // Five annotations of 1 MiB each (distinct content, so truncation or
    // reordering would show).
    let annotations: HashMap<String, String> = (0..5u8)
        .map(|i| {
            let value: String = (0..(1usize << 20))
                .map(|j| char::from(b'a' + ((j * 7 + usize::from(i) * 13) % 26) as u8))
                .collect();
            (format!("k8s-shims.test/big-{i}"), value)
        })
        .collect();
    let pod = seed_and_pod(&cd, &mut rt, "large-pod", annotations.clone()).await;

    // tonic's default 4 MiB limit refuses the response: it is over 4 MiB.
    let err = k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(via_ch.clone())
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .unwrap_err();
    let found: usize = err
        .message()
        .split("found ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected error for a large response: {err:?}"));
    assert!(found > 5 << 20, "response is only {found} bytes");

    // With a 32 MiB limit it arrives, identical to the direct answer.
    let list = |ch: Channel| async move {
        runtime_client(ch)
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
    };
    let d = list(direct_ch.clone()).await;
    let p = list(via_ch.clone()).await;
    assert_eq!(p, d);
    assert_eq!(p.items.len(), 1);
    for (k, v) in &annotations {
        assert!(
            p.items[0].annotations.get(k) == Some(v),
            "annotation {k} damaged through the adapter"
        );
    }
    let status = |ch: Channel, id: String| async move {
        runtime_client(ch)
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    };
    let mut d = status(direct_ch, pod.clone()).await;
    let mut p = status(via_ch, pod.clone()).await;
    assert_eq!(p.annotations, annotations);
    // created_at and the rest are the same object; compare all of it.
    d.annotations.clear();
    p.annotations.clear();
    assert_eq!(p, d);
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_rpc_paths_are_forwarded_splice() {
    unknown_rpc_paths_are_forwarded("splice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_rpc_paths_are_forwarded_h2() {
    unknown_rpc_paths_are_forwarded("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_arrive_unchanged_splice() {
    backend_errors_arrive_unchanged("splice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_arrive_unchanged_h2() {
    backend_errors_arrive_unchanged("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_honoured_splice() {
    deadlines_are_honoured("splice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_honoured_h2() {
    deadlines_are_honoured("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_4_mib_pass_splice() {
    responses_over_4_mib_pass("splice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_4_mib_pass_h2() {
    responses_over_4_mib_pass("h2").await;
}
