# A containerd node: our bridge and our host-local (the defaults), kubelet
# talking to containerd through the endpoint the CRI module exports.
# Import the flake's nixosModules.default next to this.
_: {
  services.k8s.cni = {
    host-local = {
      enable = true;
      # This node's slice of the cluster's pod CIDR, IPv4 and IPv6.
      ranges = [
        [{subnet = "10.244.1.0/24";}]
        [{subnet = "fd00:10:244:1::/64";}]
      ];
    };
    bridge = {
      enable = true;
      bridge = "cni0";
    };
  };

  services.k8s.cri = {
    enable = true;
    runtime = "containerd";
  };
}
