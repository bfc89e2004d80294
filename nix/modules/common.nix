# Shared by every k8s-shims module: which builds of ours the node uses.
{
  lib,
  pkgs,
  ...
}: let
  ours = name:
    lib.mkPackageOption pkgs ["k8s-shims" name] {
      extraDescription = "Our `${name}` build (a package with `bin/${name}`). The flake's nixosModules set it (from `pkgs.k8s-shims` when the flake's `overlays.default` is applied, else built with the node's pkgs); with neither, set it yourself.";
    };
in {
  key = "k8s-shims:common";
  _file = "k8s-shims/nix/modules/common.nix";

  options.services.k8s.packages = {
    host-local = ours "host-local";
    bridge = ours "bridge";
    loopback = ours "loopback";
    portmap = ours "portmap";
    cri-adapter = ours "cri-adapter";
  };
}
