//! `cni-bench bridge-worker` (internal; runs inside a fake host netns) and the parent's handle
//! on it: plugin batches sent over a pipe, spawned and timed (exec → exit) by the worker.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::plugin::*;
use crate::{usage, Res};

/// A batch that takes longer than this is killed (a hung plugin must not hang the bench).
pub(crate) const BATCH_TIMEOUT: Duration = Duration::from_secs(60);
// The worker (runs inside a fake host netns) ---------------------------------------------------

/// One plugin call of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) id: String,
    pub(crate) netns: String,
}

/// The outcome of a batch: wall time from the first spawn until the last child was reaped.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) wall: Duration,
    pub(crate) outs: Vec<Outcome>,
}

pub(crate) fn cni_command(prog: &Path, cmd: &str, call: &Call, cni_path: &str) -> Command {
    let mut c = Command::new(prog);
    c.env_clear()
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", &call.id)
        .env("CNI_NETNS", &call.netns)
        .env("CNI_IFNAME", IFNAME)
        .env("CNI_PATH", cni_path)
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        );
    c
}

/// Spawns every call at once, then reaps them all. A watchdog kills the children (by pid)
/// if the batch exceeds BATCH_TIMEOUT.
pub(crate) fn run_batch(
    prog: &Path,
    cmd: &str,
    config: &str,
    cni_path: &str,
    calls: &[Call],
) -> Res<Batch> {
    let start = Instant::now();
    let mut children = Vec::with_capacity(calls.len());
    let mut spawn_err = None;
    for call in calls {
        let c = cni_command(prog, cmd, call, cni_path);
        match spawn_with(c, config, &format!("{cmd} {}", call.id)) {
            Ok(child) => children.push(child),
            Err(e) => {
                spawn_err = Some(e);
                break;
            }
        }
    }
    let pids: Vec<i32> = children
        .iter()
        .filter_map(|c| i32::try_from(c.id()).ok())
        .collect();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(BATCH_TIMEOUT)
        {
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            true
        } else {
            false
        }
    });
    let mut outs = Vec::with_capacity(children.len());
    let mut wait_err = None;
    for c in children {
        match finish(c) {
            Ok(o) => outs.push(o),
            Err(e) => wait_err = Some(e),
        }
    }
    let wall = start.elapsed();
    let _ = done_tx.send(());
    if watchdog.join().unwrap_or(false) {
        return Err(format!(
            "{cmd} batch of {} timed out after {BATCH_TIMEOUT:?} and was killed",
            calls.len()
        ));
    }
    if let Some(e) = spawn_err.or(wait_err) {
        return Err(e);
    }
    Ok(Batch { wall, outs })
}

/// Runs every chain at once (one thread each, or inline for a single chain): the programs of a
/// chain one after the other, each to its exit, stopping at the first that fails. Returns the
/// wall time from the start until the last chain is done, and per chain the outcome of its
/// last program run. No watchdog: chains are the floor's `ip` and no-op runs, not plugins.
pub(crate) fn run_chains(chains: &[Vec<Vec<String>>]) -> Res<Batch> {
    let start = Instant::now();
    let outs = if let [chain] = chains {
        vec![run_chain(chain)?]
    } else {
        std::thread::scope(|s| {
            let threads: Vec<_> = chains
                .iter()
                .map(|chain| s.spawn(move || run_chain(chain)))
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Err("chain thread panicked".into()))
                })
                .collect::<Res<Vec<Outcome>>>()
        })?
    };
    Ok(Batch {
        wall: start.elapsed(),
        outs,
    })
}

fn run_chain(chain: &[Vec<String>]) -> Res<Outcome> {
    let mut last = Outcome {
        ok: true,
        stdout: Vec::new(),
        stderr: Vec::new(),
        status: "empty chain".into(),
    };
    for argv in chain {
        let (prog, args) = argv.split_first().ok_or("empty command in a chain")?;
        let out = Command::new(prog)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            )
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("spawn {prog}: {e}"))?;
        last = Outcome {
            ok: out.status.success(),
            stdout: out.stdout,
            stderr: out.stderr,
            status: format!("{} ({})", out.status, argv.join(" ")),
        };
        if !last.ok {
            break;
        }
    }
    Ok(last)
}

pub(crate) fn json_str<'a>(v: &'a serde_json::Value, key: &str) -> Res<&'a str> {
    v.get(key)
        .and_then(|x| x.as_str())
        .ok_or_else(|| format!("request without string {key:?}"))
}

/// A request to run a plugin batch.
fn plugin_batch(v: &serde_json::Value) -> Res<Batch> {
    let prog = Path::new(json_str(v, "prog")?);
    let cmd = json_str(v, "cmd")?;
    let config = json_str(v, "config")?;
    let cni_path = json_str(v, "cni_path")?;
    let mut calls = Vec::new();
    for c in v
        .get("calls")
        .and_then(|c| c.as_array())
        .ok_or("request without calls")?
    {
        calls.push(Call {
            id: json_str(c, "id")?.to_string(),
            netns: json_str(c, "netns")?.to_string(),
        });
    }
    run_batch(prog, cmd, config, cni_path, &calls)
}

pub(crate) fn serve_request(line: &str) -> Res<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad request ({e}): {line}"))?;
    let batch = match v.get("chains") {
        // The portmap floor's conntrack step: one dump of a family's table, in this process.
        None if v.get("ctdump").is_some() => {
            let start = Instant::now();
            let family = v.get("ctdump").and_then(|f| f.as_u64()).unwrap_or(0);
            let n = crate::portmap::ct_dump(u8::try_from(family).unwrap_or(0))?;
            Batch {
                wall: start.elapsed(),
                outs: vec![Outcome {
                    ok: true,
                    stdout: n.to_string().into_bytes(),
                    stderr: Vec::new(),
                    status: "dumped".into(),
                }],
            }
        }
        Some(chains) => {
            let chains: Vec<Vec<Vec<String>>> = serde_json::from_value(chains.clone())
                .map_err(|e| format!("bad chains ({e}): {line}"))?;
            run_chains(&chains)?
        }
        None => plugin_batch(&v)?,
    };
    let outs: Vec<serde_json::Value> = batch
        .outs
        .iter()
        .map(|o| {
            serde_json::json!({
                "ok": o.ok,
                "status": o.status,
                "stdout": String::from_utf8_lossy(&o.stdout),
                "stderr": String::from_utf8_lossy(&o.stderr),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "wall_ns": u64::try_from(batch.wall.as_nanos()).unwrap_or(u64::MAX),
        "outs": outs,
    }))
}

/// `cni-bench bridge-worker`: reads one JSON request per line on stdin, runs the batch and
/// answers one JSON line on stdout; exits at end of input.
pub(crate) fn bridge_worker(args: &[OsString]) -> Res<bool> {
    if !args.is_empty() {
        return Err(format!("bridge-worker takes no arguments\n{}", usage()));
    }
    raise_nofile_limit();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdin
            .read_line(&mut line)
            .map_err(|e| format!("worker stdin: {e}"))?;
        if n == 0 {
            return Ok(true);
        }
        let answer =
            serve_request(line.trim()).unwrap_or_else(|e| serde_json::json!({ "error": e }));
        writeln!(stdout, "{answer}")
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("worker stdout: {e}"))?;
    }
}

/// The parent's handle on a worker started with `ip netns exec <host> cni-bench bridge-worker`.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) child: Child,
    pub(crate) stdin: Option<std::process::ChildStdin>,
    pub(crate) stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Worker {
    pub(crate) fn start(host_ns: &str) -> Res<Worker> {
        let exe = std::env::current_exe().map_err(|e| format!("locating cni-bench: {e}"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", host_ns])
            .arg(&exe)
            .arg("bridge-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("ip netns exec {host_ns} {}: {e}", exe.display()))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or("worker without stdout")
            .map(std::io::BufReader::new)?;
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    pub(crate) fn run(
        &mut self,
        prog: &Path,
        cmd: &str,
        config: &str,
        cni_path: &Path,
        calls: &[Call],
    ) -> Res<Batch> {
        let calls_json: Vec<serde_json::Value> = calls
            .iter()
            .map(|c| serde_json::json!({ "id": c.id, "netns": c.netns }))
            .collect();
        let req = serde_json::json!({
            "prog": prog.to_string_lossy(),
            "cmd": cmd,
            "config": config,
            "cni_path": cni_path.to_string_lossy(),
            "calls": calls_json,
        });
        self.request(&req, calls.len())
    }

    /// Has the worker run `chains` (see `run_chains`); one outcome per chain.
    pub(crate) fn run_chains(&mut self, chains: &[Vec<Vec<String>>]) -> Res<Batch> {
        self.request(&serde_json::json!({ "chains": chains }), chains.len())
    }

    /// Has the worker dump the conntrack table of `family` once (ctnetlink, in its own
    /// process); the time it took and the number of entries.
    pub(crate) fn ct_dump(&mut self, family: u8) -> Res<(Duration, usize)> {
        let b = self.request(&serde_json::json!({ "ctdump": family }), 1)?;
        let n = b
            .outs
            .first()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).parse().ok())
            .unwrap_or(0);
        Ok((b.wall, n))
    }

    /// Sends one request and reads its answer, which must hold `n` outcomes.
    fn request(&mut self, req: &serde_json::Value, n: usize) -> Res<Batch> {
        use std::io::BufRead as _;
        let stdin = self.stdin.as_mut().ok_or("worker stdin closed")?;
        writeln!(stdin, "{req}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to the worker: {e}"))?;
        let mut line = String::new();
        let read = self
            .stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading from the worker: {e}"))?;
        if read == 0 {
            return Err("the worker exited unexpectedly".into());
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("worker answer ({e}): {line}"))?;
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return Err(e.to_string());
        }
        let wall = Duration::from_nanos(
            v.get("wall_ns")
                .and_then(|w| w.as_u64())
                .ok_or_else(|| format!("worker answer without wall_ns: {line}"))?,
        );
        let mut outs = Vec::new();
        for o in v
            .get("outs")
            .and_then(|o| o.as_array())
            .ok_or_else(|| format!("worker answer without outs: {line}"))?
        {
            let field = |k: &str| o.get(k).and_then(|x| x.as_str()).unwrap_or("");
            outs.push(Outcome {
                ok: o.get("ok").and_then(|x| x.as_bool()).unwrap_or(false),
                stdout: field("stdout").as_bytes().to_vec(),
                stderr: field("stderr").as_bytes().to_vec(),
                status: field("status").to_string(),
            });
        }
        if outs.len() != n {
            return Err(format!(
                "worker returned {} outcomes for {n} calls",
                outs.len()
            ));
        }
        Ok(Batch { wall, outs })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // End of input makes the worker exit once its current batch is done.
        drop(self.stdin.take());
        let deadline = Instant::now() + BATCH_TIMEOUT + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}
