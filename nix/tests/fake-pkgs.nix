# The few packages the modules use, as fake derivations (they pass
# types.package; nothing is built), and pkgs.formats.json with the type
# nixpkgs declares for it (a JSON value: null, bool, int, float, string,
# path, or attribute sets and lists of JSON values; lists concatenate and
# attribute sets merge across definitions).
{lib}: let
  inherit (lib) types;
  jsonValue = let
    v =
      types.nullOr (types.oneOf [types.bool types.int types.float types.str types.path (types.attrsOf v) (types.listOf v)])
      // {description = "JSON value";};
  in
    v;
  drv = name: {
    type = "derivation";
    inherit name;
    outPath = "${builtins.storeDir}/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
  };
in {
  inherit drv;
  formats.json = {}: {
    type = jsonValue;
    # Keeps the value, so the tests can read what would be written.
    generate = name: value: drv name // {inherit value;};
  };
  cni-plugins = drv "cni-plugins-1.6.2";
  cni-plugin-flannel = drv "cni-plugin-flannel-1.6.2";
  iptables = drv "iptables-1.8.11";
  nftables = drv "nftables-1.1.1";
  skopeo = drv "skopeo-1.18.0";
  iproute2 = drv "iproute2-6.13.0";
  util-linux = drv "util-linux-2.41";
  busybox = drv "busybox-1.36.1";
  cri-tools = drv "cri-tools-1.33.0";
  jq = drv "jq-1.7.1";
  # Another kubelet than the node's kubernetes, for pinning.
  kubernetes_1_31 = drv "kubernetes-1.31.9" // {pause = drv "kubernetes-1.31.9-pause";};
  kubernetes = drv "kubernetes-1.34.1" // {pause = drv "kubernetes-1.34.1-pause";};
  containerd = drv "containerd-2.1.4" // {version = "2.1.4";};
  # Keep their arguments, so the tests can read the image's name.
  dockerTools = {
    buildImage = args: drv "docker-image-${baseNameOf args.name}.tar.gz" // {inherit args;};
    pullImage = args: drv "docker-image-${baseNameOf args.imageName}-${args.finalImageTag}.tar" // {inherit args;};
  };
  k8s-shims = {
    host-local = drv "k8s-shims-host-local-0.1.0";
    bridge = drv "k8s-shims-bridge-0.1.0";
    loopback = drv "k8s-shims-loopback-0.1.0";
    portmap = drv "k8s-shims-portmap-0.1.0";
    cri-adapter = drv "k8s-shims-cri-adapter-0.1.0";
  };
  # Keeps the entries, so the tests can read the bin dir's layout.
  linkFarm = name: entries: drv name // {inherit entries;};
}
