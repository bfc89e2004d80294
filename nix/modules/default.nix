# Every k8s-shims module; each is also usable on its own.
{
  key = "k8s-shims:default";
  _file = "k8s-shims/nix/modules/default.nix";
  imports = [
    ./cni-host-local.nix
    ./cni-bridge.nix
    ./cri-adapter.nix
    ./kubelet.nix
  ];
}
