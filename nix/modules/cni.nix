# The node's CNI layout, shared by the plugin modules and the CRI module:
# one bin dir assembled from per-type choices, and one network conflist
# rendered into our own conf dir.
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption mkDefault mkIf types literalExpression;
  render = import ../lib/render.nix;
  cfg = config.services.k8s.cni;
  net = cfg.network;
  inherit (import ../lib/types.nix {inherit lib pkgs;}) jsonObject absolutePath;
  json = jsonObject;

  # The types nixpkgs' `cni-plugins` ships (containernetworking/plugins).
  referenceTypes = ["bandwidth" "dhcp" "firewall" "host-device" "ipvlan" "macvlan" "ptp" "sbr" "static" "tuning" "vlan" "vrf"];

  enabled = lib.filterAttrs (_: p: p.enable) cfg.plugins;
  links = render.pluginLinks enabled;
  farm = pkgs.linkFarm "k8s-shims-cni-plugins" (lib.mapAttrsToList (type: path: {
      name = "bin/${type}";
      inherit path;
    })
    links);

  conflist =
    if net.main == null
    then null
    else
      render.conflist {
        inherit (net) name cniVersion settings;
        plugins =
          [net.main]
          ++ lib.optional net.portmap.enable (render.portmapPlugin {inherit (net.portmap) settings;})
          ++ net.extraPlugins;
      };
  fileName = render.conflistFileName {inherit (net) priority name;};

  routeNodes = lib.mapAttrsToList (name: n: {
    inherit name;
    inherit (n) address podCIDR;
  }) (lib.filterAttrs (_: n: n.enable) cfg.routes);
  routeCommands = render.hostGwRouteCommands {
    ip = "${pkgs.iproute2}/bin/ip";
    nodes = routeNodes;
  };
  ownRanges = lib.concatMap (map (r: r.subnet)) (config.services.k8s.cni.host-local.ranges or []);
  missingTypes =
    if conflist == null
    then []
    else lib.unique (lib.filter (t: !(enabled ? ${t})) (render.conflistTypes conflist));
in {
  key = "k8s-shims:cni";
  _file = "k8s-shims/nix/modules/cni.nix";
  imports = [./common.nix];

  options.services.k8s.cni = {
    plugins = mkOption {
      type = types.attrsOf (types.submodule ({name, ...}: {
        options = {
          enable =
            lib.mkEnableOption "CNI type `${name}` in the bin dir"
            // {default = true;};
          package = mkOption {
            type = types.package;
            description = "The package whose `bin/<program>` is linked into the bin dir as `${name}`.";
            example = literalExpression "pkgs.cni-plugins";
          };
          program = mkOption {
            type = types.str;
            default = name;
            description = "The file under the package's `bin/` that provides this type (the link in the bin dir is always named after the type).";
          };
        };
      }));
      default = {};
      example = literalExpression ''
        {
          # the reference bridge, our host-local (the default)
          bridge.package = pkgs.cni-plugins;
          # a type of another package
          flannel.package = pkgs.cni-plugin-flannel;
          # drop a type
          dhcp.enable = false;
        }
      '';
      description = ''
        Which package provides each CNI plugin type on this node. The runtime
        execs `<bin dir>/<type>` for every `type` in the conflist, so the bin
        dir ({option}`services.k8s.cni.binDir`) holds exactly one link per
        enabled type, taken from the package chosen here: this is how a node
        mixes implementations. Defaults: our Rust builds for `bridge`,
        `host-local`, `loopback` and `portmap` ({option}`services.k8s.packages`),
        nixpkgs' `cni-plugins` for every other reference type
        (${lib.concatStringsSep ", " referenceTypes}).
      '';
    };

    pluginPaths = mkOption {
      type = types.attrsOf types.str;
      readOnly = true;
      default = links;
      defaultText = literalExpression "{ <type> = \"<package>/bin/<program>\"; }";
      description = "The executable behind each link of the bin dir, by type (read-only).";
    };

    binDir = mkOption {
      type = types.str;
      readOnly = true;
      default = "${farm}/bin";
      defaultText = literalExpression "\"\${linkFarm of services.k8s.cni.plugins}/bin\"";
      description = "The assembled CNI bin dir (read-only): hand it to the runtime (`bin_dir`, `plugin_dirs`). The CRI module does.";
    };

    confDir = mkOption {
      type = types.str;
      readOnly = true;
      default = "/etc/k8s-shims/cni/net.d";
      description = ''
        The CNI conf dir our conflist is written to (read-only). It is not
        `/etc/cni/net.d`: nixpkgs' kubelet module owns that whole directory
        and CRI-O's module puts its own conflists there, so the CRI module
        points the runtime here instead.
      '';
    };

    flannel = {
      enable =
        lib.mkEnableOption ""
        // {
          description = ''
            flannel mode: the conflist's main plugin is flannel's CNI plugin
            (`type = "flannel"`, from `services.k8s.cni.plugins.flannel`,
            `pkgs.cni-plugin-flannel` by default), which reads the node's
            subnet from flannel's subnet.env and delegates to our `bridge`
            (the options of {option}`services.k8s.cni.bridge`, which must be
            enabled) with a `host-local` IPAM (our
            {option}`services.k8s.cni.plugins.host-local`, reservations in
            {option}`services.k8s.cni.host-local.dataDir`). flannel routes
            between nodes; our plugins attach each pod. The runtime reads the
            conflist from our conf dir and execs from our bin dir as usual.
            `services.k8s.cni.host-local.enable` must be off (flannel decides
            the ranges); `ipMasq` and `mtu` are left to flannel.
          '';
        };
      subnetFile = mkOption {
        type = absolutePath;
        default = "/run/flannel/subnet.env";
        description = "flannel's subnet.env (written by the flannel daemon).";
      };
      dataDir = mkOption {
        type = absolutePath;
        default = "/var/lib/cni/flannel";
        description = "Where flannel's CNI plugin keeps each pod's delegate configuration.";
      };
    };

    routes = mkOption {
      type = types.attrsOf (types.submodule {
        options = {
          enable =
            lib.mkEnableOption "the route to this node"
            // {default = true;};
          address = mkOption {
            type = types.str;
            example = "192.168.1.12";
            description = "The node's address on the link this node shares with it: the next hop for its pods.";
          };
          podCIDR = mkOption {
            type = types.str;
            example = "10.244.2.0/24";
            description = "The pod range of that node (its host-local ranges); same IP family as `address`.";
          };
        };
      });
      default = {};
      example = literalExpression ''
        {
          node2 = { address = "192.168.1.12"; podCIDR = "10.244.2.0/24"; };
          node3 = { address = "192.168.1.13"; podCIDR = "10.244.3.0/24"; };
          node3-v6 = { address = "fd00:1::13"; podCIDR = "fd00:10:244:3::/64"; };
        }
      '';
      description = ''
        Static host-gw routing, no daemon and no overlay: the other nodes of
        the cluster, each with its address on a link shared with this node
        and its pod range. `k8s-cni-routes.service` installs one route per
        node (`ip route replace <podCIDR> via <address>`) before kubelet and
        the runtime start, and removes them when stopped. All nodes must be
        on one L2 segment (a next hop must be directly reachable). Checked:
        addresses and CIDRs parse, families agree, no podCIDR overlaps
        another or this node's own host-local ranges.
      '';
    };

    network = {
      name = mkOption {
        type = types.str;
        default = "k8s-pod-network";
        description = "The network name (conflist `name`; host-local keeps its reservations under `<dataDir>/<name>`).";
      };
      cniVersion = mkOption {
        type = types.str;
        default = "1.0.0";
        example = "1.1.0";
        description = "The CNI spec version of the conflist.";
      };
      priority = mkOption {
        type = types.ints.between 0 99;
        default = 10;
        description = "Prefix of the conflist's file name (`<priority>-<name>.conflist`); runtimes use the first file in lexical order.";
      };
      main = mkOption {
        type = types.nullOr json;
        default = null;
        description = ''
          The main plugin of the conflist (the first entry of `plugins`). Set
          by {option}`services.k8s.cni.bridge.enable`; set it yourself to use
          another main plugin. No conflist is written while it is null.
        '';
      };
      ipam = mkOption {
        type = json;
        default = {};
        example = {
          type = "dhcp";
        };
        description = ''
          The `ipam` object the main plugin gets. Set by
          {option}`services.k8s.cni.host-local.enable` (at default priority, so
          a definition here replaces it).
        '';
      };
      portmap = {
        enable =
          lib.mkEnableOption "the `portmap` plugin (pods' `hostPort`), chained after the main plugin"
          // {default = true;};
        settings = mkOption {
          type = json;
          default = {};
          example = {
            snat = false;
          };
          description = "Keys merged over the `portmap` entry.";
        };
      };
      extraPlugins = mkOption {
        type = types.listOf json;
        default = [];
        example = [
          {
            type = "bandwidth";
            capabilities.bandwidth = true;
          }
        ];
        description = "Further chained plugins, appended in order. Each `type` must be an enabled entry of {option}`services.k8s.cni.plugins`.";
      };
      settings = mkOption {
        type = json;
        default = {};
        example = {
          disableCheck = true;
        };
        description = "Escape hatch: keys merged (recursively) over the top level of the conflist.";
      };
      conflist = mkOption {
        type = types.nullOr json;
        readOnly = true;
        default = conflist;
        defaultText = literalExpression "<rendered from the options above>";
        description = "The rendered conflist (read-only), or null when there is no main plugin.";
      };
      file = mkOption {
        type = types.str;
        readOnly = true;
        default = "${cfg.confDir}/${fileName}";
        defaultText = literalExpression "\"\${confDir}/<priority>-<name>.conflist\"";
        description = "Path of the rendered conflist on the node (read-only).";
      };
    };
  };

  config = lib.mkMerge [
    (mkIf (routeNodes != []) {
      assertions =
        map (message: {
          assertion = false;
          inherit message;
        }) (render.hostGwProblems {
          where = "services.k8s.cni.routes";
          nodes = routeNodes;
          own = ownRanges;
        });
      systemd.services.k8s-cni-routes = {
        description = "k8s-shims: static routes to the other nodes' pods (host-gw)";
        wantedBy = ["multi-user.target"];
        wants = ["network-online.target"];
        after = ["network-online.target"];
        before = ["kubelet.service" "containerd.service" "crio.service"];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = map lib.escapeShellArgs routeCommands.up;
          # `-` : a route already gone is no failure.
          ExecStop = map (c: "-" + lib.escapeShellArgs c) routeCommands.down;
        };
      };
    })
    {
      services.k8s.cni.plugins =
        lib.genAttrs referenceTypes (_: {package = mkDefault pkgs.cni-plugins;})
        // {
          bridge.package = mkDefault config.services.k8s.packages.bridge;
          host-local.package = mkDefault config.services.k8s.packages.host-local;
          loopback.package = mkDefault config.services.k8s.packages.loopback;
          portmap.package = mkDefault config.services.k8s.packages.portmap;
        }
        // lib.optionalAttrs cfg.flannel.enable {
          flannel.package = mkDefault pkgs.cni-plugin-flannel;
        };
    }
    (mkIf cfg.flannel.enable {
      assertions = [
        {
          assertion = config.services.k8s.cni.bridge.enable or false;
          message = "services.k8s.cni.flannel.enable: flannel mode delegates to our bridge; set services.k8s.cni.bridge.enable = true.";
        }
        {
          assertion = !(config.services.k8s.cni.host-local.enable or false);
          message = "services.k8s.cni.flannel.enable: in flannel mode flannel gives each node its subnet (subnet.env) and host-local allocates from it, so services.k8s.cni.host-local.ranges are not used; set services.k8s.cni.host-local.enable = false.";
        }
      ];
      warnings = lib.optional (!(config.services.kubernetes.flannel.enable or false) && !(config.services.flannel.enable or false)) "services.k8s.cni.flannel.enable: no flannel daemon is enabled on this node (services.kubernetes.flannel.enable or services.flannel.enable), so nothing writes ${cfg.flannel.subnetFile} unless you run flannel otherwise; pods cannot start without it.";
    })
    (mkIf (conflist != null) {
      environment.etc."${lib.removePrefix "/etc/" cfg.confDir}/${fileName}".text = builtins.toJSON conflist;

      assertions = [
        {
          assertion = cfg.flannel.enable || !(config.services.kubernetes.flannel.enable or false);
          message = "services.k8s.cni.network: services.kubernetes.flannel.enable is on (services.kubernetes.roles turns it on at mkDefault) next to our conflist: flannel would route its own subnets of services.kubernetes.clusterCidr while our host-local hands out other addresses, and the 11-flannel.conf kubelet writes is not read by the runtime; set services.kubernetes.flannel.enable = false and route pod traffic between nodes otherwise (services.k8s.cni.routes for static host-gw routes), or keep flannel and set services.k8s.cni.flannel.enable = true (flannel mode: flannel's plugin delegates to our bridge and host-local).";
        }
        {
          assertion = missingTypes == [];
          message = "services.k8s.cni.network: the conflist uses CNI type(s) ${lib.concatStringsSep ", " missingTypes}, which the bin dir does not provide; set services.k8s.cni.plugins.<type>.package (and enable) for each.";
        }
        {
          assertion = builtins.match "[a-zA-Z0-9][a-zA-Z0-9_.-]*" net.name != null;
          message = "services.k8s.cni.network.name \"${net.name}\" is not a valid CNI network name (letters, digits, '_', '.', '-'; starting with a letter or digit).";
        }
      ];
    })
  ];
}
