# host-local IPAM: typed settings rendered into the network's `ipam` object,
# checked at evaluation time (pure-Nix CIDR parsing, nix/lib/cidr.nix).
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption mkDefault mkIf types;
  render = import ../lib/render.nix;
  inherit (import ../lib/types.nix {inherit lib pkgs;}) jsonObject absolutePath;
  cfg = config.services.k8s.cni.host-local;
  where = "services.k8s.cni.host-local";

  # nixpkgs' kubernetes modules: kube-proxy and the controller-manager use
  # clusterCidr (comma-separated for dual stack) as the pod network.
  top = config.services.kubernetes or {};
  clusterCidrs =
    if (top.clusterCidr or null) == null
    then []
    else lib.filter (x: x != "") (map (x: lib.concatStrings (lib.splitString " " x)) (lib.splitString "," top.clusterCidr));
  usesClusterCidr = (top.proxy.enable or false) || (top.controllerManager.enable or false);
  kubeletOnly = !usesClusterCidr && (top.kubelet.enable or false);
  outsideCluster = lib.concatLists (lib.imap0 (i: set:
    lib.concatLists (lib.imap0 (j: r: let
      same = lib.filter (c: render.cidr.cidrFamily c == render.cidr.cidrFamily r.subnet) clusterCidrs;
    in
      lib.optional (same != [] && render.cidr.cidrFamily r.subnet != null && !(lib.any (render.cidr.cidrWithin r.subnet) same))
      "${where}.ranges: range set ${toString i}, range ${toString j}: subnet ${r.subnet} is outside services.kubernetes.clusterCidr \"${top.clusterCidr}\", the pod network kube-proxy and the controller-manager use; set services.kubernetes.clusterCidr to a prefix that holds every node's ranges (e.g. \"${
        if render.cidr.cidrFamily r.subnet == 4
        then "10.244.0.0/16"
        else "fd00:10:244::/56"
      }\"), or pick ranges inside it.")
    set))
  ranges);

  plain = list: map (lib.filterAttrs (n: _: n != "_module")) list;
  ranges = map plain cfg.ranges;
  routes = plain cfg.routes;

  range = types.submodule {
    options = {
      subnet = mkOption {
        type = types.str;
        example = "10.244.1.0/24";
        description = "The subnet (CIDR, network address, prefix at most /30 or /126).";
      };
      rangeStart = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.244.1.10";
        description = "First address handed out (inclusive); default: the subnet's network address + 1.";
      };
      rangeEnd = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.244.1.200";
        description = "Last address handed out (inclusive); default: the last address before the broadcast (IPv4) or the last address (IPv6).";
      };
      gateway = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.244.1.1";
        description = "The gateway reported to the main plugin (bridge puts it on the bridge); default: network address + 1. Never handed out.";
      };
    };
  };

  route = types.submodule {
    options = {
      dst = mkOption {
        type = types.str;
        example = "0.0.0.0/0";
        description = "Destination (CIDR).";
      };
      gw = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Next hop; default: the main plugin's gateway.";
      };
    };
  };
in {
  key = "k8s-shims:cni-host-local";
  _file = "k8s-shims/nix/modules/cni-host-local.nix";
  imports = [./cni.nix];

  options.services.k8s.cni.host-local = {
    enable =
      lib.mkEnableOption ""
      // {
        description = ''
          Whether the node's network takes its addresses from `host-local`
          (rendered into {option}`services.k8s.cni.network.ipam`). The binary
          comes from {option}`services.k8s.cni.plugins` (`host-local`: ours by
          default, or nixpkgs' reference build: both read the same
          configuration and store). It only renders the `ipam` object: the
          network also needs a main plugin ({option}`services.k8s.cni.bridge.enable`
          or {option}`services.k8s.cni.network.main`), which is checked.
        '';
      };

    ranges = mkOption {
      type = types.listOf (types.listOf range);
      default = [];
      example = lib.literalExpression ''
        [
          [ { subnet = "10.244.1.0/24"; } ]               # one IPv4 address per pod
          [ { subnet = "fd00:10:244:1::/64"; } ]          # and one IPv6 address
        ]
      '';
      description = ''
        Range sets: each inner list yields one address per pod, and its ranges
        are alternative pools. Checked when the system is evaluated: malformed
        CIDRs or addresses, host bits set, ranges outside their subnet, and
        overlapping ranges or range sets are assertion failures that name the
        offending entry.
      '';
    };

    routes = mkOption {
      type = types.listOf route;
      default = [];
      example = [{dst = "0.0.0.0/0";}];
      description = "Routes added in the pod (`ipam.routes`). With the bridge's `isDefaultGateway` (the module's default) no default route is needed here.";
    };

    dataDir = mkOption {
      type = absolutePath;
      default = render.defaultDataDir;
      example = "/var/lib/cni/networks";
      description = ''
        Where reservations are kept (`<dataDir>/<network name>/<ip>`).

        The default is on a tmpfs (`/run`), unlike the plugin's own default
        `/var/lib/cni/networks`: no pod survives a reboot, but the runtime
        does not call DEL for pods that died with the machine, so reservations
        on persistent storage would stay and fill the range
        (containernetworking/plugins#252). A tmpfs starts empty at every boot.
        Use a persistent path only if something else (CNI GC) cleans it.
      '';
    };

    resolvConf = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/etc/resolv.conf";
      description = "A resolv.conf on the node (an absolute path) whose contents are reported as the result's `dns`.";
    };

    settings = mkOption {
      type = jsonObject;
      default = {};
      description = "Escape hatch (RFC 42, freeform JSON: lists from several definitions concatenate): keys merged (recursively) over the rendered `ipam` object.";
    };

    ipam = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      default = render.hostLocalIpam {
        inherit ranges routes;
        inherit (cfg) dataDir resolvConf settings;
      };
      defaultText = lib.literalExpression "<rendered from the options above>";
      description = "The rendered `ipam` object (read-only).";
    };
  };

  config = mkIf cfg.enable {
    services.k8s.cni.network.ipam = mkDefault cfg.ipam;
    # nixpkgs' kubelet alone does not use clusterCidr, the cluster's
    # controller-manager (elsewhere) does: a warning.
    warnings = lib.optionals kubeletOnly outsideCluster;

    assertions = let
      problems =
        render.cidr.rangeSetProblems {
          where = "${where}.ranges";
          inherit ranges;
          inherit (config.services.k8s.cni.network) cniVersion;
        }
        ++ render.cidr.routeProblems {
          where = "${where}.routes";
          inherit routes;
        };
    in
      map (message: {
        assertion = false;
        inherit message;
      })
      problems
      ++ [
        {
          assertion = !usesClusterCidr || outsideCluster == [];
          message = lib.concatStringsSep "\n" outsideCluster;
        }
        {
          assertion = config.services.k8s.cni.network.main != null;
          message = "${where}.enable: host-local only renders the `ipam` object, and the network has no main plugin, so no conflist is written; enable services.k8s.cni.bridge (or set services.k8s.cni.network.main).";
        }
      ];
  };
}
