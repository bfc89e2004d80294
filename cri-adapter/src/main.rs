//! `cri-adapter`: the node's CRI layer. Detects or takes the chosen runtime
//! (containerd or CRI-O), renders its configuration for this project's CNI
//! plugins, seeds images without a registry, waits until the runtime is
//! ready, and can serve a stable CRI socket in front of it.

mod client;
mod detect;
mod endpoint;
mod render;
mod runc_wrapper;
mod seed;
mod serve;
mod wait;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use endpoint::{Runtime, RuntimeChoice};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "cri-adapter",
    version,
    about = "The node's CRI layer: containerd or CRI-O, prepared for k8s-shims"
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), also read from RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Schema {
    /// containerd 1.x (`version = 2`).
    V2,
    /// containerd 2.x (`version = 3`).
    V3,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ServeMode {
    /// Copy each connection's bytes to its own runtime connection.
    Splice,
    /// Terminate HTTP/2 and forward call by call.
    H2,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OomChoice {
    /// Restrict when this host lacks CAP_SYS_RESOURCE.
    Auto,
    /// Always restrict.
    True,
    /// Never restrict.
    False,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Probe the runtime sockets and report runtime name and version (CRI Version).
    Detect {
        /// containerd, cri-o, or auto (probe the known sockets).
        #[arg(long, default_value = "auto")]
        runtime: RuntimeChoice,
        /// Endpoints to probe instead of the known sockets
        /// (/run/containerd/containerd.sock, /run/k3s/containerd/containerd.sock,
        /// /var/run/crio/crio.sock, /run/crio/crio.sock), as unix:///path.
        #[arg(long)]
        endpoint: Vec<String>,
        /// Seconds to wait for each endpoint.
        #[arg(long, default_value_t = 2)]
        timeout: u64,
        /// Print JSON instead of text (also on failure: `{"error": "..."}`, exit 1).
        #[arg(long)]
        json: bool,
    },
    /// Print the runtime's configuration for this node (deterministic).
    ///
    /// containerd: a whole config.toml (schema v2 or v3). CRI-O: a drop-in for
    /// /etc/crio/crio.conf.d/ that CRI-O starts with as it is (conmon_cgroup
    /// matches the cgroup manager; the runc handler table is complete, since a
    /// later drop-in's table replaces an earlier one whole).
    Render {
        /// containerd or cri-o.
        #[arg(long)]
        runtime: Runtime,
        /// containerd schema: v2 (containerd 1.x) or v3 (containerd 2.x).
        #[arg(long, value_enum, default_value = "v2")]
        containerd_schema: Schema,
        /// CNI configuration directory (CRI-O: network_dir).
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: String,
        /// CNI plugin directory; repeat for several (containerd 1.x takes one;
        /// CRI-O: plugin_dirs). Besides bridge and host-local it must hold
        /// `loopback` (containerd sets up each pod's `lo` with it), e.g. a
        /// link to Debian's /usr/lib/cni/loopback.
        #[arg(long = "cni-bin-dir", default_value = "/opt/cni/bin")]
        cni_bin_dirs: Vec<String>,
        /// Sandbox (pause) image (CRI-O: pause_image).
        #[arg(
            long,
            alias = "pause-image",
            default_value = "registry.k8s.io/pause:3.9"
        )]
        sandbox_image: String,
        /// Clamp pod OOM scores (needed where CAP_SYS_RESOURCE is missing).
        /// CRI-O has no such setting: `true` is refused for it, and so is `auto`
        /// on a host without CAP_SYS_RESOURCE (its pods would all fail there).
        #[arg(long, value_enum, default_value = "auto")]
        restrict_oom_score_adj: OomChoice,
        /// Use the systemd cgroup driver (CRI-O: cgroup_manager "systemd" with
        /// conmon in system.slice; else cgroupfs with conmon in the pod).
        #[arg(long)]
        systemd_cgroup: bool,
        /// containerd: persistent state directory (root). CRI-O: the storage
        /// root ([crio] root).
        #[arg(long)]
        root: Option<String>,
        /// containerd: runtime state directory (state). CRI-O: the storage run
        /// root ([crio] runroot).
        #[arg(long, alias = "runroot")]
        state: Option<String>,
        /// containerd: gRPC socket path ([grpc] address). CRI-O: its CRI socket
        /// ([crio.api] listen).
        #[arg(long, alias = "listen")]
        address: Option<String>,
        /// CRI-O only: containers-storage driver ([crio] storage_driver, e.g.
        /// overlay or vfs).
        #[arg(long)]
        storage_driver: Option<String>,
        /// CRI-O only: runc binary (runtime_path of the runc handler; default:
        /// runc from CRI-O's PATH).
        #[arg(long)]
        runc_path: Option<String>,
        /// CRI-O only: runc's state directory (runtime_root of the runc
        /// handler; default /run/runc).
        #[arg(long)]
        runc_root: Option<String>,
        /// CRI-O only: the cri-adapter-runc wrapper (a symlink with that name
        /// to cri-adapter), made the runc handler's runtime_path when OOM
        /// scores must be clamped (CRI-O has no setting for it); the wrapper
        /// raises a container's oom_score_adj to its own, then runs runc from
        /// PATH (or $CRI_ADAPTER_RUNC).
        #[arg(long)]
        runc_wrapper: Option<String>,
        /// Write here instead of stdout (atomically).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Block until CRI Version answers and Status reports RuntimeReady and
    /// NetworkReady, steadily (see --settle-ms).
    Wait {
        /// containerd, cri-o, or auto (selects the default endpoint; auto: the
        /// first known runtime socket that exists, waited for).
        #[arg(long, default_value = "containerd")]
        runtime: RuntimeChoice,
        /// The runtime endpoint (unix:///path); default: the runtime's socket,
        /// unix:///run/containerd/containerd.sock (containerd) or
        /// unix:///var/run/crio/crio.sock (cri-o).
        #[arg(long)]
        endpoint: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Do not require NetworkReady (e.g. before the CNI config exists).
        #[arg(long)]
        no_network: bool,
        /// Readiness must hold this long (two ready answers this far apart)
        /// before it counts: CRI-O reports NetworkReady until its first CNI
        /// poll, about 500 ms after start.
        #[arg(long, default_value_t = 1000)]
        settle_ms: u64,
    },
    /// Import OCI or docker image archives (plain or gzip) so the runtime has them without a registry.
    Seed {
        /// containerd, cri-o, or auto (ask CRI Version on --endpoint, or probe
        /// the known sockets).
        #[arg(long, default_value = "containerd")]
        runtime: RuntimeChoice,
        /// The runtime endpoint (unix:///path); default: the runtime's socket,
        /// unix:///run/containerd/containerd.sock (containerd) or
        /// unix:///var/run/crio/crio.sock (cri-o).
        #[arg(long)]
        endpoint: Option<String>,
        /// containerd's native socket, when --endpoint is a proxy (default: --endpoint).
        #[arg(long)]
        containerd_socket: Option<PathBuf>,
        /// containerd namespace.
        #[arg(long, default_value = "k8s.io")]
        namespace: String,
        /// containerd snapshotter to unpack into.
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
        /// CRI-O: print the skopeo commands instead of running them (CRI-O is
        /// still asked for its store).
        #[arg(long)]
        dry_run: bool,
        /// CRI-O: the skopeo binary.
        #[arg(long, default_value = "skopeo")]
        skopeo: PathBuf,
        /// Archives to import.
        #[arg(required = true)]
        archives: Vec<PathBuf>,
    },
    /// Serve a stable CRI socket that forwards every call to the runtime.
    Serve {
        /// The socket to listen on (mode 0660; a stale one is replaced).
        #[arg(long)]
        listen: PathBuf,
        /// The runtime endpoint (unix:///path); default: the runtime's socket,
        /// unix:///run/containerd/containerd.sock (containerd) or
        /// unix:///var/run/crio/crio.sock (cri-o).
        #[arg(long)]
        upstream: Option<String>,
        /// containerd, cri-o, or auto (selects the default upstream; auto: the
        /// first known runtime socket that exists).
        #[arg(long, default_value = "containerd")]
        runtime: RuntimeChoice,
        /// Longest wait for a down runtime (seconds): per connection in splice
        /// mode, per call without a deadline in h2 mode.
        #[arg(long, default_value_t = 60)]
        max_wait: u64,
        /// splice: bytes copied per connection (fastest, any client);
        /// h2: per-call forwarding with per-call UNAVAILABLE.
        #[arg(long, value_enum, default_value = "splice")]
        mode: ServeMode,
        /// After SIGTERM or SIGINT, how long calls in flight may take to
        /// finish (seconds); new connections are refused meanwhile.
        #[arg(long, default_value_t = 10)]
        drain_timeout: u64,
    },
}

fn write_atomically(path: &std::path::Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Detect {
            runtime,
            endpoint,
            timeout,
            json,
        } => {
            let found = detect::detect(runtime, &endpoint, Duration::from_secs(timeout)).await;
            let mut out = std::io::stdout().lock();
            let d = match found {
                Ok(d) => d,
                Err(e) if json => {
                    // A --json caller parses stdout: the error is JSON too.
                    writeln!(out, "{}", serde_json::json!({ "error": format!("{e:#}") }))?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if json {
                let v = serde_json::json!({
                    "runtime": d.runtime.to_string(),
                    "endpoint": endpoint::endpoint_url(&d.socket),
                    "runtimeName": d.name,
                    "runtimeVersion": d.version,
                    "runtimeApiVersion": d.api_version,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "{} {} at {} (CRI {})",
                    d.runtime,
                    d.version,
                    endpoint::endpoint_url(&d.socket),
                    d.api_version
                )?;
            }
        }
        Cmd::Render {
            runtime,
            containerd_schema,
            cni_conf_dir,
            cni_bin_dirs,
            sandbox_image,
            restrict_oom_score_adj,
            systemd_cgroup,
            root,
            state,
            address,
            storage_driver,
            runc_path,
            runc_root,
            runc_wrapper,
            output,
        } => {
            let text = render::render(&render::RenderInput {
                runtime,
                schema: match containerd_schema {
                    Schema::V2 => render::ContainerdSchema::V2,
                    Schema::V3 => render::ContainerdSchema::V3,
                },
                cni_conf_dir,
                cni_bin_dirs,
                sandbox_image,
                oom: match restrict_oom_score_adj {
                    OomChoice::True => render::OomScoreAdj::Restrict,
                    OomChoice::False => render::OomScoreAdj::Unrestricted,
                    OomChoice::Auto => render::OomScoreAdj::Auto,
                },
                host_has_cap_sys_resource: render::has_cap_sys_resource(),
                systemd_cgroup,
                root,
                state,
                address,
                storage_driver,
                runc_path,
                runc_root,
                runc_wrapper,
            })?;
            match output {
                Some(p) => write_atomically(&p, &text)?,
                None => std::io::stdout().lock().write_all(text.as_bytes())?,
            }
        }
        Cmd::Wait {
            runtime,
            endpoint,
            timeout,
            no_network,
            settle_ms,
        } => {
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
            // With auto and no endpoint, the runtime may not have made its
            // socket yet: look again until the deadline.
            let socket = loop {
                match detect::socket_for(runtime, endpoint.as_deref()) {
                    Ok(s) => break s,
                    Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let require: &[&str] = if no_network {
                &["RuntimeReady"]
            } else {
                &["RuntimeReady", "NetworkReady"]
            };
            wait::wait(
                &socket,
                require,
                deadline,
                Duration::from_secs(timeout),
                Duration::from_millis(settle_ms),
            )
            .await?;
            tracing::info!(endpoint = %socket.display(), "runtime ready");
            wait::notify_ready();
        }
        Cmd::Seed {
            runtime,
            endpoint,
            containerd_socket,
            namespace,
            snapshotter,
            dry_run,
            skopeo,
            archives,
        } => {
            let (runtime, socket) =
                detect::resolve(runtime, endpoint.as_deref(), Duration::from_secs(5)).await?;
            let opts = seed::SeedOptions {
                runtime,
                cri_socket: socket.clone(),
                containerd_socket: containerd_socket.unwrap_or(socket),
                namespace,
                snapshotter,
                dry_run,
                skopeo,
            };
            let mut out = std::io::stdout().lock();
            for a in &archives {
                for line in seed::seed(&opts, a).await? {
                    writeln!(out, "{line}")?;
                }
            }
        }
        Cmd::Serve {
            listen,
            upstream,
            runtime,
            max_wait,
            mode,
            drain_timeout,
        } => {
            let up = detect::socket_for(runtime, upstream.as_deref())?;
            let upstream = Arc::new(serve::Upstream::new(up, Duration::from_secs(max_wait)));
            let opts = serve::Options {
                listen,
                mode: match mode {
                    ServeMode::Splice => serve::Mode::Splice,
                    ServeMode::H2 => serve::Mode::H2,
                },
                drain: Duration::from_secs(drain_timeout),
            };
            serve::serve(&opts, upstream).await?;
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args_os();
    if args
        .next()
        .is_some_and(|a| runc_wrapper::invoked_as_wrapper(&a))
    {
        // Only returns when runc could not be started.
        eprintln!("{}", runc_wrapper::run(args.collect()));
        return std::process::ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // SIGTERM and SIGINT stop serve, wait and seed cleanly; a parent that
    // blocked them (the mask is inherited across exec) must not make us
    // unstoppable. Done before any thread exists, so every thread inherits it.
    let mut stop = nix::sys::signal::SigSet::empty();
    stop.add(nix::sys::signal::Signal::SIGTERM);
    stop.add(nix::sys::signal::Signal::SIGINT);
    if let Err(e) = stop.thread_unblock() {
        tracing::warn!(error = %e, "cannot unblock SIGTERM and SIGINT");
    }
    // `serve` runs on one thread: a call's client stream and its upstream
    // stream then live on the same thread, with no cross-thread wake-ups
    // (a thread per connection and direction was measured: no lower latency,
    // two thirds of the throughput with 8 busy clients on 2 cores).
    let mut builder = if matches!(cli.command, Cmd::Serve { .. }) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cri-adapter: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(run(cli));
    // Do not wait for idle blocking-pool threads (10 s keep-alive).
    rt.shutdown_timeout(Duration::from_millis(100));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cri-adapter: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
