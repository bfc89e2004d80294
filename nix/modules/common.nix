# Shared by every k8s-shims module: which builds of ours the node uses.
{
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types literalExpression;
  ours = name:
    mkOption {
      type = types.package;
      default = pkgs.k8s-shims.${name} or (throw "services.k8s.packages.${name} has no value: import the k8s-shims flake's nixosModules (they set it), apply its overlays.default (pkgs.k8s-shims), or set it yourself");
      defaultText = literalExpression "pkgs.k8s-shims.${name}";
      description = "Our `${name}` build (a package with `bin/${name}`). Set by the flake's modules, or taken from `pkgs.k8s-shims` when the flake's `overlays.default` is applied.";
    };
in {
  key = "k8s-shims:common";
  _file = "k8s-shims/nix/modules/common.nix";

  options.services.k8s.packages = {
    host-local = ours "host-local";
    bridge = ours "bridge";
    cri-adapter = ours "cri-adapter";
  };
}
