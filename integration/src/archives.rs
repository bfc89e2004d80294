//! Large image archives written to disk as they are made (never held in
//! memory), for the seed memory test and benchmark.

use crate::XorShift;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::Path;

/// Pseudo-random bytes, `left` of them.
#[derive(Debug)]
struct Noise {
    rng: XorShift,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for chunk in buf[..n].chunks_mut(8) {
            let v = self.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The hex SHA-256 of a file.
///
/// # Errors
/// The file cannot be read.
pub fn sha256_file(p: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// Writes a layer tar holding one file of `size` pseudo-random bytes;
/// returns its hex digest.
///
/// # Errors
/// Writing fails.
pub fn write_layer(path: &Path, size: u64) -> io::Result<String> {
    let f = io::BufWriter::new(std::fs::File::create(path)?);
    let mut b = tar::Builder::new(f);
    let noise = Noise {
        rng: XorShift::new(7),
        left: size,
    };
    b.append_data(&mut file_header(size), "noise", noise)?;
    b.into_inner()?.flush()?;
    sha256_file(path)
}

/// Writes a docker archive of image `name` whose layers are `layer` (hex
/// digest `hex`) listed `times` times.
///
/// # Errors
/// Writing fails.
pub fn write_docker_archive(
    path: &Path,
    name: &str,
    layer: &Path,
    hex: &str,
    times: usize,
) -> io::Result<()> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/noise"]},
        "rootfs": {"type": "layers", "diff_ids": vec![format!("sha256:{hex}"); times]},
    }))
    .map_err(io::Error::other)?;
    let cfg_path = format!("{:x}.json", Sha256::digest(&config));
    let layer_path = format!("{hex}/layer.tar");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": cfg_path, "RepoTags": [name], "Layers": vec![layer_path.clone(); times],
    }]))
    .map_err(io::Error::other)?;
    let f = io::BufWriter::new(std::fs::File::create(path)?);
    let mut b = tar::Builder::new(f);
    b.append_data(
        &mut file_header(manifest.len() as u64),
        "manifest.json",
        &manifest[..],
    )?;
    b.append_data(
        &mut file_header(config.len() as u64),
        &cfg_path,
        &config[..],
    )?;
    let size = std::fs::metadata(layer)?.len();
    b.append_data(
        &mut file_header(size),
        &layer_path,
        std::fs::File::open(layer)?,
    )?;
    b.into_inner()?.flush()
}
