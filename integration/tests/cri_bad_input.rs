//! `cri-adapter` on bad input: broken archives (nothing half-imported may
//! remain in containerd), a missing runtime socket, an upstream that is the
//! adapter's own socket, a runtime that is not ready; and the CRI-O paths
//! that can only be checked without CRI-O (rendered drop-in, the skopeo
//! commands `seed --dry-run` would run).
//!
//! Needs root, containerd, runc, gcc, busybox-static, iproute2 and a built
//! workspace (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use integration::cri::*;
use integration::oci::{self, Entry, ImageDef, Naming};
use integration::XorShift;
use k8s_cri::v1::ListImagesRequest;

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    images: BTreeSet<String>,
    content: BTreeSet<String>,
    snapshots: BTreeSet<String>,
    cri_images: BTreeSet<String>,
}

async fn snapshot(cd: &Containerd) -> Snapshot {
    let cri_images = image_client(channel(&cd.socket).await)
        .list_images(ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|i| format!("{} {:?}", i.id, i.repo_tags))
        .collect();
    Snapshot {
        images: cd.image_names(),
        content: cd.content_digests(),
        snapshots: cd.snapshots(),
        cri_images,
    }
}

/// An image whose layer exists nowhere else (so its blobs would be new).
fn unique_image(name: &str, marker: &str) -> ImageDef {
    let layer = oci::layer_tar(&[
        Entry::Dir {
            path: "data".into(),
            mode: 0o755,
        },
        Entry::File {
            path: "data/marker".into(),
            data: format!("{marker}-{}\n", std::process::id()).into_bytes(),
            mode: 0o644,
        },
    ]);
    ImageDef {
        name: name.into(),
        entrypoint: Vec::new(),
        cmd: vec!["/bin/true".into()],
        env: Vec::new(),
        layer,
        diff_id_override: None,
    }
}

#[track_caller]
fn assert_mentions(err: &str, words: &[&str]) {
    for w in words {
        assert!(err.contains(w), "error lacks {w:?}: {err}");
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_archives_leave_nothing_behind() {
    let cd = Containerd::start("badseed");
    let dir = cd.tmp.path().to_path_buf();
    // A seeded image first, so "nothing changed" is checked against a
    // store that has content.
    cd.seed_each(
        &cd.socket,
        &[&oci::pause_image().write_oci(&dir, "pause.oci.tar")],
    );
    let before = snapshot(&cd).await;
    assert!(before.images.contains(oci::PAUSE_NAME));
    let busybox = oci::busybox_image().oci_archive(Naming::Annotated);

    let mut rng = XorShift::new(XorShift::seed_from_time());
    let junk: Vec<u8> = (0..65536).map(|_| rng.next_u64() as u8).collect();
    let mut cases: Vec<(&str, std::path::PathBuf, Vec<&str>)> = vec![
        (
            "random bytes",
            write(&dir, "junk.tar", &junk),
            vec!["junk.tar", "corrupt or truncated tar"],
        ),
        (
            "truncated tar",
            write(&dir, "half.tar", &busybox[..busybox.len() / 2]),
            vec!["half.tar", "truncated"],
        ),
        (
            "truncated gzip",
            {
                let gz = oci::gzip(&busybox);
                write(&dir, "half.tar.gz", &gz[..gz.len() / 2])
            },
            vec!["half.tar.gz", "gzip"],
        ),
        (
            "no image name",
            write(
                &dir,
                "anonymous.tar",
                &oci::busybox_image().oci_archive(Naming::Anonymous),
            ),
            vec!["anonymous.tar", "no image name"],
        ),
        (
            "docker archive without RepoTags",
            {
                let a = unique_image("", "untagged").docker_archive();
                // Rebuild manifest.json with an empty RepoTags list.
                let mut ar = tar::Archive::new(&a[..]);
                let mut b = tar::Builder::new(Vec::new());
                for e in ar.entries().unwrap() {
                    let mut e = e.unwrap();
                    let path = e.path().unwrap().into_owned();
                    let mut data = Vec::new();
                    std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                    if path.to_str() == Some("manifest.json") {
                        let mut m: serde_json::Value = serde_json::from_slice(&data).unwrap();
                        m[0]["RepoTags"] = serde_json::json!([]);
                        data = serde_json::to_vec(&m).unwrap();
                    }
                    let mut h = tar::Header::new_gnu();
                    h.set_size(data.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, &data[..]).unwrap();
                }
                write(&dir, "untagged.docker.tar", &b.into_inner().unwrap())
            },
            vec!["untagged.docker.tar", "no image name"],
        ),
        (
            "blob that does not match its digest",
            {
                let img = unique_image("example.com/k8s-shims/tampered:1", "tampered");
                let mut a = img.oci_archive(Naming::Annotated);
                let needle = b"tampered-";
                let at = a
                    .windows(needle.len())
                    .position(|w| w == needle)
                    .expect("marker in the archive");
                a[at] = b'T';
                write(&dir, "tampered.tar", &a)
            },
            vec!["is corrupt (digest mismatch)"],
        ),
    ];
    // A config that lies about its layer: found only after the layer was
    // written and unpacked, so `seed` must roll back.
    let mut liar = unique_image("example.com/k8s-shims/liar:1", "liar");
    liar.diff_id_override = Some(oci::digest(b"not the layer"));
    cases.push((
        "config diff_id that does not match the layer",
        liar.write_oci(&dir, "liar.tar"),
        vec!["layer 0 unpacked to", "image config says"],
    ));

    for (what, path, words) in &cases {
        let err = adapter_fails(&[
            "seed",
            "--runtime",
            "containerd",
            "--endpoint",
            &cd.endpoint(),
            path.to_str().unwrap(),
        ]);
        eprintln!("{what}: {}", err.trim());
        assert_mentions(&err, words);
        assert!(err.starts_with("cri-adapter: "), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        let after = snapshot(&cd).await;
        assert_eq!(after, before, "{what}: containerd changed:\n{err}");
    }
    // The store still works: a good archive imports afterwards.
    let lines = cd.seed_each(
        &cd.socket,
        &[&oci::busybox_image().write_oci(&dir, "busybox.oci.tar")],
    );
    assert_eq!(lines.len(), 1);
    assert!(lines[0].ends_with(" imported"), "{lines:?}");

    // `wait` names the condition that is false: without a CNI config,
    // NetworkReady goes false.
    let conf = cd.cni_conf_dir.join("10-podnet.conflist");
    let saved = std::fs::read(&conf).unwrap();
    std::fs::remove_file(&conf).unwrap();
    // containerd notices the removal a moment later (fsnotify); until then
    // a run may succeed, or fail because readiness could not hold its
    // settle time within the 1 s: try again until it names the condition.
    let mut err = String::new();
    for _ in 0..20 {
        let out = adapter(&["wait", "--endpoint", &cd.endpoint(), "--timeout", "1"]);
        if !out.status.success() {
            err = out.stderr_str();
            if err.contains("condition NetworkReady is false") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_mentions(
        &err,
        &["not ready after 1s", "condition NetworkReady is false"],
    );
    // `--no-network` does not need it.
    adapter_ok(&[
        "wait",
        "--endpoint",
        &cd.endpoint(),
        "--timeout",
        "5",
        "--no-network",
    ]);
    std::fs::write(&conf, saved).unwrap();
    adapter_ok(&["wait", "--endpoint", &cd.endpoint(), "--timeout", "20"]);

    // `--runtime auto` wherever a runtime is chosen; a NOTIFY_SOCKET that
    // cannot be reached is logged at warn, and `wait` still succeeds.
    let nobody = dir.join("no-systemd.sock");
    let out = adapter_env(
        &[
            "wait",
            "--runtime",
            "auto",
            "--endpoint",
            &cd.endpoint(),
            "--timeout",
            "20",
        ],
        &[("NOTIFY_SOCKET", nobody.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), "");
    assert_mentions(
        &out.stderr_str(),
        &["WARN", "cannot notify systemd", nobody.to_str().unwrap()],
    );
    let out = adapter_ok(&[
        "seed",
        "--runtime",
        "auto",
        "--endpoint",
        &cd.endpoint(),
        dir.join("busybox.oci.tar").to_str().unwrap(),
    ]);
    assert!(out.ends_with(" present\n"), "{out}");
    let listen = dir.join("auto-serve.sock");
    let s = Serve::start(&listen, &cd.socket, &["--runtime", "auto"]);
    let v = runtime_client(channel(&s.socket).await)
        .version(k8s_cri::v1::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "containerd");
}

#[test]
fn missing_runtime_socket() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here.sock");
    let ep = unix(&missing);
    let archive = oci::pause_image().write_oci(dir.path(), "pause.oci.tar");

    let err = adapter_fails(&[
        "seed",
        "--runtime",
        "containerd",
        "--endpoint",
        &ep,
        archive.to_str().unwrap(),
    ]);
    assert_mentions(&err, &["connecting to", missing.to_str().unwrap()]);
    // Nothing answers: wait gives up at its timeout and says why.
    let t = std::time::Instant::now();
    let err = adapter_fails(&["wait", "--endpoint", &ep, "--timeout", "1"]);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_mentions(
        &err,
        &[
            missing.to_str().unwrap(),
            "not ready after 1s",
            "unreachable",
        ],
    );
    let err = adapter_fails(&["detect", "--endpoint", &ep]);
    assert_mentions(
        &err,
        &[
            "no container runtime answered",
            missing.to_str().unwrap(),
            "no such socket",
        ],
    );
    // A file that is not a socket.
    let plain = dir.path().join("plain.sock");
    std::fs::write(&plain, b"").unwrap();
    let err = adapter_fails(&["detect", "--endpoint", &unix(&plain)]);
    assert_mentions(&err, &["no container runtime answered", "plain.sock"]);
    // Endpoints that are not unix sockets.
    let err = adapter_fails(&["wait", "--endpoint", "tcp://127.0.0.1:1", "--timeout", "1"]);
    assert_mentions(&err, &["only unix sockets"]);
    let err = adapter_fails(&["serve", "--listen", "/tmp/x.sock", "--upstream", "http://x"]);
    assert_mentions(&err, &["only unix sockets"]);
}

#[test]
fn serve_refuses_its_own_socket() {
    let dir = tempfile::tempdir().unwrap();
    let me = dir.path().join("cri.sock");
    let err = adapter_fails(&[
        "serve",
        "--listen",
        me.to_str().unwrap(),
        "--upstream",
        &unix(&me),
    ]);
    assert_mentions(&err, &["adapter's own socket", "cri.sock"]);
    assert!(!me.exists(), "a refused serve left its socket behind");
    // The same through a relative path component.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let dotted = format!("{}/sub/../cri.sock", dir.path().display());
    let err = adapter_fails(&[
        "serve",
        "--listen",
        me.to_str().unwrap(),
        "--upstream",
        &format!("unix://{dotted}"),
    ]);
    assert_mentions(&err, &["adapter's own socket"]);
    // And through a symlink that will point at the socket once it exists.
    let link = dir.path().join("link.sock");
    std::os::unix::fs::symlink(&me, &link).unwrap();
    let err = adapter_fails(&[
        "serve",
        "--listen",
        me.to_str().unwrap(),
        "--upstream",
        &unix(&link),
    ]);
    assert_mentions(&err, &["own socket"]);
    assert!(!me.exists(), "a refused serve left its socket behind");

    // A stale socket is replaced; a live one is refused.
    let up = dir.path().join("upstream.sock");
    drop(std::os::unix::net::UnixListener::bind(&me).unwrap());
    assert!(me.exists());
    let mut s = Serve::start(&me, &up, &[]);
    assert!(s.alive());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&me).unwrap().permissions().mode() & 0o777,
        0o660
    );
    let err = adapter_fails(&[
        "serve",
        "--listen",
        me.to_str().unwrap(),
        "--upstream",
        &unix(&up),
    ]);
    assert_mentions(&err, &["in use"]);
    assert!(s.alive());
    // Not a socket at all.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = adapter_fails(&[
        "serve",
        "--listen",
        file.to_str().unwrap(),
        "--upstream",
        &unix(&up),
    ]);
    assert_mentions(&err, &["not a socket"]);
    drop(s);
    assert!(!me.exists(), "serve did not remove its socket on SIGTERM");
}

#[test]
fn crio_render_drop_in() {
    let base = [
        "render",
        "--runtime",
        "cri-o",
        "--cni-bin-dir",
        "/run/k8s-shims/cni/bin",
        "--cni-bin-dir",
        "/usr/lib/cni",
        "--cni-conf-dir",
        "/etc/cni/net.d",
        "--sandbox-image",
        oci::PAUSE_NAME,
        // Whatever this host's capabilities: CRI-O cannot clamp.
        "--restrict-oom-score-adj",
        "false",
    ];
    let out = adapter_ok(&base);
    let runc_table = "[crio.runtime.runtimes.runc]\n\
         runtime_path = \"\"\n\
         runtime_type = \"oci\"\n\
         runtime_root = \"/run/runc\"\n";
    assert_eq!(
        out,
        format!(
            "# Rendered by cri-adapter (k8s-shims). Do not edit: re-render instead.\n\
             [crio.image]\n\
             pause_image = \"registry.k8s.io/pause:3.6\"\n\
             \n\
             [crio.network]\n\
             network_dir = \"/etc/cni/net.d\"\n\
             plugin_dirs = [\"/run/k8s-shims/cni/bin\", \"/usr/lib/cni\"]\n\
             \n\
             [crio.runtime]\n\
             cgroup_manager = \"cgroupfs\"\n\
             conmon_cgroup = \"pod\"\n\
             default_runtime = \"runc\"\n\
             \n\
             {runc_table}\
             monitor_cgroup = \"pod\"\n\
             monitor_env = [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"]\n\
             allowed_annotations = [\"io.containers.trace-syscall\"]\n"
        )
    );
    assert_eq!(adapter_ok(&base), out, "not deterministic");
    let mut systemd = base.to_vec();
    systemd.push("--systemd-cgroup");
    let s = adapter_ok(&systemd);
    assert!(
        s.contains("cgroup_manager = \"systemd\"\nconmon_cgroup = \"system.slice\"\n"),
        "{s}"
    );
    assert!(s.contains("monitor_cgroup = \"system.slice\"\n"), "{s}");
    // Written to a file: the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("10-k8s-shims.conf");
    let mut to_file = base.to_vec();
    to_file.extend(["--output", file.to_str().unwrap()]);
    assert_eq!(adapter_ok(&to_file), "");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), out);
    // A CRI-O not at its defaults: socket, storage, runc.
    // --pause-image is CRI-O's name for --sandbox-image.
    let mut custom: Vec<&str> = base
        .iter()
        .map(|a| match *a {
            "--sandbox-image" => "--pause-image",
            oci::PAUSE_NAME => "example.org/pause:1",
            a => a,
        })
        .collect();
    custom.extend([
        "--listen",
        "/run/x/crio.sock",
        "--root",
        "/var/lib/x/storage",
        "--runroot",
        "/run/x/storage",
        "--storage-driver",
        "vfs",
        "--runc-path",
        "/usr/sbin/runc",
        "--runc-root",
        "/run/x/runc",
    ]);
    let c = adapter_ok(&custom);
    assert!(
        c.contains(
            "[crio]\nroot = \"/var/lib/x/storage\"\nrunroot = \"/run/x/storage\"\nstorage_driver = \"vfs\"\n\n\
             [crio.api]\nlisten = \"/run/x/crio.sock\"\n\n[crio.image]\npause_image = \"example.org/pause:1\"\n"
        ),
        "{c}"
    );
    assert!(
        c.contains("runtime_path = \"/usr/sbin/runc\"\nruntime_type = \"oci\"\nruntime_root = \"/run/x/runc\"\n"),
        "{c}"
    );
    // CRI-O cannot clamp OOM scores: asking for it is an error, not a no-op.
    let mut oom = base[..base.len() - 1].to_vec();
    oom.push("true");
    let err = adapter_fails(&oom);
    assert_mentions(&err, &["CRI-O has no setting that restricts oom_score_adj"]);
    // CRI-O-only settings are refused for containerd.
    let err = adapter_fails(&[
        "render",
        "--runtime",
        "containerd",
        "--storage-driver",
        "vfs",
    ]);
    assert_mentions(&err, &["--storage-driver is a CRI-O setting"]);
    // containerd 1.x takes one bin dir.
    let err = adapter_fails(&[
        "render",
        "--runtime",
        "containerd",
        "--cni-bin-dir",
        "/a",
        "--cni-bin-dir",
        "/b",
    ]);
    assert_mentions(&err, &["one CNI bin dir"]);
}

#[test]
fn crio_seed_dry_run_prints_skopeo_commands() {
    let dir = tempfile::tempdir().unwrap();
    let pause = oci::pause_image();
    let oci_path = pause.write_oci(dir.path(), "pause.oci.tar");
    let docker_path = dir.path().join("busybox.docker.tar");
    std::fs::write(
        &docker_path,
        oci::busybox_image()
            .renamed("busybox:1.36")
            .docker_archive(),
    )
    .unwrap();
    let gz_path = dir.path().join("pause.oci.tar.gz");
    std::fs::write(
        &gz_path,
        oci::gzip(&pause.renamed("me/pause:x").oci_archive(Naming::Annotated)),
    )
    .unwrap();
    // CRI-O names its store over its socket: a fake answering like it.
    let sock = dir.path().join("crio.sock");
    fake_crio_http(
        &sock,
        r#"{"storage_driver":"vfs","storage_root":"/srv/crio/storage","cgroup_driver":"cgroupfs"}"#,
        "[crio]\n  root = \"/srv/crio/storage\"\n  runroot = \"/run/crio-x/storage\"\n  storage_driver = \"vfs\"\n  [crio.api]\n    listen = \"/run/crio-x/crio.sock\"\n",
    );
    let out = adapter_ok(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &unix(&sock),
        "--dry-run",
        oci_path.to_str().unwrap(),
        docker_path.to_str().unwrap(),
        gz_path.to_str().unwrap(),
    ]);
    let store = "containers-storage:[vfs@/srv/crio/storage+/run/crio-x/storage]";
    assert_eq!(
        out,
        format!(
            "skopeo copy oci:<layout of image 0 of {}>:image {store}registry.k8s.io/pause:3.6\n\
             skopeo copy oci:<layout of image 0 of {}>:image {store}docker.io/library/busybox:1.36\n\
             skopeo copy oci:<layout of image 0 of {}>:image {store}docker.io/me/pause:x\n",
            oci_path.display(),
            docker_path.display(),
            gz_path.display(),
        )
    );
    // No CRI-O: the store cannot be named, so nothing is guessed.
    let missing = dir.path().join("missing.sock");
    let err = adapter_fails(&[
        "seed",
        "--runtime",
        "cri-o",
        "--endpoint",
        &unix(&missing),
        "--dry-run",
        oci_path.to_str().unwrap(),
    ]);
    assert_mentions(&err, &["asking CRI-O at", "missing.sock", "/info"]);
    // The archive is still checked in a dry run.
    let anon = write(
        dir.path(),
        "anonymous.tar",
        &pause.oci_archive(Naming::Anonymous),
    );
    let err = adapter_fails(&[
        "seed",
        "--runtime",
        "cri-o",
        "--dry-run",
        anon.to_str().unwrap(),
    ]);
    assert_mentions(&err, &["no image name"]);
}

/// The archives the tests build are what cri.md §5.2 describes.
#[test]
fn archive_builder_layouts() {
    let img = oci::busybox_image();
    let entries = oci::layer_entries(&img.layer);
    let applets = oci::busybox_applets();
    assert!(applets.len() > 200, "{} applets", applets.len());
    let links: Vec<_> = entries
        .iter()
        .filter(|e| e.1 == tar::EntryType::Link)
        .collect();
    assert_eq!(links.len(), applets.len());
    assert!(links
        .iter()
        .all(|e| e.2.as_deref() == Some("bin/busybox") && e.0.starts_with("bin/")));
    let mut ar = tar::Archive::new(&img.layer[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(
            (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
            (0, 0, 0)
        );
        if e.path().unwrap().to_str() == Some("tmp/") {
            assert_eq!(h.mode().unwrap() & 0o7777, 0o1777);
        }
    }
    // Deterministic.
    assert_eq!(
        img.oci_archive(Naming::Annotated),
        oci::busybox_image().oci_archive(Naming::Annotated)
    );
    // index.json carries both names; the anonymous variant neither.
    let files = |a: &[u8]| -> std::collections::HashMap<String, Vec<u8>> {
        let mut ar = tar::Archive::new(a);
        ar.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let p = e.path().unwrap().to_string_lossy().into_owned();
                let mut d = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut d).unwrap();
                (p, d)
            })
            .collect()
    };
    let pause = oci::pause_image();
    let f = files(&pause.oci_archive(Naming::Annotated));
    let index: serde_json::Value = serde_json::from_slice(&f["index.json"]).unwrap();
    let ann = &index["manifests"][0]["annotations"];
    assert_eq!(ann["io.containerd.image.name"], oci::PAUSE_NAME);
    assert_eq!(ann["org.opencontainers.image.ref.name"], "3.6");
    let b = pause.blobs();
    let cfg: serde_json::Value = serde_json::from_slice(&b.config.1).unwrap();
    assert_eq!(cfg["architecture"], "amd64");
    assert_eq!(cfg["config"]["Entrypoint"], serde_json::json!(["/pause"]));
    assert_eq!(cfg["rootfs"]["diff_ids"][0], b.layer.0);
    for (d, data) in [&b.manifest, &b.config, &b.layer] {
        assert_eq!(&f[&format!("blobs/sha256/{}", &d[7..])], data);
    }
    let f = files(&pause.oci_archive(Naming::Anonymous));
    let index: serde_json::Value = serde_json::from_slice(&f["index.json"]).unwrap();
    assert!(index["manifests"][0].get("annotations").is_none());
    assert_eq!(
        oci::gunzip(&oci::gzip(&pause.docker_archive())),
        pause.docker_archive()
    );
}
