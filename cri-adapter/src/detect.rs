//! `detect`: which runtime answers on which socket.

use crate::client;
use crate::endpoint::{socket_path, Runtime, RuntimeChoice, KNOWN_SOCKETS};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Duration;

/// A runtime that answered CRI `Version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The runtime, from its reported name.
    pub runtime: Runtime,
    /// The socket it answered on.
    pub socket: PathBuf,
    /// `runtime_name` as reported.
    pub name: String,
    /// `runtime_version` as reported.
    pub version: String,
    /// `runtime_api_version` as reported.
    pub api_version: String,
}

fn runtime_of(name: &str) -> Option<Runtime> {
    match name {
        "containerd" => Some(Runtime::Containerd),
        "cri-o" => Some(Runtime::CriO),
        _ => None,
    }
}

/// Probes `endpoints` (or the known sockets) and returns the first runtime
/// that answers and matches `choice`.
///
/// # Errors
/// Nothing answered; the message lists what was tried and why it failed.
pub async fn detect(
    choice: RuntimeChoice,
    endpoints: &[String],
    timeout: Duration,
) -> Result<Detected> {
    let candidates: Vec<PathBuf> = if endpoints.is_empty() {
        KNOWN_SOCKETS
            .iter()
            .filter(|(rt, _)| {
                matches!(choice, RuntimeChoice::Auto) || choice == RuntimeChoice::Is(*rt)
            })
            .map(|(_, p)| PathBuf::from(p))
            .collect()
    } else {
        endpoints
            .iter()
            .map(|e| socket_path(e).map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?
    };
    let mut tried = Vec::new();
    for socket in candidates {
        if !socket.exists() {
            tried.push(format!("{}: no such socket", socket.display()));
            continue;
        }
        let answer = async {
            let ch = client::channel(&socket, timeout).await?;
            client::version(ch).await
        }
        .await;
        match answer {
            Ok(v) => {
                let Some(runtime) = runtime_of(&v.runtime_name) else {
                    tried.push(format!(
                        "{}: unknown runtime {:?}",
                        socket.display(),
                        v.runtime_name
                    ));
                    continue;
                };
                if let RuntimeChoice::Is(want) = choice {
                    if want != runtime {
                        tried.push(format!("{}: is {runtime}, not {want}", socket.display()));
                        continue;
                    }
                }
                return Ok(Detected {
                    runtime,
                    socket,
                    name: v.runtime_name,
                    version: v.runtime_version,
                    api_version: v.runtime_api_version,
                });
            }
            Err(e) => tried.push(format!("{}: {e:#}", socket.display())),
        }
    }
    bail!(
        "no container runtime answered CRI Version: {}",
        tried.join("; ")
    )
}
