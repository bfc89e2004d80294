# A CRI-O node: nixpkgs' reference bridge (pkgs.cni-plugins) and our
# host-local, in the same cluster as the containerd node.
# Import the flake's nixosModules.default next to this.
{pkgs, ...}: {
  services.k8s.cni = {
    plugins.bridge.package = pkgs.cni-plugins;
    host-local = {
      enable = true;
      ranges = [[{subnet = "10.244.2.0/24";}]];
    };
    bridge.enable = true;
  };

  services.k8s.cri = {
    enable = true;
    runtime = "cri-o";
  };
}
