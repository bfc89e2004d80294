//! Runtime names, endpoints and the sockets we probe.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A container runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// containerd (also k3s' embedded one).
    Containerd,
    /// CRI-O.
    CriO,
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
        })
    }
}

impl FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "containerd" => Ok(Runtime::Containerd),
            "cri-o" | "crio" => Ok(Runtime::CriO),
            other => Err(format!("unknown runtime {other:?} (containerd or cri-o)")),
        }
    }
}

/// `--runtime`: a runtime, or `auto` to detect one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeChoice {
    /// Probe the known sockets.
    Auto,
    /// This one.
    Is(Runtime),
}

impl FromStr for RuntimeChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "auto" {
            Ok(RuntimeChoice::Auto)
        } else {
            s.parse().map(RuntimeChoice::Is)
        }
    }
}

/// The sockets probed by `auto`, in order, with the runtime expected there.
pub const KNOWN_SOCKETS: [(Runtime, &str); 4] = [
    (Runtime::Containerd, "/run/containerd/containerd.sock"),
    (Runtime::Containerd, "/run/k3s/containerd/containerd.sock"),
    (Runtime::CriO, "/var/run/crio/crio.sock"),
    (Runtime::CriO, "/run/crio/crio.sock"),
];

/// The default socket of a runtime.
pub fn default_socket(rt: Runtime) -> &'static str {
    match rt {
        Runtime::Containerd => "/run/containerd/containerd.sock",
        Runtime::CriO => "/var/run/crio/crio.sock",
    }
}

/// Parses `unix:///path` or a bare absolute path into the socket path.
///
/// # Errors
/// Any other scheme (kubelet accepts only unix sockets on Linux).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    if let Some(p) = endpoint.strip_prefix("unix://") {
        if p.starts_with('/') {
            return Ok(PathBuf::from(p));
        }
        return Err(format!(
            "endpoint {endpoint:?}: unix:// needs an absolute path"
        ));
    }
    if endpoint.starts_with('/') {
        return Ok(PathBuf::from(endpoint));
    }
    Err(format!(
        "endpoint {endpoint:?}: only unix sockets are supported (unix:///path/to.sock)"
    ))
}

/// The `unix://` form of a socket path.
pub fn endpoint_url(path: &Path) -> String {
    format!("unix://{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/x.sock"),
            Ok(PathBuf::from("/run/x.sock"))
        );
        assert_eq!(socket_path("/run/x.sock"), Ok(PathBuf::from("/run/x.sock")));
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
        assert!(socket_path("unix://relative").is_err());
        assert_eq!("crio".parse::<Runtime>(), Ok(Runtime::CriO));
        assert_eq!("auto".parse::<RuntimeChoice>(), Ok(RuntimeChoice::Auto));
    }
}
