#![allow(clippy::unwrap_used)]
//! `cni-bench relay SOCKET UPSTREAM`, the cri bench's bare relay (the floor of any user-space
//! CRI hop), over real unix sockets: bytes go both ways unchanged, one upstream connection per
//! client, a request and a response larger than the socket buffers arrive whole, EOF on either
//! side closes the other, an upstream that is missing closes the client while the relay keeps
//! serving, SIGTERM stops it even when spawned with SIGTERM blocked (as the bench does), and
//! bad arguments are an error.
//!
//! Run: `cargo test -p integration --test cni_bench_relay`

use std::io::{ErrorKind, Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BENCH: &str = env!("CARGO_BIN_EXE_cni-bench");
const TIMEOUT: Duration = Duration::from_secs(10);

/// A running relay, killed and reaped when dropped.
struct Relay {
    child: Child,
    socket: PathBuf,
}

impl Relay {
    fn start(dir: &Path, upstream: &str) -> Relay {
        let socket = dir.join("relay.sock");
        let child = Command::new(BENCH)
            .arg("relay")
            .arg(&socket)
            .arg(upstream)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The socket is listening once it exists (bind and listen come together).
        let deadline = Instant::now() + TIMEOUT;
        while !socket.exists() {
            assert!(Instant::now() < deadline, "no {}", socket.display());
            std::thread::sleep(Duration::from_millis(5));
        }
        Relay { child, socket }
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s
    }

    /// Asserts it is still running, then stops it and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        assert!(self.child.try_wait().unwrap().is_none(), "the relay exited");
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        err
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The size of the large request and response: more than the socket buffers hold.
const LARGE: usize = 4 << 20;

/// The large payload.
fn large() -> Vec<u8> {
    (0..LARGE).map(|i| (i % 251) as u8).collect()
}

/// An upstream that echoes what each connection sends and, at the connection's end, reports
/// how many bytes it got. Messages: `big` is answered with [`large`]; `bye` is echoed, then the
/// connection closed; `sink` as the first message is echoed, and all after it only counted.
fn echo_upstream(path: &Path) -> mpsc::Receiver<usize> {
    let listener = UnixListener::bind(path).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 32 << 10];
                let (mut total, mut sink) = (0, false);
                loop {
                    let n = match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let msg = &buf[..n];
                    if sink {
                        total += n;
                        continue;
                    }
                    sink = total == 0 && msg == b"sink";
                    total += n;
                    let reply = if msg == b"big" { large() } else { msg.to_vec() };
                    if conn.write_all(&reply).is_err() || msg == b"bye" {
                        break;
                    }
                }
                let _ = tx.send(total);
            });
        }
    });
    rx
}

/// Reads until EOF; fails on a timeout.
fn read_to_eof(s: &mut UnixStream) -> Vec<u8> {
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    rest
}

#[test]
fn relays_both_ways_per_connection_and_closes_both_ends() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.sock");
    let done = echo_upstream(&up);
    let relay = Relay::start(dir.path(), &format!("unix://{}", up.display()));

    // Three clients at once: a short exchange, a large response, a large request.
    let mut small = relay.connect();
    let mut response = relay.connect();
    let mut request = relay.connect();
    // (One after the other: a write the relay finishes in blocking mode holds every
    // connection until its reader reads.)
    small.write_all(b"hello").unwrap();
    response.write_all(b"big").unwrap();
    let mut got = vec![0u8; LARGE];
    response.read_exact(&mut got).unwrap();
    assert!(got == large(), "the large response differs");
    request.write_all(b"sink").unwrap();
    let mut ack = [0u8; 4];
    request.read_exact(&mut ack).unwrap();
    assert_eq!(&ack, b"sink");
    request.write_all(&large()).unwrap();
    let mut reply = [0u8; 5];
    small.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"hello");

    // A client's EOF closes its upstream connection, which saw exactly its bytes.
    drop(request);
    assert_eq!(done.recv_timeout(TIMEOUT).unwrap(), 4 + LARGE);
    drop(response);
    assert_eq!(done.recv_timeout(TIMEOUT).unwrap(), 3);
    drop(small);
    assert_eq!(done.recv_timeout(TIMEOUT).unwrap(), 5);

    // The upstream's EOF closes the client, after what was sent before it.
    let mut c = relay.connect();
    c.write_all(b"bye").unwrap();
    assert_eq!(read_to_eof(&mut c), b"bye");
    assert_eq!(done.recv_timeout(TIMEOUT).unwrap(), 3);
    let err = relay.stop();
    assert!(err.is_empty(), "stderr: {err}");
}

#[test]
fn a_missing_upstream_closes_the_client_and_the_relay_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.sock");
    let relay = Relay::start(dir.path(), up.to_str().unwrap());
    let mut c = relay.connect();
    match c.read(&mut [0u8; 16]) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected EOF, got {other:?}"),
    }
    // Once the upstream exists, new clients reach it.
    let done = echo_upstream(&up);
    let mut c = relay.connect();
    c.write_all(b"bye").unwrap();
    assert_eq!(read_to_eof(&mut c), b"bye");
    assert_eq!(done.recv_timeout(TIMEOUT).unwrap(), 3);
    let err = relay.stop();
    assert!(
        err.contains(&format!("connect {}", up.display())),
        "stderr: {err}"
    );
}

/// The bench spawns it with SIGTERM blocked (its own mask, for its signal thread): SIGTERM must
/// stop it all the same.
#[test]
fn sigterm_stops_it_even_when_spawned_with_sigterm_blocked() {
    use nix::sys::signal::{SigSet, Signal};
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGTERM);
    // libtest runs this test on a thread of its own, whose mask the child inherits.
    blocked.thread_block().unwrap();
    let mut relay = Relay::start(dir.path(), "/nonexistent/up.sock");
    blocked.thread_unblock().unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(relay.child.id()).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(st) = relay.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[test]
fn bad_arguments_and_a_taken_socket_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BENCH)
        .args(["relay", "only-one"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected SOCKET UPSTREAM"), "stderr: {err}");

    let taken = dir.path().join("taken.sock");
    let _listener = UnixListener::bind(&taken).unwrap();
    let out = Command::new(BENCH)
        .arg("relay")
        .arg(&taken)
        .arg(dir.path().join("up.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("bind {}", taken.display())),
        "stderr: {err}"
    );
}
