# bridge: typed settings for the main plugin of the node's network; the
# `ipam` object comes from services.k8s.cni.network.ipam (host-local's module
# or your own).
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption mkIf types;
  render = import ../lib/render.nix;
  inherit (import ../lib/types.nix {inherit lib pkgs;}) jsonObject;
  net = config.services.k8s.cni.network;
  inherit (config.services.k8s.cni) flannel;
  cfg = config.services.k8s.cni.bridge;
  where = "services.k8s.cni.bridge";

  optBool = default: description:
    mkOption {
      type = types.nullOr types.bool;
      inherit default description;
    };

  trunkEntry = types.submodule {
    options = {
      id = mkOption {
        type = types.nullOr (types.ints.between 1 4094);
        default = null;
        description = "One tagged VLAN.";
      };
      minID = mkOption {
        type = types.nullOr (types.ints.between 1 4094);
        default = null;
        description = "First VLAN of a range (with `maxID`).";
      };
      maxID = mkOption {
        type = types.nullOr (types.ints.between 1 4094);
        default = null;
        description = "Last VLAN of a range (with `minID`).";
      };
    };
  };

  trunk =
    if cfg.vlanTrunk == null
    then null
    else map (lib.filterAttrs (n: _: n != "_module")) cfg.vlanTrunk;
  validTrunk = t: (t.id != null && t.minID == null && t.maxID == null) || (t.id == null && t.minID != null && t.maxID != null && t.minID <= t.maxID);
in {
  key = "k8s-shims:cni-bridge";
  _file = "k8s-shims/nix/modules/cni-bridge.nix";
  imports = [./cni.nix];

  options.services.k8s.cni.bridge = {
    enable =
      lib.mkEnableOption ""
      // {
        description = ''
          Whether the node's network (services.k8s.cni.network) uses the
          `bridge` plugin as its main plugin. It needs an `ipam` object
          ({option}`services.k8s.cni.host-local.enable`, or
          {option}`services.k8s.cni.network.ipam`), unless it is an L2 bridge
          (`isGateway`, `isDefaultGateway` and `ipMasq` false). The binary comes from
          {option}`services.k8s.cni.plugins` (`bridge`: ours by default, or
          nixpkgs' reference build: same configuration, same kernel state).
          Options left at null are left out of the configuration, so the
          plugin's own default applies.
        '';
      };

    bridge = mkOption {
      type = types.strMatching "[^/[:space:]]{1,15}";
      default = "cni0";
      description = "Name of the Linux bridge (created if missing).";
    };
    isGateway = optBool true "Put the IPAM gateway address on the bridge and turn on forwarding (plugin default: false).";
    isDefaultGateway = optBool true "Add a default route in the pod via the bridge's gateway address; implies `isGateway` (plugin default: false).";
    forceAddress = optBool null "Replace a different address already on the bridge instead of failing.";
    ipMasq = optBool true "Masquerade traffic from the pods to destinations outside their subnet (plugin default: false).";
    ipMasqBackend = mkOption {
      type = types.nullOr (types.enum ["iptables" "nftables"]);
      default = null;
      description = "Masquerade implementation (plugin default: iptables, or nftables when iptables is unusable).";
    };
    mtu = mkOption {
      type = types.nullOr (types.ints.between 68 65535);
      default = null;
      example = 1450;
      description = "MTU of a new bridge and of both veth ends (plugin default: the kernel's).";
    };
    hairpinMode = optBool true "Hairpin on the pod's bridge port, so a pod reaches itself through a service address (kubelet's `hairpin-veth` mode expects it; plugin default: false). Exclusive with `promiscMode`.";
    promiscMode = optBool null "Make the bridge promiscuous. Exclusive with `hairpinMode`.";
    vlan = mkOption {
      type = types.nullOr (types.ints.between 0 4094);
      default = null;
      example = 100;
      description = "Access VLAN of the pod's port (needs bridge VLAN filtering in the kernel); 0 or null: none.";
    };
    vlanTrunk = mkOption {
      type = types.nullOr (types.listOf trunkEntry);
      default = null;
      example = [
        {id = 101;}
        {
          minID = 200;
          maxID = 210;
        }
      ];
      description = "Tagged VLANs on the pod's port: each entry is either `id` or a `minID`..`maxID` range.";
    };
    preserveDefaultVlan = optBool null "Whether VLAN 1 stays on the port when `vlan` or `vlanTrunk` is used.";
    enableDad = optBool null "IPv6 duplicate address detection on the pod interface (the plugin's `enabledad`; off by default: it costs seconds per pod).";
    macspoofchk = optBool null "nftables rules dropping frames whose source MAC is not the pod's.";
    disableContainerInterface = optBool null "L2 only: leave the pod interface down (needs an empty `ipam`).";
    portIsolation = optBool null "Isolated bridge port (isolated ports talk only to non-isolated ones).";

    settings = mkOption {
      type = jsonObject;
      default = {};
      example = {
        dns.nameservers = ["10.96.0.10"];
      };
      description = "Escape hatch (RFC 42, freeform JSON: lists from several definitions concatenate): keys merged (recursively) over the rendered plugin object.";
    };

    plugin = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      default = render.bridgePlugin {
        inherit (cfg) bridge isGateway isDefaultGateway forceAddress ipMasq ipMasqBackend mtu hairpinMode promiscMode vlan;
        inherit (cfg) preserveDefaultVlan enableDad macspoofchk disableContainerInterface portIsolation settings;
        vlanTrunk = trunk;
        inherit (config.services.k8s.cni.network) ipam;
      };
      defaultText = lib.literalExpression "<rendered from the options above>";
      description = "The rendered plugin object (read-only).";
    };
  };

  config = mkIf cfg.enable {
    services.k8s.cni.network.main =
      if flannel.enable
      then
        render.flannelPlugin {
          delegate = cfg.plugin;
          ipam = {
            type = "host-local";
            inherit (config.services.k8s.cni.host-local or {dataDir = render.defaultDataDir;}) dataDir;
          };
          inherit (flannel) subnetFile dataDir;
        }
      else cfg.plugin;

    assertions = [
      {
        assertion = !(cfg.hairpinMode == true && cfg.promiscMode == true);
        message = "${where}: hairpinMode and promiscMode cannot both be true (the plugin rejects it); set one of them to false.";
      }
      {
        assertion = trunk == null || lib.all validTrunk trunk;
        message = "${where}.vlanTrunk: each entry needs either `id`, or both `minID` and `maxID` with minID <= maxID.";
      }
      {
        assertion = flannel.enable || (net.ipam.type or null) != null || cfg.disableContainerInterface == true || (cfg.isGateway != true && cfg.isDefaultGateway != true && cfg.ipMasq != true);
        message = "${where}.enable: the bridge has no IPAM (services.k8s.cni.network.ipam is empty), so isGateway, isDefaultGateway and ipMasq have no address to work with; enable services.k8s.cni.host-local (or set services.k8s.cni.network.ipam), or for an L2 bridge set ${where}.isGateway, isDefaultGateway and ipMasq to false.";
      }
      {
        assertion = cfg.disableContainerInterface != true || (net.ipam.type or null) == null;
        message = "${where}.disableContainerInterface only works on an L2 network: disable services.k8s.cni.host-local (or set services.k8s.cni.network.ipam = { }).";
      }
    ];
  };
}
