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

/// Resolves `--runtime` and `--endpoint` into the runtime and its socket.
/// A named runtime is taken as it is (its default socket unless `endpoint`);
/// `auto` asks CRI `Version` on `endpoint`, or probes the known sockets.
///
/// # Errors
/// A bad endpoint, or with `auto`, nothing answering.
pub async fn resolve(
    choice: RuntimeChoice,
    endpoint: Option<&str>,
    timeout: Duration,
) -> Result<(crate::endpoint::Runtime, PathBuf)> {
    match choice {
        RuntimeChoice::Is(rt) => Ok((
            rt,
            socket_path(endpoint.unwrap_or(crate::endpoint::default_socket(rt)))
                .map_err(anyhow::Error::msg)?,
        )),
        RuntimeChoice::Auto => {
            let given: Vec<String> = endpoint.map(str::to_string).into_iter().collect();
            let d = detect(RuntimeChoice::Auto, &given, timeout).await?;
            Ok((d.runtime, d.socket))
        }
    }
}

/// The socket to use when only the runtime's *socket* matters (`wait`,
/// `serve`): `endpoint`, else the runtime's default socket, else with
/// `auto` the first known socket that exists (the runtime need not answer
/// yet).
///
/// # Errors
/// A bad endpoint, or with `auto`, no known socket exists.
pub fn socket_for(choice: RuntimeChoice, endpoint: Option<&str>) -> Result<PathBuf> {
    if let Some(e) = endpoint {
        return socket_path(e).map_err(anyhow::Error::msg);
    }
    match choice {
        RuntimeChoice::Is(rt) => Ok(PathBuf::from(crate::endpoint::default_socket(rt))),
        RuntimeChoice::Auto => KNOWN_SOCKETS
            .iter()
            .map(|(_, p)| PathBuf::from(p))
            .find(|p| p.exists())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--runtime auto: none of the known runtime sockets exists ({}); name one with --endpoint",
                    KNOWN_SOCKETS
                        .iter()
                        .map(|(_, p)| *p)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
    }
}
