//! `cri-adapter serve` with clients that misbehave or are old, against a
//! real containerd: grpc-go's socket-path `:authority` (crictl/critest
//! 1.26, kubelet up to 1.30), a client that opens streams and never reads,
//! file-descriptor exhaustion, SIGTERM with calls in flight and an upstream
//! that is no socket.
//!
//! Needs root, containerd, runc and a built workspace.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use integration::cri::*;
use integration::h2raw::{RawH2, Reply};
use integration::oci::{self, Entry};
use k8s_cri::v1::VersionRequest;

const VERSION: &str = "/runtime.v1.RuntimeService/Version";
const CONTENT_READ: &str = "/containerd.services.content.v1.Content/Read";

/// `Version` with the given `:authority`, on a fresh raw connection.
fn raw_version(socket: &Path, authority: &str) -> (Reply, Reply) {
    let mut c = RawH2::connect(socket, 65_535);
    let a = c.start_call(authority, VERSION, &[], &[]);
    let first = c.finish(a);
    // A second call on the same connection: its header block refers to the
    // HPACK dynamic table the first one filled.
    let b = c.start_call(authority, VERSION, &[], &[]);
    (first, c.finish(b))
}

fn assert_version_ok(r: &Reply, what: &str) {
    assert_eq!(r.reset, None, "{what}: stream reset");
    assert_eq!(r.field(":status"), Some("200"), "{what}: {r:?}");
    assert_eq!(r.field("grpc-status"), Some("0"), "{what}: {r:?}");
    assert!(
        String::from_utf8_lossy(&r.data).contains("containerd"),
        "{what}: {:?}",
        r.data
    );
}

#[test]
fn both_modes_accept_the_socket_path_authority_of_old_grpc_go_clients() {
    let cd = Containerd::start("authority");
    let authority = cd.socket.to_str().unwrap().to_string();
    let (direct, _) = raw_version(&cd.socket, &authority);
    assert_version_ok(&direct, "containerd directly");
    for mode in ["h2", "splice"] {
        let proxy = Serve::start(
            &cd.tmp.path().join(format!("cri-{mode}.sock")),
            &cd.socket,
            &["--mode", mode],
        );
        for auth in [authority.as_str(), "localhost"] {
            let (a, b) = raw_version(&proxy.socket, auth);
            assert_version_ok(&a, &format!("{mode} {auth}: first call"));
            assert_version_ok(&b, &format!("{mode} {auth}: second call"));
            assert_eq!(a.data, direct.data, "{mode}: same response as direct");
        }
    }
}

/// A `ReadContentRequest` for the whole of `digest`.
fn read_content(digest: &str) -> Vec<u8> {
    let mut m = vec![0x0a, digest.len() as u8];
    m.extend_from_slice(digest.as_bytes());
    m
}

/// Seeds an image whose layer is `size` bytes of incompressible data and
/// returns the layer's digest.
fn seed_big_blob(cd: &Containerd, size: usize) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut img = oci::pause_image().renamed("example.test/big:1");
    img.layer = oci::layer_tar(&[Entry::File {
        path: "blob".into(),
        data,
        mode: 0o644,
    }]);
    let digest = img.blobs().layer.0.clone();
    let archive = img.write_oci(cd.tmp.path(), "big.oci.tar");
    cd.seed_each(&cd.socket, &[&archive]);
    digest
}

#[test]
fn a_client_that_never_reads_stalls_no_other_client() {
    let cd = Containerd::start("stall");
    let digest = seed_big_blob(&cd, 6 << 20);
    let ns = [("containerd-namespace", "k8s.io")];
    for mode in ["h2", "splice"] {
        let proxy = Serve::start(
            &cd.tmp.path().join(format!("stall-{mode}.sock")),
            &cd.socket,
            &["--mode", mode],
        );
        // Three whole-blob reads, never read: every window they are given
        // fills up and stays full.
        let mut stalled = RawH2::connect(&proxy.socket, 65_535);
        for _ in 0..3 {
            stalled.start_call("localhost", CONTENT_READ, &ns, &read_content(&digest));
        }
        std::thread::sleep(Duration::from_millis(500));
        // Another client still gets small calls answered at once...
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut c = runtime_client(channel(&proxy.socket).await);
            for i in 0..5 {
                let call = c.version(VersionRequest::default());
                tokio::time::timeout(Duration::from_secs(3), call)
                    .await
                    .unwrap_or_else(|_| {
                        panic!("{mode}: Version #{i} timed out while a client stalls")
                    })
                    .unwrap_or_else(|e| panic!("{mode}: Version #{i} while a client stalls: {e}"));
            }
        });
        // ...and a whole read of the same blob completes.
        let started = Instant::now();
        let mut reader = RawH2::connect(&proxy.socket, 65_535);
        let id = reader.start_call("localhost", CONTENT_READ, &ns, &read_content(&digest));
        let r = reader.finish(id);
        assert_eq!(r.field("grpc-status"), Some("0"), "{mode}: {r:?}");
        assert!(
            r.data.len() > 6 << 20,
            "{mode}: read {} bytes",
            r.data.len()
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{mode}: the read took {:?}",
            started.elapsed()
        );
        drop(stalled);
    }
}

#[test]
fn out_of_file_descriptors_serve_backs_off_and_recovers() {
    let cd = Containerd::start("nofile");
    // A soft limit below the hard one is raised at start.
    let raised = Serve::start_under(
        &["prlimit", "--nofile=64:4096"],
        &cd.tmp.path().join("raised.sock"),
        &cd.socket,
        &[],
    );
    assert_eq!(raised.nofile(), ("4096".into(), "4096".into()));
    drop(raised);
    for mode in ["splice", "h2"] {
        let proxy = Serve::start_under(
            &["prlimit", "--nofile=64:64"],
            &cd.tmp.path().join(format!("nofile-{mode}.sock")),
            &cd.socket,
            &["--mode", mode],
        );
        // More idle connections than descriptors: accept fails with EMFILE
        // while they stay open.
        let idle: Vec<_> = (0..100)
            .filter_map(|_| std::os::unix::net::UnixStream::connect(&proxy.socket).ok())
            .collect();
        assert!(idle.len() > 64, "{mode}: only {} connections", idle.len());
        std::thread::sleep(Duration::from_millis(500));
        let before = proxy.cpu_time();
        std::thread::sleep(Duration::from_secs(2));
        let spent = proxy.cpu_time() - before;
        assert!(
            spent < Duration::from_millis(300),
            "{mode}: {spent:?} of CPU in 2 s while out of descriptors"
        );
        let log = proxy.log_text();
        assert!(
            log.contains("accept failed; pausing new connections"),
            "{mode}: {log}"
        );
        assert!(log.len() < 64 << 10, "{mode}: {} bytes of log", log.len());
        drop(idle);
        // Descriptors free again: calls are answered.
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let call = async {
                let mut c = runtime_client(channel(&proxy.socket).await);
                c.version(VersionRequest::default()).await
            };
            tokio::time::timeout(Duration::from_secs(10), call)
                .await
                .unwrap_or_else(|_| panic!("{mode}: no answer once descriptors were free"))
                .unwrap_or_else(|e| panic!("{mode}: Version: {e}"));
        });
    }
}

#[test]
fn sigterm_lets_calls_in_flight_finish() {
    let cd = Containerd::start("drain");
    let digest = seed_big_blob(&cd, 2 << 20);
    let ns = [("containerd-namespace", "k8s.io")];
    for mode in ["splice", "h2"] {
        let mut proxy = Serve::start(
            &cd.tmp.path().join(format!("drain-{mode}.sock")),
            &cd.socket,
            &["--mode", mode, "--drain-timeout", "20"],
        );
        // An idle connection is closed at once, not kept to the end.
        let mut idle = RawH2::connect(&proxy.socket, 65_535);
        let v = idle.start_call("localhost", VERSION, &[], &[]);
        assert_version_ok(&idle.finish(v), mode);
        // A whole-blob read, taken slowly: in flight when SIGTERM comes.
        let mut slow = RawH2::connect(&proxy.socket, 65_535);
        let id = slow.start_call("localhost", CONTENT_READ, &ns, &read_content(&digest));
        let mut first = 0;
        while first == 0 {
            let f = slow.read_frame();
            if f.kind == integration::h2raw::DATA && f.stream == id {
                first = f.payload.len();
            }
        }
        proxy.signal(nix::sys::signal::Signal::SIGTERM);
        let t = Instant::now();
        let goaway = idle.until_closed();
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{mode}: the idle connection stayed open {:?}",
            t.elapsed()
        );
        assert_eq!(goaway, mode == "h2", "{mode}: GOAWAY before closing");
        assert!(
            std::os::unix::net::UnixStream::connect(&proxy.socket).is_err(),
            "{mode}: new connections are refused while draining"
        );
        assert!(proxy.alive(), "{mode}: exited with a call in flight");
        let r = slow.finish(id);
        assert_eq!(r.reset, None, "{mode}");
        assert_eq!(r.field("grpc-status"), Some("0"), "{mode}: {r:?}");
        assert!(
            first + r.data.len() > 2 << 20,
            "{mode}: {} bytes",
            first + r.data.len()
        );
        let st = proxy.wait_exit(Duration::from_secs(5));
        assert!(
            st.is_some_and(|s| s.success()),
            "{mode}: exit {st:?}: {}",
            proxy.log_text()
        );
    }
}

#[test]
fn an_upstream_that_is_no_socket_is_refused_at_start() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    for (up, kind) in [
        (&file, "a regular file"),
        (&d.path().to_path_buf(), "a directory"),
    ] {
        let listen = d.path().join("cri.sock");
        let err = adapter_fails(&[
            "serve",
            "--listen",
            listen.to_str().unwrap(),
            "--upstream",
            &unix(up),
        ]);
        assert!(
            err.contains(&format!("is {kind}, not the runtime's socket")),
            "{err}"
        );
        assert!(!listen.exists(), "the socket was created");
    }
}

/// A parent that blocks SIGTERM (the mask survives exec; a benchmark of ours
/// did) must not make serve unstoppable: serve unblocks it at start.
#[test]
fn sigterm_stops_serve_even_when_the_parent_blocked_it() {
    use nix::sys::signal::{SigSet, Signal};
    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("runtime.sock");
    let _runtime = std::os::unix::net::UnixListener::bind(&upstream).unwrap();
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    // Blocked in this thread only, while serve is spawned from it.
    let mut proxy = std::thread::scope(|s| {
        s.spawn(|| {
            term.thread_block().unwrap();
            Serve::start(&dir.path().join("blocked.sock"), &upstream, &[])
        })
        .join()
        .unwrap()
    });
    proxy.signal(Signal::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "serve did not stop on SIGTERM: {status:?}\n{}",
        proxy.log_text()
    );
}
