# Our binaries, one derivation each, built from this workspace with the
# lock file (no vendor hash to update). callPackage-able; the flake's
# overlay puts the result at pkgs.k8s-shims.
{
  lib,
  rustPlatform,
  protobuf,
  symlinkJoin,
}: let
  root = ../.;
  # The workspace without target/, nix/ and the rest: editing a Nix file
  # or a script does not rebuild the binaries. Every workspace member must
  # be present for cargo to load the workspace.
  members = ["cni-spec" "cni-host-local" "cni-bridge" "cni-loopback" "cni-portmap" "cni-plugins" "cri-adapter" "integration"];
  src = lib.cleanSourceWith {
    name = "k8s-shims-source";
    src = root;
    filter = path: _type: let
      rel = lib.removePrefix (toString root + "/") (toString path);
      top = builtins.head (lib.splitString "/" rel);
    in
      builtins.elem rel ["Cargo.toml" "Cargo.lock"] || builtins.elem top members;
  };
  workspace = builtins.fromTOML (builtins.readFile ../Cargo.toml);
  inherit (workspace.workspace.package) version;

  build = {
    pname,
    crate,
    bin,
    description,
    buildType ? "release",
    extra ? {},
  }:
    rustPlatform.buildRustPackage ({
        inherit pname version src buildType;
        cargoLock.lockFile = ../Cargo.lock;
        cargoBuildFlags = ["-p" crate "--bin" bin];
        # The tests need root, network namespaces and the reference plugins
        # (integration/); the flake's VM checks run the binaries for real.
        doCheck = false;
        meta = {
          inherit description;
          license = lib.licenses.asl20;
          mainProgram = bin;
          platforms = lib.platforms.linux;
        };
      }
      // extra);
  # The CNI plugins a node execs, by the name each is run under.
  plugins = {
    bridge = "bridge CNI plugin, a drop-in replacement for the reference one";
    host-local = "host-local CNI IPAM plugin, a drop-in replacement for the reference one";
    loopback = "loopback CNI plugin, a drop-in replacement for the reference one";
    portmap = "portmap CNI plugin (hostPort), a drop-in replacement for the reference one";
  };
  # The multi-call package `drv` as the plugin `name` (only its meta differs).
  plugin = name:
    lib.addMetaAttrs {
      mainProgram = name;
      description = plugins.${name};
    };
in rec {
  # The plugins are one multi-call executable, `k8s-shims-cni`, with the
  # workspace's `cni` profile (release + LTO + abort on panic: they are
  # exec'd once per pod and command), and a link to it under each plugin's
  # name, as the Debian package ships them. A bridge whose `host-local` on
  # CNI_PATH is this same file runs it in-process: one exec less per ADD
  # and DEL, wherever the node's bin dir links both to this package.
  cni-plugins = build {
    pname = "k8s-shims-cni-plugins";
    crate = "cni-plugins";
    bin = "k8s-shims-cni";
    buildType = "cni";
    description = "The k8s-shims CNI plugins (bridge, host-local, loopback, portmap) in one executable";
    extra.postInstall = lib.concatMapStrings (p: ''
      ln -s k8s-shims-cni $out/bin/${p}
    '') (builtins.attrNames plugins);
  };
  # One attribute per plugin, as the modules' services.k8s.packages.* take
  # them: the same derivation (one build), each with its own mainProgram.
  host-local = plugin "host-local" cni-plugins;
  bridge = plugin "bridge" cni-plugins;
  loopback = plugin "loopback" cni-plugins;
  portmap = plugin "portmap" cni-plugins;
  cri-adapter = build {
    pname = "k8s-shims-cri-adapter";
    crate = "cri-adapter";
    bin = "cri-adapter";
    description = "Prepares containerd or CRI-O for kubelet (readiness, image seeding) and can serve a CRI passthrough";
    extra = {
      # The CRI and containerd API crates generate their gRPC code with protoc.
      nativeBuildInputs = [protobuf];
      PROTOC = "${protobuf}/bin/protoc";
      # cri-adapter run under this name is the runc wrapper that clamps
      # oomScoreAdj (render --runtime cri-o --runc-wrapper).
      postInstall = ''
        ln -s cri-adapter $out/bin/cri-adapter-runc
      '';
    };
  };
  all = symlinkJoin {
    name = "k8s-shims-${version}";
    paths = [cni-plugins cri-adapter];
    meta.mainProgram = "cri-adapter";
  };
}
