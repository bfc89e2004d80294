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
  inherit (import ../lib/types.nix {inherit lib pkgs;}) absolutePath;
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
  top = config.services.kubernetes or {};
  kubelet = top.kubelet or {};
  kubeletEnabled = kubelet.enable or false;
  dnsAddon = top.addons.dns or {};
  ourKubelet = config.services.k8s.kubelet or {};

  # nixpkgs' kubelet seeds its images with containerd's `ctr`; on a CRI-O
  # node we take that over: nothing goes to `ctr`, `cri-adapter seed`
  # imports the same images (our pause archive, named pauseImage.name, and
  # the DNS addon's coredns).
  takeOverSeeding = kubeletEnabled && !isContainerd;
  takenOver = lib.optional (takeOverSeeding && (dnsAddon.enable or false)) (pkgs.dockerTools.pullImage dnsAddon.coredns);
  pause = cfg.pauseImage;
  pauseRef = render.imageNameTag pause.name;
  seeded = cfg.seedImages ++ lib.optional (pause.archive != null) pause.archive ++ takenOver;

  # containerd: the config version the file declares (none = 1), and what
  # the package reads.
  ctrd = config.virtualisation.containerd.settings or {};
  fileVersion = ctrd.version or 1;
  ctrdVersion = pkgs.containerd.version or null;
  grpcCri = ctrd.plugins."io.containerd.grpc.v1.cri" or {};
  # Keys a version 3 file no longer reads under grpc.v1.cri (ignoring
  # `cni`: nixpkgs' containerd module always writes cni.bin_dir there, and
  # ours are in the version 3 place).
  movedInV3 = lib.filter (k: grpcCri ? ${k}) ["sandbox_image" "containerd" "registry"];

  # The sandbox image the runtime's settings end up with (from whichever
  # module wrote it), for the agreement assertion.
  effectivePause =
    if isContainerd
    then
      if cfg.containerd.configVersion >= 3
      then config.virtualisation.containerd.settings.plugins."io.containerd.cri.v1.images".pinned_images.sandbox or null
      else config.virtualisation.containerd.settings.plugins."io.containerd.grpc.v1.cri".sandbox_image or null
    else config.virtualisation.cri-o.settings.crio.image.pause_image or null;

  commands = render.criAdapterCommands {
    adapter = lib.getExe' cfg.package "cri-adapter";
    inherit (cfg) runtime;
    endpoint = cfg.runtimeEndpoint;
    timeout = cfg.waitTimeout;
    network = cni.network.conflist != null;
    images = seeded;
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
    enable =
      lib.mkEnableOption ""
      // {
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
        The layout of containerd's config our settings are written in. It
        must be the `version` the config file declares
        (`virtualisation.containerd.settings.version`; containerd reads every
        other layout's keys as unknown and ignores them), and this is checked:
        2 (`plugins."io.containerd.grpc.v1.cri"`: `cni`, `sandbox_image`),
        what nixpkgs' module writes and containerd 2.x migrates at start; or
        3 (`plugins."io.containerd.cri.v1.runtime".cni`,
        `plugins."io.containerd.cri.v1.images".pinned_images.sandbox`), for
        containerd 2.x only, together with
        `virtualisation.containerd.settings.version = lib.mkForce 3`.
      '';
    };

    seedImages = mkOption {
      type = types.listOf (types.either types.package types.path);
      default = [];
      example = literalExpression ''
        [ (pkgs.dockerTools.pullImage { imageName = "registry.k8s.io/coredns/coredns"; imageDigest = "sha256:..."; sha256 = "..."; finalImageTag = "v1.12.0"; }) ]
      '';
      description = ''
        Image archives (docker-archive or OCI tarballs, optionally gzipped)
        imported into the runtime by `cri-adapter seed` before kubelet starts,
        for either runtime. The pause image is seeded from
        {option}`services.k8s.cri.pauseImage.archive`; do not list it here.
        On a CRI-O node, nixpkgs' `services.kubernetes.kubelet.seedDockerImages`
        (which imports with containerd's `ctr`) is taken over: list your own
        images here, not there.
      '';
    };

    seededImages = mkOption {
      type = types.listOf (types.either types.package types.path);
      readOnly = true;
      default = seeded;
      defaultText = literalExpression "seedImages ++ [ pauseImage.archive ] ++ <the DNS addon's coredns on a CRI-O node with nixpkgs' kubelet>";
      description = ''
        Every archive `cri-adapter seed` imports (read-only): `seedImages`,
        the pause archive, and, on a CRI-O node with nixpkgs' kubelet, the
        images that kubelet would have imported with `ctr` (the DNS addon's
        coredns; its pause image is ours, see `pauseImage`).
      '';
    };

    pauseImage = {
      name = mkOption {
        type = types.strMatching "[^[:space:]]+";
        default = "docker.io/library/pause:latest";
        example = "registry.k8s.io/pause:3.10";
        description = ''
          The pod sandbox (pause) image: one value written to the runtime
          (containerd's `sandbox_image`, or `pinned_images.sandbox` in config
          version 3; CRI-O's `pause_image` through
          `virtualisation.cri-o.pauseImage`), passed to nixpkgs' kubelet
          (`--pod-infra-container-image`, so image GC keeps it) and used as
          the name of {option}`services.k8s.cri.pauseImage.archive`. The
          default is what nixpkgs' kubelet module seeds (`pause:latest`),
          fully qualified so both runtimes read it the same way.
        '';
      };
      package = mkOption {
        type = types.nullOr types.package;
        default =
          if ourKubelet.enable or false
          then ourKubelet.package.pause or null
          else if kubeletEnabled
          then top.package.pause or null
          else null;
        defaultText = literalExpression "the `pause` output of services.k8s.kubelet.package, or of services.kubernetes.package with nixpkgs' kubelet, else null";
        description = ''
          A package with `bin/pause`, built into the image archive
          {option}`services.k8s.cri.pauseImage.archive`. null: no archive is
          built (the runtime pulls `pauseImage.name` from its registry).
        '';
      };
      archive = mkOption {
        type = types.nullOr (types.either types.package types.path);
        default =
          if pause.package == null
          then null
          else
            pkgs.dockerTools.buildImage {
              inherit (pauseRef) name tag;
              copyToRoot = [pause.package];
              config.Entrypoint = ["/bin/pause"];
            };
        defaultText = literalExpression "an image named pauseImage.name holding pauseImage.package, or null";
        description = ''
          The pause image archive `cri-adapter seed` imports before kubelet
          starts (its image name must be {option}`services.k8s.cri.pauseImage.name`).
          null: nothing is seeded for the sandbox.
        '';
      };
    };

    waitTimeout = mkOption {
      type = types.ints.positive;
      default = 120;
      description = "Seconds `cri-adapter wait` waits for the runtime to answer CRI before the unit fails.";
    };

    serve = {
      enable =
        lib.mkEnableOption ""
        // {
          description = ''
            Whether to run `cri-adapter serve`, a CRI passthrough on a stable
            socket in front of the runtime; {option}`services.k8s.cri.endpoint`
            (and so kubelet) then points at it. Clients must send `:authority
            localhost` (kubelet 1.31 and later do; older kubelets do not). kubelet
            recognises CRI-O by an endpoint ending in `run/crio/crio.sock`, so
            serving in front of CRI-O changes how kubelet collects stats.
            kubelet then requires (not only wants) the serve unit.
          '';
        };
      socket = mkOption {
        type = absolutePath;
        default = "/run/k8s-shims/cri.sock";
        description = "The socket `cri-adapter serve` listens on.";
      };
    };

    extraPath = mkOption {
      type = types.listOf types.package;
      default = [pkgs.iptables pkgs.nftables];
      defaultText = literalExpression "[ pkgs.iptables pkgs.nftables ]";
      description = "Added to the runtime unit's PATH: the CNI plugins it execs run `iptables-restore` / `nft` (masquerade, spoof check, host ports).";
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
          assertion = isContainerd || (kubelet.seedDockerImages or []) == [];
          message = "${where}: services.kubernetes.kubelet.seedDockerImages is forced non-empty on a CRI-O node, but nixpkgs' kubelet imports it with containerd's `ctr`, which this node does not run; remove that override and list the images in services.k8s.cri.seedImages (`cri-adapter seed` imports them into CRI-O).";
        }
        {
          assertion = effectivePause == pause.name;
          message = "${where}: the runtime's pause image is ${builtins.toJSON effectivePause} but services.k8s.cri.pauseImage.name is \"${pause.name}\"; set services.k8s.cri.pauseImage.name instead of ${
            if isContainerd
            then "containerd's sandbox_image"
            else "virtualisation.cri-o.pauseImage"
          } (one value for the runtime, kubelet and the seeded archive).";
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
          # splice mode holds two descriptors per client connection; the
          # adapter raises its soft limit to this hard one at start.
          LimitNOFILE = 1048576;
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
      assertions = [
        {
          assertion = fileVersion == cfg.containerd.configVersion;
          message =
            if cfg.containerd.configVersion == 3
            then "${where}.containerd.configVersion = 3, but containerd's config file says version = ${toString fileVersion} (nixpkgs' containerd module writes 2), so containerd would ignore our `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images` keys and use /opt/cni/bin and /etc/cni/net.d: keep ${where}.containerd.configVersion = 2 (containerd 2.x migrates it), or also set virtualisation.containerd.settings.version = lib.mkForce 3."
            else "${where}.containerd.configVersion = ${toString cfg.containerd.configVersion}, but containerd's config file says version = ${toString fileVersion}, so containerd would ignore our `io.containerd.grpc.v1.cri` keys: set ${where}.containerd.configVersion = ${toString fileVersion}.";
        }
        {
          assertion = cfg.containerd.configVersion < 3 || ctrdVersion == null || lib.versionAtLeast ctrdVersion "2.0";
          message = "${where}.containerd.configVersion = 3 needs containerd 2.0 or later, but pkgs.containerd is ${toString ctrdVersion}: set ${where}.containerd.configVersion = 2.";
        }
      ];
      warnings = lib.optional (fileVersion >= 3 && movedInV3 != []) "virtualisation.containerd.settings.plugins.\"io.containerd.grpc.v1.cri\" sets ${lib.concatStringsSep ", " movedInV3}, which a version ${toString fileVersion} config no longer reads there (nixpkgs' kubernetes module writes them at mkDefault for version 2); set them under plugins.\"io.containerd.cri.v1.runtime\" / \"io.containerd.cri.v1.images\" instead, and clear these with lib.mkForce { }.";
      virtualisation.containerd.enable = true;
      virtualisation.containerd.settings =
        lib.mapAttrsRecursive (_: mkModuleDefault)
        (render.containerdSettings {
          inherit (cni) binDir confDir;
          inherit (cfg.containerd) configVersion;
          sandboxImage = pause.name;
          # kubelet (ours and nixpkgs') uses the systemd cgroup driver.
          systemdCgroup = true;
        });
    })

    (mkIf takeOverSeeding {
      # Above nixpkgs' plain definitions (its pause image, the DNS addon's
      # coredns), below mkForce: see `seededImages`.
      services.kubernetes.kubelet.seedDockerImages = mkOverride 60 [];
    })

    (mkIf (!isContainerd) {
      virtualisation.cri-o.enable = true;
      virtualisation.cri-o.pauseImage = mkModuleDefault pause.name;
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
      # After nixpkgs' own `--pod-infra-container-image=pause`: the last one wins.
      services.kubernetes.kubelet.extraOpts = "--pod-infra-container-image=${pause.name}";
      assertions = [
        {
          assertion = kubelet.containerRuntimeEndpoint == cfg.endpoint;
          message = "${where}: services.kubernetes.kubelet.containerRuntimeEndpoint is \"${kubelet.containerRuntimeEndpoint}\", but this node's CRI endpoint is \"${cfg.endpoint}\" (services.k8s.cri.endpoint, ${
            if cfg.serve.enable
            then "cri-adapter serve in front of ${cfg.runtime}"
            else cfg.runtime
          }); remove your definition (the module sets it), or change services.k8s.cri.runtime / serve.";
        }
      ];
      # kubelet's endpoint is the serve socket: without that unit kubelet
      # has no runtime, so it is required, not only wanted.
      systemd.services.kubelet = {
        wants = units;
        requires = lib.optional cfg.serve.enable "k8s-cri-adapter-serve.service";
        after = units;
      };
    })
  ]);
}
