# The node's container runtime: containerd or CRI-O, configured through
# nixpkgs' own modules (their `settings`; their services are theirs), pointed
# at the assembled CNI dirs, prepared by `cri-adapter` (wait for readiness,
# seed images) before kubelet, optionally fronted by `cri-adapter serve`.
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption mkIf mkMerge mkDefault mkBefore mkForce mkOverride types literalExpression;
  render = import ../lib/render.nix;
  cfg = config.services.k8s.cri;
  cni = config.services.k8s.cni;
  where = "services.k8s.cri";

  # Above other modules' mkDefault (nixpkgs' kubernetes module sets
  # containerd's cni.bin_dir = mkDefault "/opt/cni/bin"), below a plain
  # definition of the user's.
  mkModuleDefault = mkOverride 900;

  isContainerd = cfg.runtime == "containerd";
  runtimeUnit =
    if isContainerd
    then "containerd.service"
    else "crio.service";
  runtimeService =
    if isContainerd
    then "containerd"
    else "crio";
  kubelet = config.services.kubernetes.kubelet or {};
  kubeletEnabled = kubelet.enable or false;

  commands = render.criAdapterCommands {
    adapter = lib.getExe' cfg.package "cri-adapter";
    inherit (cfg) runtime;
    endpoint = cfg.runtimeEndpoint;
    timeout = cfg.waitTimeout;
    network = cni.network.conflist != null;
    images = cfg.seedImages;
    serveSocket =
      if cfg.serve.enable
      then cfg.serve.socket
      else null;
  };
  units = ["k8s-cri-adapter.service"] ++ lib.optional cfg.serve.enable "k8s-cri-adapter-serve.service";
in {
  key = "k8s-shims:cri-adapter";
  _file = "k8s-shims/nix/modules/cri-adapter.nix";
  imports = [./cni.nix];

  options.services.k8s.cri = {
    enable = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Whether to run a CRI runtime for kubelet: nixpkgs'
        `virtualisation.containerd` or `virtualisation.cri-o`, configured
        through their `settings` to use {option}`services.k8s.cni.binDir` and
        {option}`services.k8s.cni.confDir`, and a `k8s-cri-adapter` unit that
        waits until the runtime answers and seeds images, ordered before
        kubelet.
      '';
    };

    runtime = mkOption {
      type = types.enum ["containerd" "cri-o"];
      default = "containerd";
      description = "The container runtime of this node (nodes of one cluster may differ).";
    };

    package = mkOption {
      type = types.package;
      default = config.services.k8s.packages.cri-adapter;
      defaultText = literalExpression "config.services.k8s.packages.cri-adapter";
      description = "The `cri-adapter` build.";
    };

    containerd.configVersion = mkOption {
      type = types.enum [2 3];
      default = 2;
      description = ''
        The layout of containerd's config our settings are written in: 2
        (`plugins."io.containerd.grpc.v1.cri".cni`), which nixpkgs' module
        uses (`settings.version = 2`) and containerd 2.x migrates, or 3
        (`plugins."io.containerd.cri.v1.runtime".cni`) for a containerd module
        that writes `version = 3`.
      '';
    };

    seedImages = mkOption {
      type = types.listOf (types.either types.package types.path);
      default = [];
      example = literalExpression ''
        [ (pkgs.dockerTools.buildImage { name = "pause"; tag = "latest"; config.Entrypoint = [ "/pause" ]; }) ]
      '';
      description = ''
        Image archives (docker-archive or OCI tarballs, optionally gzipped)
        imported into the runtime by `cri-adapter seed` before kubelet starts,
        for either runtime (nixpkgs' `kubelet.seedDockerImages` works with
        containerd only).
      '';
    };

    waitTimeout = mkOption {
      type = types.ints.positive;
      default = 120;
      description = "Seconds `cri-adapter wait` waits for the runtime to answer CRI before the unit fails.";
    };

    serve = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Whether to run `cri-adapter serve`, a CRI passthrough on a stable
          socket in front of the runtime; {option}`services.k8s.cri.endpoint`
          (and so kubelet) then points at it. Clients must send `:authority
          localhost` (kubelet 1.31 and later do; older kubelets do not). kubelet
          recognises CRI-O by an endpoint ending in `run/crio/crio.sock`, so
          serving in front of CRI-O changes how kubelet collects stats.
        '';
      };
      socket = mkOption {
        type = types.str;
        default = "/run/k8s-shims/cri.sock";
        description = "The socket `cri-adapter serve` listens on.";
      };
    };

    extraPath = mkOption {
      type = types.listOf types.package;
      default = [pkgs.iptables pkgs.nftables];
      defaultText = literalExpression "[ pkgs.iptables pkgs.nftables ]";
      description = "Added to the runtime unit's PATH: the CNI plugins it execs run `iptables-restore` / `nft` (masquerade, spoof check).";
    };

    runtimeEndpoint = mkOption {
      type = types.str;
      readOnly = true;
      default = render.endpoints.${cfg.runtime};
      defaultText = literalExpression ''"unix:///run/containerd/containerd.sock" or "unix:///var/run/crio/crio.sock"'';
      description = "The runtime's own CRI endpoint (read-only).";
    };

    endpoint = mkOption {
      type = types.str;
      readOnly = true;
      default =
        if cfg.serve.enable
        then "unix://${cfg.serve.socket}"
        else cfg.runtimeEndpoint;
      defaultText = literalExpression "the serve socket when serve.enable, else runtimeEndpoint";
      description = "The CRI endpoint kubelet should use (read-only); set as kubelet's `containerRuntimeEndpoint` (mkDefault) when nixpkgs' kubelet is enabled.";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = cni.plugins ? loopback && cni.plugins.loopback.enable;
          message = "${where}: the runtime execs the CNI `loopback` plugin for every pod; keep services.k8s.cni.plugins.loopback enabled.";
        }
        {
          assertion = lib.hasPrefix "/" cfg.serve.socket;
          message = "${where}.serve.socket \"${cfg.serve.socket}\" must be an absolute path.";
        }
        {
          assertion = isContainerd || (kubelet.seedDockerImages or []) == [];
          message = "${where}: services.kubernetes.kubelet.seedDockerImages imports with containerd's `ctr`, which a CRI-O node does not have; list the images in services.k8s.cri.seedImages instead.";
        }
      ];

      systemd.services.k8s-cri-adapter = {
        description = "k8s-shims: wait for ${cfg.runtime} and seed images";
        wantedBy = ["multi-user.target"];
        requires = [runtimeUnit];
        after = [runtimeUnit];
        before = ["kubelet.service"];
        # `seed` imports into CRI-O with skopeo.
        path = lib.optional (!isContainerd) pkgs.skopeo;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = map lib.escapeShellArgs ([commands.wait] ++ lib.optional (commands.seed != null) commands.seed);
        };
      };

      systemd.services.${runtimeService}.path = cfg.extraPath;
    }

    (mkIf cfg.serve.enable {
      systemd.tmpfiles.rules = ["d ${dirOf cfg.serve.socket} 0750 root root -"];
      systemd.services.k8s-cri-adapter-serve = {
        description = "k8s-shims: CRI passthrough in front of ${cfg.runtime}";
        wantedBy = ["multi-user.target"];
        requires = ["k8s-cri-adapter.service"];
        after = ["k8s-cri-adapter.service"];
        before = ["kubelet.service"];
        serviceConfig = {
          ExecStart = lib.escapeShellArgs commands.serve;
          Restart = "always";
          RestartSec = 2;
          # Speaks gRPC on unix sockets only.
          ReadWritePaths = [(dirOf cfg.serve.socket)];
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          NoNewPrivileges = true;
          RestrictAddressFamilies = ["AF_UNIX"];
          CapabilityBoundingSet = "";
          SystemCallFilter = ["@system-service"];
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
        };
      };
    })

    (mkIf isContainerd {
      virtualisation.containerd.enable = true;
      virtualisation.containerd.settings =
        lib.mapAttrsRecursive (_: mkModuleDefault)
        (render.containerdSettings {
          inherit (cni) binDir confDir;
          inherit (cfg.containerd) configVersion;
        });
    })

    (mkIf (!isContainerd) {
      virtualisation.cri-o.enable = true;
      virtualisation.cri-o.settings.crio.network = {
        network_dir = mkModuleDefault cni.confDir;
        # Ours first: CRI-O takes a type from the first dir that has it, and
        # nixpkgs' module adds cni-plugins' dir.
        plugin_dirs = mkBefore [cni.binDir];
      };
      # CRI-O's module installs its own example conflists into
      # /etc/cni/net.d; they are not ours and clash with kubelet owning
      # that directory.
      environment.etc."cni/net.d/10-crio-bridge.conflist".enable = mkForce false;
      environment.etc."cni/net.d/99-loopback.conflist".enable = mkForce false;
      # nixpkgs' kubernetes module turns containerd on (mkDefault) for kubelet.
      virtualisation.containerd.enable = mkModuleDefault false;
    })

    (mkIf kubeletEnabled {
      services.kubernetes.kubelet.containerRuntimeEndpoint = mkDefault cfg.endpoint;
      systemd.services.kubelet = {
        wants = units;
        after = units;
      };
    })
  ]);
}
