#![allow(clippy::unwrap_used)]
//! The Nix side of the workspace (`flake.nix`, `nix/`), tested with Debian's
//! Nix 2.8 (`nix-bin`) and the lint tools `scripts/nix-tools` installs.
//!
//! Always:
//! * every `.nix` file of the repository parses (`nix-instantiate --parse`);
//! * every `.nix` file is formatted (alejandra) and deadnix finds nothing;
//! * the pure renderers (`nix/lib/render.nix`, `nix/lib/cidr.nix`) evaluate
//!   to the expected JSON, and the checks behind the host-local assertions
//!   give the expected messages;
//! * a conflist rendered by Nix gives a working pod network: our `bridge` +
//!   our `host-local`, and the reference `bridge` + our `host-local` (the
//!   CRI-O example node), in throwaway namespaces.
//!
//! With nixpkgs' lib (`NIXPKGS_LIB`, a nixpkgs or nixpkgs.lib checkout; lib
//! a53daa43 or older works with Nix 2.8): every module evaluates through
//! `lib.evalModules` against stand-ins of the NixOS options it sets
//! (`nix/tests/eval.nix`), and the flake's outputs evaluate against a
//! stand-in nixpkgs (`nix/tests/flake-eval.nix`). These are `#[ignore]`d
//! (a plain run lists them as ignored, never as passed); with
//! `--include-ignored` and no `NIXPKGS_LIB` they fail saying what to set.
//!
//! Run: `scripts/nix-tools && cargo build --workspace --bins &&
//! cargo test -p integration --test nix_modules`, and where the lib is:
//! `NIXPKGS_LIB=/path/to/nixpkgs.lib cargo test -p integration --test
//! nix_modules -- --include-ignored`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration::netns::{run_with_timeout, veth_between, with_prev, Host, Impl, Netns, Pod};
use integration::{workspace_root, Output, Store, PATH};
use serde_json::{json, Value};

const NIX_HINT: &str =
    "install Debian's nix-bin (scripts/test does: scripts/ensure-packages nix-bin)";
const TOOLS_HINT: &str = "run scripts/nix-tools (installs deadnix and alejandra into target/nix-tools/bin, or $NIX_TOOLS_DIR/bin)";

/// Runs a command with a timeout; panics with `hint` when it cannot start.
fn run(program: &Path, args: &[&str], env: &[(&str, &str)], hint: &str) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(workspace_root()).env(
        "PATH",
        std::env::var("PATH").unwrap_or_else(|_| PATH.into()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    if cmd.get_program() == "nix-instantiate" && which("nix-instantiate").is_none() {
        panic!("nix-instantiate not found: {hint}");
    }
    run_with_timeout(
        cmd,
        b"",
        Duration::from_secs(120),
        &format!("{} {}", program.display(), args.join(" ")),
    )
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .unwrap_or_else(|| PATH.into())
        .to_str()
        .unwrap_or(PATH)
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[track_caller]
fn must(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout_str(),
        out.stderr_str()
    );
    out.stdout_str()
}

/// Every `.nix` file of the repository (tracked, or new and not ignored).
fn nix_files() -> Vec<String> {
    let out = run(
        Path::new("/usr/bin/git"),
        &[
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            "*.nix",
        ],
        &[],
        "git is needed to list the repository's files",
    );
    let root = workspace_root();
    let files: Vec<String> = must(out, "git ls-files")
        .lines()
        .filter(|f| root.join(f).is_file())
        .map(str::to_string)
        .collect();
    assert!(
        files.iter().any(|f| f == "flake.nix") && files.len() >= 10,
        "expected flake.nix and the nix/ tree, found {files:?}"
    );
    files
}

/// `nix-instantiate` with a dummy store (works as any user, writes nothing).
fn nix_instantiate(args: &[&str]) -> Output {
    let mut full = vec!["--store", "dummy://"];
    full.extend_from_slice(args);
    run(
        Path::new("nix-instantiate"),
        &full,
        &[("NIX_ABORT_ON_WARN", "1")],
        NIX_HINT,
    )
}

/// Evaluates a Nix expression (strict, JSON) and parses the result.
#[track_caller]
fn eval_json(expr: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--eval", "--strict", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--expr", expr]);
    let out = must(
        nix_instantiate(&args),
        &format!("nix-instantiate --eval {expr}"),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn render_nix() -> String {
    workspace_root()
        .join("nix/lib/render.nix")
        .to_str()
        .unwrap()
        .to_string()
}

fn tool(name: &str) -> PathBuf {
    let dir = match std::env::var_os("NIX_TOOLS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("target/nix-tools"),
    };
    let path = dir.join("bin").join(name);
    assert!(path.is_file(), "{} not found: {TOOLS_HINT}", path.display());
    path
}

// ---------------------------------------------------------------------------
// Syntax, format, lint
// ---------------------------------------------------------------------------

#[test]
fn every_nix_file_parses() {
    let files = nix_files();
    let mut args = vec!["--parse"];
    args.extend(files.iter().map(String::as_str));
    must(nix_instantiate(&args), "nix-instantiate --parse");
    // The gate works: a broken file is refused.
    let tmp = tempfile::Builder::new().suffix(".nix").tempfile().unwrap();
    std::fs::write(tmp.path(), "{ a = ; }").unwrap();
    let out = nix_instantiate(&["--parse", tmp.path().to_str().unwrap()]);
    assert!(!out.status.success(), "a syntax error was accepted");
    assert!(
        out.stderr_str().contains("syntax error"),
        "{}",
        out.stderr_str()
    );
}

#[test]
fn every_nix_file_is_formatted() {
    let files = nix_files();
    let alejandra = tool("alejandra");
    let mut args = vec!["--check"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&alejandra, &args, &[], TOOLS_HINT);
    assert!(
        out.status.success(),
        "not formatted (fix: {} {}):\n{}{}",
        alejandra.display(),
        files.join(" "),
        out.stdout_str(),
        out.stderr_str()
    );
}

#[test]
fn deadnix_finds_nothing() {
    let files = nix_files();
    let deadnix = tool("deadnix");
    let mut args = vec!["--fail"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&deadnix, &args, &[("NO_COLOR", "1")], TOOLS_HINT);
    assert!(
        out.status.success(),
        "deadnix found unused code:\n{}{}",
        out.stdout_str(),
        out.stderr_str()
    );
}

// ---------------------------------------------------------------------------
// Pure renderers (plain Nix 2.8, no nixpkgs)
// ---------------------------------------------------------------------------

/// The quoted names in the first line of `text` that starts with `key`.
fn quoted_list(text: &str, key: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("no line starting with {key}"));
    let mut v: Vec<String> = line
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn the_nix_source_filter_keeps_every_workspace_member() {
    // cargo refuses to load a workspace with a member missing, so the Nix
    // build's source filter must list every member of Cargo.toml.
    let root = workspace_root();
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let nix = std::fs::read_to_string(root.join("nix/packages.nix")).unwrap();
    assert_eq!(
        quoted_list(&nix, "members ="),
        quoted_list(&cargo, "members =")
    );
}

#[test]
fn renderers_give_the_runtime_settings() {
    let r = render_nix();
    let v = eval_json(
        &format!(
            r#"let r = import {r}; d = {{ binDir = "/nix/store/x-plugins/bin"; confDir = "/etc/k8s-shims/cni/net.d"; }}; in {{
              containerd = r.runtimeSettings (d // {{ runtime = "containerd"; }});
              containerd3 = r.runtimeSettings (d // {{ runtime = "containerd"; configVersion = 3; }});
              crio = r.runtimeSettings (d // {{ runtime = "cri-o"; }});
              endpoints = r.endpoints;
              files = [ (r.conflistFileName {{ priority = 5; name = "a"; }}) (r.conflistFileName {{ priority = 10; name = "b"; }}) ];
              links = r.pluginLinks {{ bridge = {{ package = "/nix/store/o"; program = "bridge"; }}; kn = {{ package = "/nix/store/k"; program = "kn-bridge"; }}; }};
              types = r.conflistTypes {{ plugins = [ {{ type = "bridge"; ipam = {{ type = "host-local"; }}; }} {{ type = "portmap"; }} ]; }};
              commands = r.criAdapterCommands {{ adapter = "/a"; runtime = "cri-o"; endpoint = "unix:///var/run/crio/crio.sock"; images = [ "/i.tar" ]; serveSocket = "/run/s.sock"; }};
              noNetwork = (r.criAdapterCommands {{ adapter = "/a"; runtime = "containerd"; endpoint = "unix:///e"; timeout = 5; network = false; }}).wait;
              pauseV2 = r.containerdSettings (d // {{ sandboxImage = "registry.k8s.io/pause:3.10"; }});
              pauseV3 = r.containerdSettings (d // {{ configVersion = 3; sandboxImage = "registry.k8s.io/pause:3.10"; }});
              refs = map r.imageNameTag [ "docker.io/library/pause:latest" "pause" "localhost:5000/x:1" "a/b@sha256:00" ];
              bridge = r.bridgePlugin {{ enableDad = true; vlanTrunk = [ {{ id = 5; minID = null; maxID = null; }} ]; settings = {{ dns.nameservers = [ "10.96.0.10" ]; }}; }};
            }}"#
        ),
        &[],
    );
    let cni =
        json!({"bin_dir": "/nix/store/x-plugins/bin", "conf_dir": "/etc/k8s-shims/cni/net.d"});
    assert_eq!(
        v["containerd"],
        json!({"plugins": {"io.containerd.grpc.v1.cri": {"cni": cni}}})
    );
    assert_eq!(
        v["containerd3"],
        json!({"plugins": {"io.containerd.cri.v1.runtime": {"cni": cni}}})
    );
    assert_eq!(
        v["pauseV2"],
        json!({"plugins": {"io.containerd.grpc.v1.cri": {"cni": cni, "sandbox_image": "registry.k8s.io/pause:3.10"}}})
    );
    assert_eq!(
        v["pauseV3"],
        json!({"plugins": {"io.containerd.cri.v1.runtime": {"cni": cni},
                           "io.containerd.cri.v1.images": {"pinned_images": {"sandbox": "registry.k8s.io/pause:3.10"}}}})
    );
    assert_eq!(
        v["refs"],
        json!([{"name": "docker.io/library/pause", "tag": "latest"}, {"name": "pause", "tag": "latest"},
               {"name": "localhost:5000/x", "tag": "1"}, {"name": "a/b@sha256:00", "tag": null}])
    );
    assert_eq!(
        v["crio"],
        json!({"crio": {"network": {"network_dir": "/etc/k8s-shims/cni/net.d", "plugin_dirs": ["/nix/store/x-plugins/bin"]}}})
    );
    assert_eq!(
        v["endpoints"],
        json!({"containerd": "unix:///run/containerd/containerd.sock", "cri-o": "unix:///var/run/crio/crio.sock"})
    );
    assert_eq!(v["files"], json!(["05-a.conflist", "10-b.conflist"]));
    assert_eq!(
        v["links"],
        json!({"bridge": "/nix/store/o/bin/bridge", "kn": "/nix/store/k/bin/kn-bridge"})
    );
    assert_eq!(v["types"], json!(["bridge", "host-local", "portmap"]));
    let ep = "unix:///var/run/crio/crio.sock";
    assert_eq!(
        v["commands"],
        json!({
            "wait": ["/a", "wait", "--runtime", "cri-o", "--endpoint", ep, "--timeout", "120"],
            "seed": ["/a", "seed", "--runtime", "cri-o", "--endpoint", ep, "/i.tar"],
            "serve": ["/a", "serve", "--listen", "/run/s.sock", "--upstream", ep],
        })
    );
    assert_eq!(
        v["noNetwork"],
        json!([
            "/a",
            "wait",
            "--runtime",
            "containerd",
            "--endpoint",
            "unix:///e",
            "--timeout",
            "5",
            "--no-network"
        ])
    );
    assert_eq!(
        v["bridge"],
        json!({"type": "bridge", "bridge": "cni0", "enabledad": true, "ipam": {},
               "vlanTrunk": [{"id": 5}], "dns": {"nameservers": ["10.96.0.10"]}})
    );
}

#[test]
fn cidr_checks_explain_bad_ranges() {
    let r = render_nix();
    // (ranges as Nix, cniVersion, expected message fragments; [] = valid)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            r#"[ [ { subnet = "10.244.1.0/24"; } { subnet = "10.244.2.0/24"; } ] [ { subnet = "fd00:10:244:1::/64"; } ] ]"#,
            "1.0.0",
            &[],
        ),
        (
            r#"[ [ { subnet = "10.1.0.0/24"; rangeEnd = "10.1.0.127"; } { subnet = "10.1.0.0/24"; rangeStart = "10.1.0.128"; } ] ]"#,
            "1.0.0",
            &[],
        ),
        (
            r#"[ [ { subnet = "10.1.0.0/16"; } ] [ { subnet = "10.1.2.0/24"; } ] ]"#,
            "1.0.0",
            &["range sets 0 and 1 overlap"],
        ),
        (
            r#"[ [ { subnet = "fd00::/48"; } ] [ { subnet = "fd00:0:0:5::/64"; } ] ]"#,
            "1.0.0",
            &["range sets 0 and 1 overlap"],
        ),
        (
            r#"[ [ { subnet = "10.1.0.0/24"; rangeEnd = "10.1.0.127"; } { subnet = "10.1.0.0/24"; rangeStart = "10.1.0.127"; } ] ]"#,
            "1.0.0",
            &["range set 0: ranges 0 (10.1.0.1-10.1.0.127) and 1 (10.1.0.127-10.1.0.254) overlap"],
        ),
        (
            r#"[ [ { subnet = "10.1.2/24"; } ] ]"#,
            "1.0.0",
            &["subnet \"10.1.2/24\" is not a valid CIDR"],
        ),
        (
            r#"[ [ { subnet = "010.1.2.0/24"; } ] ]"#,
            "1.0.0",
            &["is not a valid CIDR"],
        ),
        (
            r#"[ [ { subnet = "fd00::1::/64"; } ] ]"#,
            "1.0.0",
            &["is not a valid CIDR"],
        ),
        (
            r#"[ [ { subnet = "2001:DB8:1::24:19ff:fee1:c44a/64"; } ] ]"#,
            "1.0.0",
            &["has host bits set; the network address for a /64 is 2001:db8:1::/64"],
        ),
        (
            r#"[ [ { subnet = "10.9.0.0/31"; } ] ]"#,
            "1.0.0",
            &["too small to allocate from (host-local needs a prefix of at most /30)"],
        ),
        (
            r#"[ [ { subnet = "10.9.0.0/24"; rangeStart = "10.9.1.1"; } ] ]"#,
            "1.0.0",
            &["rangeStart 10.9.1.1 is not in subnet 10.9.0.0/24"],
        ),
        (
            r#"[ [ { subnet = "10.9.0.0/24"; rangeStart = "10.9.0.100"; rangeEnd = "10.9.0.50"; } ] ]"#,
            "1.0.0",
            &["rangeStart 10.9.0.100 is after rangeEnd 10.9.0.50"],
        ),
        (
            r#"[ [ { subnet = "10.9.0.0/24"; } { subnet = "fd00::/64"; } ] ]"#,
            "1.0.0",
            &["range set 0 mixes IPv4 and IPv6"],
        ),
        (r#"[ [ ] ]"#, "1.0.0", &["range set 0 is empty"]),
        (r#"[ ]"#, "1.0.0", &["no range set given"]),
        (
            r#"[ [ { subnet = "10.1.0.0/24"; } ] [ { subnet = "10.2.0.0/24"; } ] ]"#,
            "0.2.0",
            &["allows at most one IPv4 and one IPv6 range set"],
        ),
    ];
    for (ranges, version, want) in cases {
        let v = eval_json(
            &format!(
                r#"(import {r}).cidr.rangeSetProblems {{ where = "W"; ranges = {ranges}; cniVersion = "{version}"; }}"#
            ),
            &[],
        );
        let msgs: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect();
        assert_eq!(msgs.len(), want.len(), "{ranges}: {msgs:#?}");
        for (m, w) in msgs.iter().zip(want.iter()) {
            assert!(
                m.starts_with("W: ") && m.contains(w),
                "{ranges}: {m:?} lacks {w:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// A conflist written by Nix, run by the plugins
// ---------------------------------------------------------------------------

/// The conflist `nix/lib/render.nix` renders for a node (bridge with our
/// module's defaults, host-local with a range set of `start`..`end` in
/// 10.93.0.0/24 plus an IPv6 set, portmap), with `data_dir` as dataDir.
fn nix_conflist(data_dir: &Path) -> Value {
    let r = render_nix();
    let data = data_dir.to_str().unwrap();
    eval_json(
        &format!(
            r#"{{ dataDir }}: let r = import {r}; in r.conflist {{
              name = "nixnet";
              cniVersion = "1.0.0";
              plugins = [
                (r.bridgePlugin {{
                  bridge = "nixbr0";
                  isGateway = true;
                  isDefaultGateway = true;
                  ipMasq = true;
                  hairpinMode = true;
                  ipam = r.hostLocalIpam {{
                    ranges = [
                      [ {{ subnet = "10.93.0.0/24"; rangeStart = "10.93.0.10"; rangeEnd = "10.93.0.20"; }} ]
                      [ {{ subnet = "fd93::/64"; }} ]
                    ];
                    inherit dataDir;
                  }};
                }})
                (r.portmapPlugin {{ }})
              ];
            }}"#
        ),
        &["--argstr", "dataDir", data],
    )
}

fn pod_network_from_nix_conflist(imp: &Impl) {
    let host = Host::new(imp);
    let list = nix_conflist(host.data_dir());
    assert_eq!(list["plugins"][1]["type"], "portmap", "{list}");
    // What a runtime hands the first plugin of a conflist.
    let mut conf = list["plugins"][0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    assert_eq!(conf["ipam"]["dataDir"], host.data_dir().to_str().unwrap());

    let pod = Pod::new("nixpod");
    let result = host.must_add(&conf, &pod);
    let v4 = pod.addr(false);
    let last: u8 = v4
        .strip_prefix("10.93.0.")
        .unwrap_or_else(|| panic!("{}: pod address {v4} not in 10.93.0.0/24", imp.label))
        .parse()
        .unwrap();
    assert!(
        (10..=20).contains(&last),
        "{}: {v4} outside rangeStart..rangeEnd",
        imp.label
    );
    assert!(
        pod.addr(true).starts_with("fd93::"),
        "{}: {:?}",
        imp.label,
        pod.addrs()
    );
    assert_eq!(
        Store::new(host.data_dir(), "nixnet").ip_names().len(),
        2,
        "{}: one reservation per range set",
        imp.label
    );
    // The gateway host-local reported is on the bridge and answers ping.
    let mut ok = false;
    for _ in 0..5 {
        if pod
            .ns
            .run(&["ping", "-c1", "-W1", "10.93.0.1"])
            .status
            .success()
        {
            ok = true;
            break;
        }
    }
    assert!(
        ok,
        "{}: the pod cannot ping its gateway 10.93.0.1",
        imp.label
    );

    host.must_del(&with_prev(&conf, &result), &pod);
    host.assert_clean("nixnet", &[&pod], "after DEL of the Nix-rendered network");
}

#[test]
fn nix_rendered_conflist_gives_a_working_pod_network() {
    // The containerd example node: our bridge and our host-local.
    pod_network_from_nix_conflist(&Impl::ours());
}

#[test]
fn nix_rendered_conflist_with_the_reference_bridge_and_our_host_local() {
    // The CRI-O example node: the reference bridge and our host-local.
    pod_network_from_nix_conflist(&Impl::ref_bridge_ours_ipam());
}

/// flannel mode: the main plugin Nix renders (`flannelPlugin` over the
/// bridge module's defaults) run through a flannel-style delegation, as
/// flannel's CNI plugin does it: subnet.env (written here) gives the
/// subnet, the network route, the MTU and whether flannel masquerades; the
/// delegate (our bridge module's object) gets name, cniVersion, `ipMasq`,
/// `mtu`, `isGateway` and an `ipam` built on the rendered base (host-local
/// with its dataDir) with the node's range; `imp`'s bridge and host-local
/// attach the pod.
fn flannel_mode_delegation(imp: &Impl) {
    let host = Host::new(imp);
    let r = render_nix();
    let list = eval_json(
        &format!(
            r#"{{ dataDir }}: let r = import {r}; in r.conflist {{
              name = "flannelnet";
              plugins = [
                (r.flannelPlugin {{
                  delegate = r.bridgePlugin {{ bridge = "flnbr0"; isGateway = true; isDefaultGateway = true; ipMasq = true; hairpinMode = true; mtu = 9000; }};
                  ipam = {{ type = "host-local"; inherit dataDir; }};
                }})
                (r.portmapPlugin {{ }})
              ];
            }}"#
        ),
        &["--argstr", "dataDir", host.data_dir().to_str().unwrap()],
    );
    let main = &list["plugins"][0];
    assert_eq!(main["type"], "flannel", "{list}");
    assert_eq!(main["subnetFile"], "/run/flannel/subnet.env");
    // ipMasq and mtu are flannel's to decide; no ipam in the delegate.
    for k in ["ipam", "ipMasq", "mtu"] {
        assert!(main["delegate"].get(k).is_none(), "{k}: {main}");
    }
    // subnet.env as the flannel daemon writes it.
    let env_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        env_file.path(),
        "FLANNEL_NETWORK=10.246.0.0/16\nFLANNEL_SUBNET=10.246.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    let env: std::collections::HashMap<String, String> = std::fs::read_to_string(env_file.path())
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The delegation.
    let mut conf = main["delegate"].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    let d = conf.as_object_mut().unwrap();
    d.entry("type").or_insert(json!("bridge"));
    d.entry("ipMasq")
        .or_insert(json!(env["FLANNEL_IPMASQ"] != "true"));
    d.entry("mtu")
        .or_insert(json!(env["FLANNEL_MTU"].parse::<u32>().unwrap()));
    d.entry("isGateway").or_insert(json!(true));
    let mut ipam = main["ipam"].clone();
    let (net_addr, len) = env["FLANNEL_SUBNET"].split_once('/').unwrap();
    let subnet = format!("{}.0/{len}", net_addr.rsplit_once('.').unwrap().0);
    ipam["ranges"] = json!([[{ "subnet": subnet }]]);
    ipam["routes"] = json!([{ "dst": env["FLANNEL_NETWORK"] }]);
    conf["ipam"] = ipam;
    assert_eq!(conf["ipam"]["dataDir"], host.data_dir().to_str().unwrap());

    let pod = Pod::new("flnpod");
    let result = host.must_add(&conf, &pod);
    let v4 = pod.addr(false);
    assert!(v4.starts_with("10.246.7."), "{}: {v4}", imp.label);
    let routes = pod.ns.ip(&["-4", "route", "show"]);
    assert!(
        routes.contains("10.246.0.0/16 via 10.246.7.1"),
        "{}: {routes}",
        imp.label
    );
    assert!(
        routes.contains("default via 10.246.7.1"),
        "{}: {routes}",
        imp.label
    );
    let mtu = pod.ns.must_link(&pod.ifname)["mtu"].clone();
    assert_eq!(mtu, 1450, "{}: flannel's MTU", imp.label);
    pod.ns.assert_reaches("10.246.7.1");
    host.must_del(&with_prev(&conf, &result), &pod);
    host.assert_clean(
        "flannelnet",
        &[&pod],
        "after DEL of the flannel-mode network",
    );
}

#[test]
fn nix_rendered_flannel_mode_delegates_to_our_bridge_and_host_local() {
    flannel_mode_delegation(&Impl::ours());
}

#[test]
fn nix_rendered_flannel_mode_delegates_to_the_reference_plugins() {
    flannel_mode_delegation(&Impl::reference());
}

/// Static host-gw routing as `services.k8s.cni.routes` renders it
/// (`hostGwRouteCommands`, the argv lists of `k8s-cni-routes.service`):
/// three nodes on one switch, each with a Nix-rendered conflist (bridge +
/// host-local, the module's defaults) and Nix-rendered routes to the other
/// two; a pod on node 1 reaches the pods on nodes 2 and 3, and the `down`
/// commands remove the routes again. Uses the reference plugins (what is
/// under test is the routing the Nix side renders; the conflist tests
/// above run our plugins).
#[test]
fn nix_rendered_host_gw_routes_connect_three_nodes() {
    let r = render_nix();
    let switch = Netns::new("nixsw");
    switch.ip(&["link", "add", "sw", "type", "bridge"]);
    switch.ip(&["link", "set", "sw", "up"]);
    let imp = Impl::reference();
    let nodes: Vec<Host> = (1..=3).map(|_| Host::new(&imp)).collect();
    let addr = |n: usize| format!("172.31.0.{n}");
    let mut downs = Vec::new();
    let mut pods = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let n = i + 1;
        let port = format!("q{n}");
        veth_between(
            &node.ns,
            "uplink",
            Some(&format!("{}/24", addr(n))),
            &switch,
            &port,
            None,
        );
        switch.ip(&["link", "set", &port, "master", "sw"]);
        let others: Vec<String> = (1..=3)
            .filter(|m| *m != n)
            .map(|m| {
                format!(
                    r#"{{ address = "{}"; podCIDR = "10.245.{m}.0/24"; }}"#,
                    addr(m)
                )
            })
            .collect();
        let v = eval_json(
            &format!(
                r#"{{ dataDir }}: let r = import {r}; in {{
                  routes = r.hostGwRouteCommands {{ ip = "ip"; nodes = [ {} ]; }};
                  conflist = r.conflist {{
                    name = "hostgw";
                    plugins = [ (r.bridgePlugin {{
                      bridge = "hgw0"; isGateway = true; isDefaultGateway = true; ipMasq = true; hairpinMode = true;
                      ipam = r.hostLocalIpam {{ ranges = [ [ {{ subnet = "10.245.{n}.0/24"; }} ] ]; inherit dataDir; }};
                    }}) ];
                  }};
                }}"#,
                others.join(" ")
            ),
            &["--argstr", "dataDir", node.data_dir().to_str().unwrap()],
        );
        let argv = |c: &Value| -> Vec<String> {
            let a: Vec<String> = c
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            assert_eq!(a[0], "ip", "{a:?}");
            a[1..].to_vec()
        };
        let up = v["routes"]["up"].as_array().unwrap();
        assert_eq!(up.len(), 2, "{v}");
        for c in up {
            let a = argv(c);
            node.ns
                .ip(&a.iter().map(String::as_str).collect::<Vec<_>>());
        }
        downs.push(
            v["routes"]["down"]
                .as_array()
                .unwrap()
                .iter()
                .map(argv)
                .collect::<Vec<_>>(),
        );
        let list = &v["conflist"];
        let mut conf = list["plugins"][0].clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        let pod = Pod::new(&format!("hgw{n}"));
        let res = node.must_add(&conf, &pod);
        assert!(
            pod.addr(false).starts_with(&format!("10.245.{n}.")),
            "{:?}",
            pod.addrs()
        );
        pods.push((pod, conf, res));
    }
    let (p1, p2, p3) = (&pods[0].0, &pods[1].0, &pods[2].0);
    p1.ns.assert_reaches(&p2.addr(false));
    p1.ns.assert_reaches(&p3.addr(false));
    p3.ns.assert_reaches(&p1.addr(false));
    // The unit's ExecStop: routes gone, so is the traffic.
    for (node, down) in nodes.iter().zip(&downs) {
        for a in down {
            node.ns
                .ip(&a.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
    p1.ns.assert_unreachable(&p3.addr(false));
    for ((pod, conf, res), node) in pods.iter().zip(&nodes) {
        node.must_del(&with_prev(conf, res), pod);
    }
}

// ---------------------------------------------------------------------------
// Module evaluation (needs nixpkgs' lib)
// ---------------------------------------------------------------------------

/// `import <lib>` for `NIXPKGS_LIB` (a nixpkgs or nixpkgs.lib checkout, or
/// its `lib/` directory), or None when unset.
fn nixpkgs_lib() -> Option<String> {
    let dir = PathBuf::from(std::env::var_os("NIXPKGS_LIB").filter(|v| !v.is_empty())?);
    let lib = [dir.join("lib"), dir.clone()]
        .into_iter()
        .find(|d| d.join("modules.nix").is_file() && d.join("default.nix").is_file())
        .unwrap_or_else(|| {
            panic!(
                "NIXPKGS_LIB={} holds neither lib/default.nix nor default.nix + modules.nix",
                dir.display()
            )
        });
    Some(format!("import {}", lib.canonicalize().unwrap().display()))
}

/// What to do when `NIXPKGS_LIB` is missing: these tests are
/// `#[ignore]`d so a plain `cargo test` lists them as ignored, never as
/// passed; run with `--include-ignored` (or `--ignored`) where the lib is.
const LIB_HINT: &str = "set NIXPKGS_LIB to a nixpkgs.lib checkout (e.g. nix-community/nixpkgs.lib at a53daa43, which works with Nix 2.8) and run with --include-ignored";

/// Evaluates `file` (a function of `{ lib }`) with nixpkgs' lib; fails (does
/// not skip) when `NIXPKGS_LIB` is unset: the caller asked for this test.
fn eval_with_lib(file: &str, what: &str) -> Value {
    let Some(lib) = nixpkgs_lib() else {
        panic!("NIXPKGS_LIB is not set, so {what} cannot run: {LIB_HINT}");
    };
    let path = workspace_root().join(file);
    let out = must(
        nix_instantiate(&[
            "--eval",
            "--strict",
            "--json",
            path.to_str().unwrap(),
            "--arg",
            "lib",
            &lib,
        ]),
        &format!("evaluating {file}"),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failures"], json!([]), "expectations of {file}");
    v
}

#[test]
#[ignore = "needs NIXPKGS_LIB (a nixpkgs.lib checkout); run with --include-ignored"]
fn readme_documents_every_option() {
    let Some(lib) = nixpkgs_lib() else {
        panic!("NIXPKGS_LIB is not set, so the options reference cannot be checked: {LIB_HINT}");
    };
    let path = workspace_root().join("nix/tests/options-doc.nix");
    let out = must(
        nix_instantiate(&[
            "--eval",
            "--strict",
            "--json",
            path.to_str().unwrap(),
            "--arg",
            "lib",
            &lib,
        ]),
        "evaluating nix/tests/options-doc.nix",
    );
    let table: String = serde_json::from_str(&out).unwrap();
    assert!(table.lines().count() > 60, "{table}");
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let (begin, end) = ("<!-- options:begin -->\n", "<!-- options:end -->");
    let a = readme
        .find(begin)
        .expect("README.md lacks the options:begin marker")
        + begin.len();
    let b = readme
        .find(end)
        .expect("README.md lacks the options:end marker");
    assert!(
        readme[a..b] == table,
        "the README's options reference is stale: run NIXPKGS_LIB=... scripts/nix-options-doc"
    );
}

#[test]
#[ignore = "needs NIXPKGS_LIB (a nixpkgs.lib checkout); run with --include-ignored"]
fn flake_outputs_evaluate_with_nixpkgs_lib() {
    let v = eval_with_lib("nix/tests/flake-eval.nix", "flake output evaluation");
    let r = &v["results"];
    assert_eq!(
        r["nixosModules"],
        json!([
            "cni-bridge",
            "cni-host-local",
            "cri-adapter",
            "default",
            "kubelet"
        ])
    );
    assert_eq!(
        r["packages"],
        json!([
            "bridge",
            "cni-plugins",
            "cri-adapter",
            "default",
            "host-local",
            "loopback",
            "portmap"
        ])
    );
    assert_eq!(r["togetherAssertions"], json!([]));
    // The four plugins are one derivation: the multi-call executable.
    assert_eq!(
        r["cniArgs"]["cargoBuildFlags"],
        json!(["-p", "cni-plugins", "--bin", "k8s-shims-cni"])
    );
    assert_eq!(r["pluginAttrs"]["host-local"]["same"], true);
    assert_eq!(r["srcKeeps"]["target/debug/bridge"], false);
    assert_eq!(r["srcKeeps"]["cni-bridge/src/main.rs"], true);
}

#[test]
#[ignore = "needs NIXPKGS_LIB (a nixpkgs.lib checkout); run with --include-ignored"]
fn modules_evaluate_with_nixpkgs_lib() {
    let v = eval_with_lib("nix/tests/eval.nix", "module evaluation");
    eprintln!(
        "module evaluation: nixpkgs lib {} on Nix {}",
        v["libVersion"], v["nixVersion"]
    );
    let r = &v["results"];

    // The containerd node: ours for bridge, host-local, loopback and portmap, the rest from
    // cni-plugins, one link per type; containerd points at our dirs.
    let node = &r["containerd-node"];
    assert_eq!(node["assertions"], json!([]));
    let paths = node["pluginPaths"].as_object().unwrap();
    assert!(paths["bridge"]
        .as_str()
        .unwrap()
        .ends_with("-k8s-shims-bridge-0.1.0/bin/bridge"));
    assert!(paths["host-local"]
        .as_str()
        .unwrap()
        .ends_with("-k8s-shims-host-local-0.1.0/bin/host-local"));
    for t in ["loopback", "portmap"] {
        assert!(
            paths[t]
                .as_str()
                .unwrap()
                .ends_with(&format!("-k8s-shims-{t}-0.1.0/bin/{t}")),
            "{t}"
        );
    }
    for t in ["tuning", "bandwidth"] {
        assert!(
            paths[t]
                .as_str()
                .unwrap()
                .ends_with(&format!("-cni-plugins-1.6.2/bin/{t}")),
            "{t}"
        );
    }
    let cni = &node["containerd"]["settings"]["plugins"]["io.containerd.grpc.v1.cri"]["cni"];
    assert_eq!(cni["bin_dir"], node["binDir"]);
    assert_eq!(cni["conf_dir"], "/etc/k8s-shims/cni/net.d");
    let text = node["etc"]["k8s-shims/cni/net.d/10-k8s-pod-network.conflist"]
        .as_str()
        .unwrap();
    let list: Value = serde_json::from_str(text).unwrap();
    assert_eq!(list, node["conflist"]);
    assert_eq!(list["plugins"][0]["type"], "bridge");
    assert_eq!(list["plugins"][0]["ipam"]["type"], "host-local");
    assert_eq!(list["plugins"][0]["ipam"]["dataDir"], "/run/cni/networks");
    assert_eq!(
        list["plugins"][0]["ipam"]["ranges"],
        json!([[{"subnet": "10.244.1.0/24"}]])
    );
    assert_eq!(list["plugins"][1]["type"], "portmap");
    assert_eq!(
        node["kubeletEndpoint"],
        "unix:///run/containerd/containerd.sock"
    );

    // The CRI-O node: the reference bridge, our host-local; CRI-O looks in
    // our bin dir first; kubelet talks to cri-adapter serve.
    let crio = &r["crio-node"];
    assert_eq!(crio["assertions"], json!([]));
    assert!(crio["pluginPaths"]["bridge"]
        .as_str()
        .unwrap()
        .ends_with("-cni-plugins-1.6.2/bin/bridge"));
    assert!(crio["pluginPaths"]["host-local"]
        .as_str()
        .unwrap()
        .contains("-k8s-shims-host-local-"));
    assert_eq!(
        crio["crio"]["settings"]["crio"]["network"]["plugin_dirs"][0],
        crio["binDir"]
    );
    assert_eq!(crio["containerd"]["enable"], false);
    assert_eq!(crio["kubeletEndpoint"], "unix:///run/k8s-shims/cri.sock");
    let serve = crio["services"]["k8s-cri-adapter-serve"]["ExecStart"]
        .as_str()
        .unwrap();
    assert!(
        serve.ends_with("/bin/cri-adapter serve --listen /run/k8s-shims/cri.sock --upstream unix:///var/run/crio/crio.sock"),
        "{serve}"
    );
    assert_eq!(
        crio["services"]["k8s-cri-adapter-serve"]["LimitNOFILE"],
        1048576
    );

    // Bad settings are refused with messages that say what to change.
    let msgs = |k: &str| -> String { r[k].to_string() };
    assert!(msgs("bad-overlap").contains("range sets 0 and 1 overlap"));
    assert!(msgs("bad-cidr").contains(r#"subnet \"10.1.2.0/33\" is not a valid CIDR"#));
    assert!(msgs("bad-cidr").contains("the network address for a /24 is 10.1.3.0/24"));
    assert!(msgs("bad-bridge").contains("hairpinMode and promiscMode cannot both be true"));
    assert!(msgs("bad-missing-type").contains("uses CNI type(s) portmap"));
    assert!(msgs("bad-cri").contains("list the images in services.k8s.cri.seedImages"));
    assert!(msgs("bad-crio-pause").contains(
        "set services.k8s.cri.pauseImage.name instead of virtualisation.cri-o.pauseImage"
    ));

    // CRI-O with nixpkgs' kubelet evaluates: its seedDockerImages (pause,
    // coredns) go to cri-adapter seed; one pause image everywhere.
    let k = &r["crio-nixpkgs-kubelet"];
    assert_eq!(k["assertions"], json!([]));
    assert_eq!(k["kubeletSeed"], json!([]));
    let seeded: Vec<&str> = k["seeded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(seeded.len(), 3, "{seeded:?}");
    assert!(
        seeded[1].ends_with("-docker-image-pause.tar.gz"),
        "{seeded:?}"
    );
    assert!(
        seeded[2].ends_with("-docker-image-coredns-1.10.1.tar"),
        "{seeded:?}"
    );
    let seed_cmd = k["services"]["k8s-cri-adapter"]["ExecStart"][1]
        .as_str()
        .unwrap();
    assert!(seed_cmd.contains(" seed --runtime cri-o "), "{seed_cmd}");
    for img in &seeded {
        assert!(seed_cmd.contains(img), "{img} not in {seed_cmd}");
    }
    assert_eq!(
        k["crio"]["settings"]["crio"]["image"]["pause_image"],
        "docker.io/library/pause:latest"
    );
    assert!(k["kubeletExtraOpts"]
        .as_str()
        .unwrap()
        .ends_with("--pod-infra-container-image=docker.io/library/pause:latest"));
    assert_eq!(r["bad-runtime-rejected"], true);
    // Module conventions: silent misconfigurations are assertions, paths
    // are typed, JSON settings merge, kubelet requires the serve unit.
    assert!(r["host-local-alone"]["assertions"]
        .to_string()
        .contains("the network has no main plugin"));
    assert!(msgs("bad-bridge-no-ipam").contains("the bridge has no IPAM"));
    assert_eq!(r["bridge-l2"], json!([]));
    assert!(r["user-override"]["assertions"]
        .to_string()
        .contains(r#"containerRuntimeEndpoint is \"unix:///run/other.sock\""#));
    for k in [
        "bad-datadir-rejected",
        "bad-resolvconf-rejected",
        "bad-socket-rejected",
    ] {
        assert_eq!(r[k], true, "{k}");
    }
    // Our kubelet: the rendered KubeletConfiguration uses only fields of
    // kubelet.config.k8s.io/v1beta1, with their types.
    for k in ["kubelet-containerd", "kubelet-crio-pinned"] {
        let kc = &r[k]["kubeletConfig"];
        assert_eq!(r[k]["assertions"], json!([]), "{k}");
        check_kubelet_configuration(kc);
    }
    let pinned = &r["kubelet-crio-pinned"];
    assert!(pinned["services"]["kubelet"]["ExecStart"]
        .as_str()
        .unwrap()
        .contains("-kubernetes-1.31.9/bin/kubelet '--config="));
    assert_eq!(
        pinned["kubeletConfig"]["containerRuntimeEndpoint"],
        "unix:///run/k8s-shims/cri.sock"
    );
    assert!(msgs("bad-kubelet").contains("both define kubelet.service"));

    // Cluster coherence: nixpkgs' roles next to our network.
    let roles = msgs("roles-default");
    assert!(
        roles.contains(
            r#"subnet 10.244.1.0/24 is outside services.kubernetes.clusterCidr \"10.1.0.0/16\""#
        ),
        "{roles}"
    );
    assert!(
        roles.contains("set services.kubernetes.flannel.enable = false"),
        "{roles}"
    );
    assert_eq!(r["roles-coherent"]["assertions"], json!([]));
    assert_eq!(r["kubelet-outside-cidr"]["assertions"], json!([]));
    assert!(r["kubelet-outside-cidr"]["warnings"]
        .to_string()
        .contains("is outside services.kubernetes.clusterCidr"));
    let ns = &r["lists-merge"]["conflist"]["plugins"][0]["dns"]["nameservers"];
    assert_eq!(ns.as_array().unwrap().len(), 2, "{ns}");
    assert_eq!(
        r["crio-node"]["services"]["kubelet"]["requires"],
        json!(["k8s-cri-adapter-serve.service"])
    );
    assert_eq!(r["undocumented"]["missing"], json!([]));
}

/// A TOML document from a JSON object of tables, strings, integers, bools
/// and lists of strings (all containerd's settings use), with quoted keys.
fn to_toml(v: &Value) -> String {
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => serde_json::to_string(s).unwrap(),
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            Value::Array(a) => format!("[{}]", a.iter().map(scalar).collect::<Vec<_>>().join(", ")),
            _ => panic!("not a TOML scalar: {v}"),
        }
    }
    fn table(path: &[String], v: &serde_json::Map<String, Value>, out: &mut String) {
        if !path.is_empty() && v.values().any(|x| !x.is_object()) {
            out.push_str(&format!("[{}]\n", path.join(".")));
        }
        for (k, x) in v {
            if !x.is_object() {
                out.push_str(&format!(
                    "{} = {}\n",
                    serde_json::to_string(k).unwrap(),
                    scalar(x)
                ));
            }
        }
        for (k, x) in v {
            if let Value::Object(o) = x {
                let mut p = path.to_vec();
                p.push(serde_json::to_string(k).unwrap());
                table(&p, o, out);
            }
        }
    }
    let mut out = String::new();
    table(&[], v.as_object().unwrap(), &mut out);
    out
}

/// `containerd --config <file> config dump` on the settings the modules
/// render: containerd itself says which CNI dirs and sandbox image it uses.
fn containerd_dump(settings: &Value) -> String {
    let tmp = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(tmp.path(), to_toml(settings)).unwrap();
    let containerd = which("containerd").expect(
        "containerd not found: scripts/test installs it (scripts/ensure-packages containerd)",
    );
    let out = run(
        &containerd,
        &["--config", tmp.path().to_str().unwrap(), "config", "dump"],
        &[],
        "containerd",
    );
    must(out, "containerd config dump")
}

#[test]
#[ignore = "needs NIXPKGS_LIB (a nixpkgs.lib checkout); run with --include-ignored"]
fn containerd_reads_the_rendered_config() {
    let v = eval_with_lib("nix/tests/eval.nix", "the containerd config check");
    let r = &v["results"];
    // The containerd node (nixpkgs' kubelet on, its mkDefaults included):
    // containerd uses our dirs and our pause image.
    let node = &r["containerd-node"];
    let dump = containerd_dump(&node["containerd"]["settings"]);
    let bin = node["binDir"].as_str().unwrap();
    assert!(dump.contains(&format!("bin_dir = \"{bin}\"")), "{dump}");
    assert!(
        dump.contains("conf_dir = \"/etc/k8s-shims/cni/net.d\""),
        "{dump}"
    );
    assert!(
        dump.contains("sandbox_image = \"docker.io/library/pause:latest\""),
        "{dump}"
    );
    assert!(dump.contains("SystemdCgroup = true"), "{dump}");
    // Why configVersion must match the file: version 3 keys in a version 2
    // file are ignored and containerd falls back to its defaults (the
    // assertion bad-v3-file-v2 refuses this configuration).
    let mut mixed = r["containerd-v3"]["containerd"]["settings"].clone();
    mixed["version"] = json!(2);
    let dump = containerd_dump(&mixed);
    assert!(!dump.contains("/etc/k8s-shims/cni/net.d"), "{dump}");
    assert!(dump.contains("conf_dir = \"/etc/cni/net.d\""), "{dump}");
    assert!(msgs_of(r, "bad-v3-file-v2")
        .contains("virtualisation.containerd.settings.version = lib.mkForce 3"));
}

fn msgs_of(r: &Value, k: &str) -> String {
    r[k].to_string()
}

/// The fields of KubeletConfiguration (kubelet.config.k8s.io/v1beta1, as of
/// Kubernetes 1.33) and, for the ones the module renders itself, their JSON
/// types: a misspelt or mistyped field is refused here as kubelet's strict
/// decoding would refuse it.
fn check_kubelet_configuration(kc: &Value) {
    const FIELDS: &[&str] = &[
        "apiVersion",
        "kind",
        "enableServer",
        "staticPodPath",
        "podLogsDir",
        "syncFrequency",
        "fileCheckFrequency",
        "httpCheckFrequency",
        "staticPodURL",
        "staticPodURLHeader",
        "address",
        "port",
        "readOnlyPort",
        "tlsCertFile",
        "tlsPrivateKeyFile",
        "tlsCipherSuites",
        "tlsMinVersion",
        "rotateCertificates",
        "serverTLSBootstrap",
        "authentication",
        "authorization",
        "registryPullQPS",
        "registryBurst",
        "imagePullCredentialsVerificationPolicy",
        "preloadedImagesVerificationAllowlist",
        "eventRecordQPS",
        "eventBurst",
        "enableDebuggingHandlers",
        "enableContentionProfiling",
        "healthzPort",
        "healthzBindAddress",
        "oomScoreAdj",
        "clusterDomain",
        "clusterDNS",
        "streamingConnectionIdleTimeout",
        "nodeStatusUpdateFrequency",
        "nodeStatusReportFrequency",
        "nodeLeaseDurationSeconds",
        "imageMinimumGCAge",
        "imageMaximumGCAge",
        "imageGCHighThresholdPercent",
        "imageGCLowThresholdPercent",
        "volumeStatsAggPeriod",
        "kubeletCgroups",
        "systemCgroups",
        "cgroupRoot",
        "cgroupsPerQOS",
        "cgroupDriver",
        "cpuManagerPolicy",
        "singleProcessOOMKill",
        "cpuManagerPolicyOptions",
        "cpuManagerReconcilePeriod",
        "memoryManagerPolicy",
        "topologyManagerPolicy",
        "topologyManagerScope",
        "topologyManagerPolicyOptions",
        "qosReserved",
        "runtimeRequestTimeout",
        "hairpinMode",
        "maxPods",
        "podCIDR",
        "podPidsLimit",
        "resolvConf",
        "runOnce",
        "cpuCFSQuota",
        "cpuCFSQuotaPeriod",
        "nodeStatusMaxImages",
        "maxOpenFiles",
        "contentType",
        "kubeAPIQPS",
        "kubeAPIBurst",
        "serializeImagePulls",
        "maxParallelImagePulls",
        "evictionHard",
        "evictionSoft",
        "evictionSoftGracePeriod",
        "evictionPressureTransitionPeriod",
        "evictionMaxPodGracePeriod",
        "evictionMinimumReclaim",
        "mergeDefaultEvictionSettings",
        "podsPerCore",
        "enableControllerAttachDetach",
        "protectKernelDefaults",
        "makeIPTablesUtilChains",
        "iptablesMasqueradeBit",
        "iptablesDropBit",
        "featureGates",
        "failSwapOn",
        "memorySwap",
        "containerLogMaxSize",
        "containerLogMaxFiles",
        "containerLogMaxWorkers",
        "containerLogMonitorInterval",
        "configMapAndSecretChangeDetectionStrategy",
        "systemReserved",
        "kubeReserved",
        "reservedSystemCPUs",
        "showHiddenMetricsForVersion",
        "systemReservedCgroup",
        "kubeReservedCgroup",
        "enforceNodeAllocatable",
        "allowedUnsafeSysctls",
        "volumePluginDir",
        "providerID",
        "kernelMemcgNotification",
        "logging",
        "enableSystemLogHandler",
        "enableSystemLogQuery",
        "shutdownGracePeriod",
        "shutdownGracePeriodCriticalPods",
        "shutdownGracePeriodByPodPriority",
        "crashLoopBackOff",
        "reservedMemory",
        "enableProfilingHandler",
        "enableDebugFlagsHandler",
        "seccompDefault",
        "memoryThrottlingFactor",
        "registerWithTaints",
        "registerNode",
        "tracing",
        "localStorageCapacityIsolation",
        "containerRuntimeEndpoint",
        "imageServiceEndpoint",
        "failCgroupV1",
        "userNamespaces",
    ];
    let obj = kc
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {kc}"));
    for k in obj.keys() {
        assert!(
            FIELDS.contains(&k.as_str()),
            "{k} is not a KubeletConfiguration field: {kc}"
        );
    }
    assert_eq!(kc["apiVersion"], "kubelet.config.k8s.io/v1beta1");
    assert_eq!(kc["kind"], "KubeletConfiguration");
    assert!(kc["containerRuntimeEndpoint"]
        .as_str()
        .unwrap()
        .starts_with("unix:///"));
    assert!(["systemd", "cgroupfs"].contains(&kc["cgroupDriver"].as_str().unwrap()));
    if let Some(p) = kc.get("staticPodPath") {
        assert!(p.as_str().unwrap().starts_with('/'), "{kc}");
    }
    for b in ["rotateCertificates", "serverTLSBootstrap"] {
        if let Some(v) = kc.get(b) {
            assert!(v.is_boolean(), "{b}: {kc}");
        }
    }
    if let Some(ts) = kc.get("registerWithTaints") {
        for t in ts.as_array().unwrap() {
            let t = t.as_object().unwrap();
            assert!(
                t.keys()
                    .all(|k| ["key", "value", "effect", "timeAdded"].contains(&k.as_str())),
                "{ts}"
            );
            assert!(t["key"].is_string() && t["effect"].is_string(), "{ts}");
            assert!(["NoSchedule", "PreferNoSchedule", "NoExecute"]
                .contains(&t["effect"].as_str().unwrap()));
        }
    }
}
