//! gRPC channels over unix sockets, and the CRI calls the adapter itself
//! makes (Version, Status, ImageStatus). Clients send `:authority
//! localhost`, as kubelet 1.31+ does.

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ImageSpec, ImageStatusRequest, StatusRequest, VersionRequest, VersionResponse};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Messages up to this size are accepted (kubelet's own limit).
pub const MAX_MESSAGE: usize = 16 << 20;

/// Opens a channel to the gRPC server on `socket`.
///
/// # Errors
/// The socket does not accept a connection within `timeout`.
pub async fn channel(socket: &Path, timeout: Duration) -> Result<Channel> {
    let path: PathBuf = socket.to_path_buf();
    let ep = Endpoint::try_from("http://localhost")?
        .connect_timeout(timeout)
        .timeout(timeout);
    let connect = ep.connect_with_connector(tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
        }
    }));
    tokio::time::timeout(timeout, connect)
        .await
        .with_context(|| format!("connecting to {}: timed out", socket.display()))?
        .map_err(|e| anyhow::anyhow!("connecting to {}: {}", socket.display(), chain_text(&e)))
}

/// An error and its causes, `: `-joined, each cause left out when the text
/// so far already says it (tonic's transport error repeats its I/O cause).
pub fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let t = c.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cause = c.source();
    }
    text
}

/// A CRI runtime client with our message limits.
pub fn runtime(ch: Channel) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A CRI image client with our message limits.
pub fn images(ch: Channel) -> ImageServiceClient<Channel> {
    ImageServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// CRI `Version`.
///
/// # Errors
/// The call fails.
pub async fn version(ch: Channel) -> Result<VersionResponse> {
    let r = runtime(ch)
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .context("CRI Version")?;
    Ok(r.into_inner())
}

/// The runtime's readiness conditions: (type, status, reason, message).
///
/// # Errors
/// The call fails.
pub async fn conditions(ch: Channel) -> Result<Vec<(String, bool, String, String)>> {
    let r = runtime(ch)
        .status(StatusRequest { verbose: false })
        .await
        .context("CRI Status")?
        .into_inner();
    Ok(r.status
        .map(|s| {
            s.conditions
                .into_iter()
                .map(|c| (c.r#type, c.status, c.reason, c.message))
                .collect()
        })
        .unwrap_or_default())
}

/// CRI `ImageStatus`: the image's id when the runtime knows `name`.
///
/// # Errors
/// The call fails.
pub async fn image_id(ch: Channel, name: &str) -> Result<Option<String>> {
    let r = images(ch)
        .image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: name.to_string(),
                ..ImageSpec::default()
            }),
            verbose: false,
        })
        .await
        .with_context(|| format!("CRI ImageStatus {name}"))?
        .into_inner();
    Ok(r.image.map(|i| i.id))
}

#[cfg(test)]
mod tests {
    use super::chain_text;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "transport error: {}", self.0)
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_repeated_cause_is_said_once() {
        let e = Outer(std::io::Error::from_raw_os_error(2));
        let t = chain_text(&e);
        assert_eq!(t.matches("os error 2").count(), 1, "{t}");
        assert!(t.starts_with("transport error: No such file"), "{t}");
    }
}
