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
in rec {
  # Plugins use the workspace's `cni` profile (release + LTO + abort on
  # panic): they are exec'd once per pod and command.
  host-local = build {
    pname = "k8s-shims-host-local";
    crate = "cni-host-local";
    bin = "host-local";
    buildType = "cni";
    description = "host-local CNI IPAM plugin, a drop-in replacement for the reference one";
  };
  bridge = build {
    pname = "k8s-shims-bridge";
    crate = "cni-bridge";
    bin = "bridge";
    buildType = "cni";
    description = "bridge CNI plugin, a drop-in replacement for the reference one";
  };
  loopback = build {
    pname = "k8s-shims-loopback";
    crate = "cni-loopback";
    bin = "loopback";
    buildType = "cni";
    description = "loopback CNI plugin, a drop-in replacement for the reference one";
  };
  portmap = build {
    pname = "k8s-shims-portmap";
    crate = "cni-portmap";
    bin = "portmap";
    buildType = "cni";
    description = "portmap CNI plugin (hostPort), a drop-in replacement for the reference one";
  };
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
    paths = [host-local bridge loopback portmap cri-adapter];
    meta.mainProgram = "cri-adapter";
  };
}
