//! The CRI client of the cri bench and its latency and throughput measurements.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::env::CriEnv;
use super::*;
use crate::report::{progress, ratio};
use crate::Res;

// The CRI client ---------------------------------------------------------------------------------

/// A unix stream that counts the bytes read from it (to report response sizes on the wire).
#[derive(Debug)]
pub(crate) struct CountingStream {
    pub(crate) inner: tokio::net::UnixStream,
    pub(crate) read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl tokio::io::AsyncRead for CountingStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = r {
            let n = (buf.filled().len() - before) as u64;
            self.read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl tokio::io::AsyncWrite for CountingStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One CRI client: its own HTTP/2 connection (`:authority localhost`), 16 MiB messages.
#[derive(Debug, Clone)]
pub(crate) struct CriClient {
    pub(crate) runtime:
        k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pub(crate) images:
        k8s_cri::v1::image_service_client::ImageServiceClient<tonic::transport::Channel>,
    pub(crate) read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

pub(crate) const CRI_MAX_MESSAGE: usize = 16 << 20;

pub(crate) async fn cri_connect(socket: &Path) -> Res<CriClient> {
    let path = socket.to_path_buf();
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = read.clone();
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            let read = counter.clone();
            async move {
                let inner = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(CountingStream {
                    inner,
                    read,
                }))
            }
        }))
        .await
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    Ok(CriClient {
        runtime: k8s_cri::v1::runtime_service_client::RuntimeServiceClient::new(channel.clone())
            .max_decoding_message_size(CRI_MAX_MESSAGE)
            .max_encoding_message_size(CRI_MAX_MESSAGE),
        images: k8s_cri::v1::image_service_client::ImageServiceClient::new(channel)
            .max_decoding_message_size(CRI_MAX_MESSAGE)
            .max_encoding_message_size(CRI_MAX_MESSAGE),
        read,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    Version,
    ListContainers,
    ListImages,
}

impl Rpc {
    pub(crate) const ALL: [Rpc; 3] = [Rpc::Version, Rpc::ListContainers, Rpc::ListImages];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Rpc::Version => "Version",
            Rpc::ListContainers => "ListContainers",
            Rpc::ListImages => "ListImages",
        }
    }
}

/// One call; returns the number of items in the response (1 for Version).
pub(crate) async fn cri_call(c: &mut CriClient, rpc: Rpc) -> Res<usize> {
    let err = |e: tonic::Status| format!("CRI {}: {e}", rpc.name());
    match rpc {
        Rpc::Version => {
            let r = c
                .runtime
                .version(k8s_cri::v1::VersionRequest {
                    version: "v1".into(),
                })
                .await
                .map_err(err)?;
            Ok(usize::from(!r.get_ref().runtime_version.is_empty()))
        }
        Rpc::ListContainers => {
            let r = c
                .runtime
                .list_containers(k8s_cri::v1::ListContainersRequest { filter: None })
                .await
                .map_err(err)?;
            Ok(r.get_ref().containers.len())
        }
        Rpc::ListImages => {
            let r = c
                .images
                .list_images(k8s_cri::v1::ListImagesRequest { filter: None })
                .await
                .map_err(err)?;
            Ok(r.get_ref().images.len())
        }
    }
}

/// One call whose response must hold `want` items (checked on every call: it is cheap).
pub(crate) async fn cri_checked_call(c: &mut CriClient, rpc: Rpc, want: usize) -> Res<()> {
    let n = cri_call(c, rpc).await?;
    if n != want {
        return Err(format!(
            "CRI {}: {n} items in the response, expected {want}",
            rpc.name()
        ));
    }
    Ok(())
}

pub(crate) async fn with_phase_timeout<T>(
    what: &str,
    f: impl std::future::Future<Output = Res<T>>,
) -> Res<T> {
    tokio::time::timeout(CRI_PHASE_TIMEOUT, f)
        .await
        .map_err(|_| format!("{what}: no answer within {CRI_PHASE_TIMEOUT:?}"))?
}

/// How many targets are measured: direct, via serve, via the bare relay.
pub(crate) const N_TARGETS: usize = 3;
/// One value per target, in the order of [`TARGETS`].
pub(crate) type PerTarget<T> = [T; N_TARGETS];
/// The targets: containerd's socket, `cri-adapter serve` in front of it, and the bare relay
/// (relay.rs) in front of it.
pub(crate) const TARGETS: PerTarget<&str> = ["direct", "via serve", "via relay"];
/// Indices into [`TARGETS`].
pub(crate) const DIRECT: usize = 0;
pub(crate) const SERVE: usize = 1;
pub(crate) const RELAY: usize = 2;

/// The order of the targets in latency block `block`: every rotation, then every rotation
/// reversed, so that over six blocks each target runs at each position, and after each other
/// target, equally often.
pub(crate) fn block_order(block: usize) -> PerTarget<usize> {
    let shift = block % N_TARGETS;
    let order: PerTarget<usize> = std::array::from_fn(|i| (i + shift) % N_TARGETS);
    if (block / N_TARGETS) % 2 == 0 {
        order
    } else {
        let mut reversed = order;
        reversed.reverse();
        reversed
    }
}

/// The order of the throughput runs: each target twice (half the time each), mirrored so that
/// every target's mean position in the sequence is the same.
pub(crate) const THROUGHPUT_ORDER: [usize; 2 * N_TARGETS] =
    [DIRECT, SERVE, RELAY, RELAY, SERVE, DIRECT];

/// Sequential latency samples of `n` calls per target, in alternating blocks.
pub(crate) async fn cri_latency(
    clients: &mut PerTarget<CriClient>,
    rpc: Rpc,
    n: usize,
    want: usize,
) -> Res<PerTarget<Vec<Duration>>> {
    let mut samples: PerTarget<Vec<Duration>> = std::array::from_fn(|_| Vec::with_capacity(n));
    let mut done = 0;
    let mut block = 0;
    while done < n {
        let len = CRI_BLOCK.min(n - done);
        for t in block_order(block) {
            for _ in 0..len {
                let start = Instant::now();
                let got = cri_call(&mut clients[t], rpc).await;
                let took = start.elapsed();
                match got {
                    Ok(k) if k == want => samples[t].push(took),
                    Ok(k) => {
                        return Err(format!(
                            "{}: CRI {}: {k} items in the response, expected {want}",
                            TARGETS[t],
                            rpc.name()
                        ))
                    }
                    Err(e) => return Err(format!("{}: {e}", TARGETS[t])),
                }
            }
        }
        done += len;
        block += 1;
    }
    Ok(samples)
}

/// `clients.len()` concurrent callers for `time`; returns the calls completed and the elapsed
/// wall time.
pub(crate) async fn cri_throughput_slice(
    clients: &[CriClient],
    rpc: Rpc,
    want: usize,
    time: Duration,
) -> Res<(u64, Duration)> {
    let start = Instant::now();
    let deadline = start + time;
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        let mut c = c.clone();
        tasks.spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < deadline {
                cri_checked_call(&mut c, rpc, want).await?;
                calls += 1;
            }
            Ok::<u64, String>(calls)
        });
    }
    let mut total = 0;
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(format!("client task: {e}"));
            }
        }
    }
    let elapsed = start.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok((total, elapsed)),
    }
}

/// The processes whose CPU time is counted: the bench client (this process),
/// containerd, serve and the bare relay.
pub(crate) const CPU_OF: [&str; 4] = ["client", "containerd", "serve", "relay"];
/// Indices into [`CPU_OF`].
pub(crate) const CPU_CLIENT: usize = 0;
pub(crate) const CPU_CONTAINERD: usize = 1;
pub(crate) const CPU_SERVE: usize = 2;
pub(crate) const CPU_RELAY: usize = 3;
/// CPU per process of [`CPU_OF`].
pub(crate) type CpuOf<T> = [T; CPU_OF.len()];

/// User + system CPU time a process has used so far (`/proc/PID/stat`).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is the first,
    // utime the 12th and stime the 13th.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// CPU time of each process of [`CPU_OF`] (zero when unreadable).
fn cpu_times(pids: &CpuOf<u32>) -> CpuOf<Duration> {
    pids.map(|p| cpu_time(p).unwrap_or_default())
}

/// What a throughput measurement found, per target.
#[derive(Debug)]
pub(crate) struct Throughput {
    /// Calls per second.
    pub(crate) rate: PerTarget<f64>,
    /// CPU time per call, in µs, of each process of [`CPU_OF`].
    pub(crate) cpu_per_call: PerTarget<CpuOf<f64>>,
}

/// Calls per second per target: halves in [`THROUGHPUT_ORDER`]; and the CPU each process of
/// [`CPU_OF`] (`pids`) spent per call meanwhile.
pub(crate) async fn cri_throughput(
    pools: &PerTarget<Vec<CriClient>>,
    rpc: Rpc,
    want: usize,
    seconds: f64,
    pids: &CpuOf<u32>,
) -> Res<Throughput> {
    let half = Duration::from_secs_f64(seconds / 2.0);
    let mut calls = [0u64; N_TARGETS];
    let mut time = [Duration::ZERO; N_TARGETS];
    let mut cpu = [[Duration::ZERO; CPU_OF.len()]; N_TARGETS];
    for t in THROUGHPUT_ORDER {
        let before = cpu_times(pids);
        let (n, d) = cri_throughput_slice(&pools[t], rpc, want, half)
            .await
            .map_err(|e| format!("{}: {e}", TARGETS[t]))?;
        let after = cpu_times(pids);
        for (c, (a, b)) in cpu[t].iter_mut().zip(after.iter().zip(&before)) {
            *c += a.saturating_sub(*b);
        }
        calls[t] += n;
        time[t] += d;
    }
    Ok(Throughput {
        rate: std::array::from_fn(|t| ratio(calls[t] as f64, time[t].as_secs_f64())),
        cpu_per_call: std::array::from_fn(|t| {
            cpu[t].map(|c| ratio(c.as_secs_f64() * 1e6, calls[t] as f64))
        }),
    })
}

/// Per target, the sequential latencies of one RPC.
pub(crate) type LatencySamples = Res<PerTarget<Vec<Duration>>>;

/// What the measurements produced.
#[derive(Debug)]
pub(crate) struct CriResults {
    pub(crate) runtime: String,
    pub(crate) list_images_bytes: PerTarget<u64>,
    pub(crate) latency: Vec<(Rpc, usize, LatencySamples)>,
    pub(crate) throughput: Vec<(Rpc, Res<Throughput>)>,
}

/// A clone of each target's first client (the one the latency runs use).
fn first_clients(pools: &PerTarget<Vec<CriClient>>) -> Res<PerTarget<CriClient>> {
    let firsts: Vec<CriClient> = pools.iter().filter_map(|p| p.first().cloned()).collect();
    firsts
        .try_into()
        .map_err(|_| "a target has no CRI client".to_string())
}

pub(crate) async fn cri_measure(env: &CriEnv, opts: &CriOpts) -> Res<CriResults> {
    let sockets = [&env.direct, &env.proxied, &env.relayed];
    let mut pools: PerTarget<Vec<CriClient>> = Default::default();
    for (t, socket) in sockets.iter().enumerate() {
        for _ in 0..opts.clients {
            pools[t].push(
                cri_connect(socket)
                    .await
                    .map_err(|e| format!("{}: {e}", TARGETS[t]))?,
            );
        }
    }
    let mut one = first_clients(&pools)?;

    // What the runtime says it is, and the expected item counts.
    let version = with_phase_timeout("Version", async {
        one[0]
            .runtime
            .version(k8s_cri::v1::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|e| format!("CRI Version: {e}"))
    })
    .await?
    .into_inner();
    let runtime = format!(
        "{} {} (CRI {})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );
    let n_images = with_phase_timeout("ListImages", cri_call(&mut one[0], Rpc::ListImages)).await?;
    let n_containers =
        with_phase_timeout("ListContainers", cri_call(&mut one[0], Rpc::ListContainers)).await?;
    if n_images < env.images.len() {
        return Err(format!(
            "ListImages returns {n_images} images, fewer than the {} seeded",
            env.images.len()
        ));
    }
    // Every seeded name must be listed (and the count is what every later call must return).
    let listed = with_phase_timeout("ListImages", async {
        one[0]
            .images
            .list_images(k8s_cri::v1::ListImagesRequest { filter: None })
            .await
            .map_err(|e| format!("CRI ListImages: {e}"))
    })
    .await?
    .into_inner();
    let tags: HashSet<&str> = listed
        .images
        .iter()
        .flat_map(|i| i.repo_tags.iter().map(String::as_str))
        .collect();
    if let Some(missing) = env.images.iter().find(|n| !tags.contains(n.as_str())) {
        return Err(format!(
            "ListImages does not list the seeded image {missing}"
        ));
    }
    let want = |rpc: Rpc| match rpc {
        Rpc::Version => 1,
        Rpc::ListContainers => n_containers,
        Rpc::ListImages => n_images,
    };

    // Warm every connection up (and check both targets answer the same).
    progress(&format!(
        "warming up {} connections per target",
        opts.clients
    ));
    with_phase_timeout("warm-up", async {
        for (t, pool) in pools.iter_mut().enumerate() {
            for c in pool.iter_mut() {
                for rpc in Rpc::ALL {
                    for _ in 0..CRI_WARMUP {
                        cri_checked_call(c, rpc, want(rpc))
                            .await
                            .map_err(|e| format!("{}: {e}", TARGETS[t]))?;
                    }
                }
            }
        }
        Ok(())
    })
    .await?;

    // Response size on the wire: bytes read by one ListImages call on each target.
    let mut list_images_bytes = [0u64; N_TARGETS];
    for t in 0..N_TARGETS {
        let before = one[t].read.load(std::sync::atomic::Ordering::Relaxed);
        with_phase_timeout(
            "ListImages",
            cri_checked_call(&mut one[t], Rpc::ListImages, n_images),
        )
        .await?;
        list_images_bytes[t] = one[t].read.load(std::sync::atomic::Ordering::Relaxed) - before;
    }

    let mut latency = Vec::new();
    for rpc in Rpc::ALL {
        let n = if rpc == Rpc::ListImages {
            opts.iterations.div_ceil(4)
        } else {
            opts.iterations
        };
        progress(&format!(
            "latency: {n} sequential {} calls per target, blocks of {CRI_BLOCK}",
            rpc.name()
        ));
        let r = with_phase_timeout(rpc.name(), cri_latency(&mut one, rpc, n, want(rpc))).await;
        latency.push((rpc, n, r));
    }
    let pids = [
        std::process::id(),
        env.containerd.id(),
        env.serve.id(),
        env.relay.id(),
    ];
    let mut throughput = Vec::new();
    for rpc in Rpc::ALL {
        progress(&format!(
            "throughput: {} concurrent clients calling {} for {:.1} s per target",
            opts.clients,
            rpc.name(),
            opts.seconds
        ));
        let r = with_phase_timeout(
            rpc.name(),
            cri_throughput(&pools, rpc, want(rpc), opts.seconds, &pids),
        )
        .await;
        throughput.push((rpc, r));
    }
    Ok(CriResults {
        runtime,
        list_images_bytes,
        latency,
        throughput,
    })
}
