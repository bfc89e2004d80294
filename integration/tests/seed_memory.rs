//! `cri-adapter seed` memory: a 96 MiB image (more than the limit) is
//! imported with a bounded peak RSS (under 64 MiB) into containerd and
//! through the CRI-O path (its
//! `--dry-run`, which reads and checks every blob, against a socket
//! answering like CRI-O); a gzip bomb and an archive listing one layer
//! 3000 times are refused.
//!
//! Peak RSS is the largest `ru_maxrss` of this process's reaped children,
//! so this file runs no other child that could be larger (no gcc, no
//! pause image). Needs root, containerd, runc and a built workspace.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use integration::archives::{write_docker_archive, write_layer};
use integration::cri::*;
use nix::sys::resource::{getrusage, UsageWho};

const LIMIT_KIB: i64 = 64 << 10;

/// Largest RSS (KiB) of any child reaped so far.
fn children_max_rss_kib() -> i64 {
    getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss()
}

fn fake_crio(dir: &Path) -> PathBuf {
    let sock = dir.join("crio.sock");
    fake_crio_http(
        &sock,
        r#"{"storage_driver":"vfs","storage_root":"/srv/crio/storage"}"#,
        "[crio]\n  runroot = \"/run/crio-x/storage\"\n",
    );
    sock
}

#[test]
fn seed_memory_is_bounded_and_bombs_are_refused() {
    let dir = tempfile::Builder::new()
        .prefix("seed-memory-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let layer = d.join("layer.tar");
    let hex = write_layer(&layer, 96 << 20).unwrap();
    let big = d.join("big.docker.tar");
    write_docker_archive(&big, "example.com/k8s-shims/big:1", &layer, &hex, 1).unwrap();
    let sock = fake_crio(d);

    // CRI-O path: every blob read and checked, nothing buffered.
    let out = adapter_ok(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &unix(&sock),
        "--dry-run",
        big.to_str().unwrap(),
    ]);
    assert!(out.contains("example.com/k8s-shims/big:1"), "{out}");
    let rss = children_max_rss_kib();
    eprintln!("peak RSS after the CRI-O dry run: {rss} KiB");
    assert!(rss < LIMIT_KIB, "peak RSS {rss} KiB");

    // The same archive gzip'd: inflated to disk, not to memory.
    let gz = d.join("big.docker.tar.gz");
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(std::fs::File::create(&gz).unwrap()),
            flate2::Compression::fast(),
        );
        std::io::copy(&mut std::fs::File::open(&big).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap().flush().unwrap();
    }
    adapter_ok(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &unix(&sock),
        "--dry-run",
        gz.to_str().unwrap(),
    ]);
    let rss = children_max_rss_kib();
    eprintln!("peak RSS after the gzip dry run: {rss} KiB");
    assert!(rss < LIMIT_KIB, "peak RSS {rss} KiB");

    // A gzip bomb: 1 GiB of zeros in about 1 MiB.
    let bomb = d.join("bomb.tar.gz");
    {
        let mut enc = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(std::fs::File::create(&bomb).unwrap()),
            flate2::Compression::fast(),
        );
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap().flush().unwrap();
    }
    let err = adapter_fails(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &unix(&sock),
        "--dry-run",
        bomb.to_str().unwrap(),
    ]);
    assert!(err.contains("decompression bomb"), "{err}");

    // One 1 MiB layer listed 3000 times: refused, not amplified.
    let small = d.join("small-layer.tar");
    let small_hex = write_layer(&small, 1 << 20).unwrap();
    let dup = d.join("dup.docker.tar");
    write_docker_archive(
        &dup,
        "example.com/k8s-shims/dup:1",
        &small,
        &small_hex,
        3000,
    )
    .unwrap();
    let err = adapter_fails(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &unix(&sock),
        "--dry-run",
        dup.to_str().unwrap(),
    ]);
    assert!(
        err.contains("3000 layers, more than the 128 accepted"),
        "{err}"
    );
    let rss = children_max_rss_kib();
    assert!(rss < LIMIT_KIB, "peak RSS {rss} KiB");

    // containerd: blobs streamed to the content store, layer unpacked.
    let cd = Containerd::start("seedmem");
    let lines = cd.seed_each(&cd.socket, &[&big]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].ends_with(" imported"), "{lines:?}");
    let rss = children_max_rss_kib();
    eprintln!("peak RSS after the containerd import: {rss} KiB");
    assert!(rss < LIMIT_KIB, "peak RSS {rss} KiB");
}
