# kubelet under full control, without cluster opinions: a package pinned
# per node, an RFC 42 KubeletConfiguration, static pods, labels and taints,
# wired to services.k8s.cri (endpoint, unit ordering, pause image). It
# refuses to run next to nixpkgs' services.kubernetes.kubelet (both would
# define kubelet.service).
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption mkIf types literalExpression;
  inherit (import ../lib/types.nix {inherit lib pkgs;}) jsonObject absolutePath;
  jsonFormat = pkgs.formats.json {};
  cfg = config.services.k8s.kubelet;
  cri = config.services.k8s.cri;
  where = "services.k8s.kubelet";

  manifestDir = "k8s-shims/kubelet/manifests";
  runtimeUnit =
    if cri.runtime == "containerd"
    then "containerd.service"
    else "crio.service";
  criUnits = lib.optionals cri.enable ([runtimeUnit "k8s-cri-adapter.service"] ++ lib.optional cri.serve.enable "k8s-cri-adapter-serve.service");
  routesUnit = lib.optional (lib.any (n: n.enable) (lib.attrValues config.services.k8s.cni.routes)) "k8s-cni-routes.service";

  taintList = lib.mapAttrsToList (_: t: lib.filterAttrs (_: v: v != null) {inherit (t) key value effect;}) cfg.taints;
  labels = lib.concatStringsSep "," (lib.mapAttrsToList (k: v: "${k}=${v}") cfg.labels);

  # Declared settings left at null are left out (kubelet's default applies).
  rendered =
    {
      apiVersion = "kubelet.config.k8s.io/v1beta1";
      kind = "KubeletConfiguration";
    }
    // lib.filterAttrs (_: v: v != null) cfg.settings;

  argv =
    [
      (lib.getExe' cfg.package "kubelet")
      "--config=${cfg.configFile}"
      "--root-dir=${cfg.rootDir}"
    ]
    ++ lib.optional (cfg.kubeconfig != null) "--kubeconfig=${cfg.kubeconfig}"
    ++ lib.optional (cfg.bootstrapKubeconfig != null) "--bootstrap-kubeconfig=${cfg.bootstrapKubeconfig}"
    ++ lib.optional (cfg.hostname != null) "--hostname-override=${cfg.hostname}"
    ++ lib.optional (labels != "") "--node-labels=${labels}"
    ++ cfg.extraArgs;

  taint = types.submodule ({name, ...}: {
    options = {
      key = mkOption {
        type = types.str;
        default = name;
        defaultText = literalExpression "<name>";
        description = "Taint key (default: the attribute name).";
      };
      value = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Taint value (null: none).";
      };
      effect = mkOption {
        type = types.enum ["NoSchedule" "PreferNoSchedule" "NoExecute"];
        description = "Taint effect.";
      };
    };
  });
in {
  key = "k8s-shims:kubelet";
  _file = "k8s-shims/nix/modules/kubelet.nix";
  imports = [./cri-adapter.nix];

  options.services.k8s.kubelet = {
    enable =
      lib.mkEnableOption ""
      // {
        description = ''
          Whether to run kubelet from this module (`kubelet.service`): the
          package, configuration and flags are all here, nothing is assumed
          about the cluster (no certificates issued, no CNI written by kubelet,
          no addons). Without {option}`services.k8s.kubelet.kubeconfig` it runs
          standalone (static pods only). Cannot be combined with nixpkgs'
          `services.kubernetes.kubelet` (or `services.kubernetes.roles`, which
          enable it); our CRI and CNI modules work with either kubelet.
        '';
      };

    package = lib.mkPackageOption pkgs "kubernetes" {
      extraDescription = ''
        Any package with `bin/kubelet`, pinned per node independently of
        the rest of the system (e.g. from another nixpkgs input). Its `pause`
        output, when it has one, is the default of
        {option}`services.k8s.cri.pauseImage.package`.
      '';
    };

    settings = mkOption {
      type = types.submodule {
        freeformType = jsonFormat.type;
        options = {
          containerRuntimeEndpoint = mkOption {
            type = types.str;
            default =
              if cri.enable
              then cri.endpoint
              else "unix:///run/containerd/containerd.sock";
            defaultText = literalExpression "config.services.k8s.cri.endpoint";
            description = "The CRI endpoint; with {option}`services.k8s.cri.enable`, it must be `services.k8s.cri.endpoint` (checked).";
          };
          cgroupDriver = mkOption {
            type = types.enum ["systemd" "cgroupfs"];
            default = "systemd";
            description = "kubelet's cgroup driver; the CRI module configures both runtimes for systemd cgroups, so it must be `systemd` with {option}`services.k8s.cri.enable` (checked).";
          };
          staticPodPath = mkOption {
            type = types.nullOr types.str;
            default =
              if cfg.staticPods == {}
              then null
              else "/etc/${manifestDir}";
            defaultText = literalExpression ''"/etc/${manifestDir}" when staticPods is not empty, else null'';
            description = "Directory of static pod manifests (set from {option}`services.k8s.kubelet.staticPods`).";
          };
        };
      };
      default = {};
      example = literalExpression ''
        {
          rotateCertificates = true;
          serverTLSBootstrap = true;
          authentication.x509.clientCAFile = "/var/lib/kubelet/pki/ca.crt";
          clusterDNS = [ "10.96.0.10" ];
          clusterDomain = "cluster.local";
        }
      '';
      description = ''
        The KubeletConfiguration (`kubelet.config.k8s.io/v1beta1`), RFC 42:
        any field of
        <https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/>
        (certificates and rotation: `tlsCertFile`, `tlsPrivateKeyFile`,
        `rotateCertificates`, `serverTLSBootstrap`, `authentication`), written
        to {option}`services.k8s.kubelet.configFile` and passed as `--config`.
        `apiVersion` and `kind` are added; declared options left at null are
        left out. Taints from {option}`services.k8s.kubelet.taints` land in
        `registerWithTaints`.
      '';
    };

    configFile = mkOption {
      type = types.package;
      readOnly = true;
      default = jsonFormat.generate "kubelet-config.json" rendered;
      defaultText = literalExpression "<settings as JSON>";
      description = "The rendered KubeletConfiguration file (read-only).";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [];
      example = ["--v=2" "--node-ip=192.168.1.11"];
      description = "Further kubelet command-line arguments, appended after the module's.";
    };

    kubeconfig = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/var/lib/kubelet/kubeconfig";
      description = "kubeconfig for the API server (`--kubeconfig`); null: standalone kubelet, static pods only.";
    };

    bootstrapKubeconfig = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/var/lib/kubelet/bootstrap-kubeconfig";
      description = "Bootstrap kubeconfig for TLS bootstrapping (`--bootstrap-kubeconfig`); kubelet writes `kubeconfig` from it.";
    };

    rootDir = mkOption {
      type = absolutePath;
      default = "/var/lib/kubelet";
      description = "kubelet's state directory (`--root-dir`).";
    };

    hostname = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Node name override (`--hostname-override`); null: the host name.";
    };

    labels = mkOption {
      type = types.attrsOf types.str;
      default = {};
      example = {
        "node.kubernetes.io/instance-type" = "small";
        "topology.kubernetes.io/zone" = "rack-1";
      };
      description = "Labels the node registers with (`--node-labels`).";
    };

    taints = mkOption {
      type = types.attrsOf taint;
      default = {};
      example = {
        "node-role.kubernetes.io/control-plane" = {effect = "NoSchedule";};
      };
      description = "Taints the node registers with (KubeletConfiguration `registerWithTaints`).";
    };

    staticPods = mkOption {
      type = types.attrsOf jsonObject;
      default = {};
      example = literalExpression ''
        {
          etcd = {
            apiVersion = "v1";
            kind = "Pod";
            metadata = { name = "etcd"; namespace = "kube-system"; };
            spec = { hostNetwork = true; containers = [ { name = "etcd"; image = "registry.k8s.io/etcd:3.5.21-0"; command = [ "etcd" ]; } ]; };
          };
        }
      '';
      description = ''
        Static pods (manifests as attribute sets), written to
        `/etc/${manifestDir}/<name>.json` and run by kubelet without an API
        server: a control plane or an HA etcd as static pods. Each must be a
        `v1` `Pod` (checked).
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions =
      [
        {
          assertion = !(config.services.kubernetes.kubelet.enable or false);
          message = "${where}.enable and nixpkgs' services.kubernetes.kubelet.enable are both on, and both define kubelet.service; set services.kubernetes.kubelet.enable = false (services.kubernetes.roles turns it on at mkDefault), or disable ${where}.";
        }
        {
          assertion = !cri.enable || cfg.settings.containerRuntimeEndpoint == cri.endpoint;
          message = "${where}.settings.containerRuntimeEndpoint is \"${cfg.settings.containerRuntimeEndpoint}\", but this node's CRI endpoint is \"${cri.endpoint}\" (services.k8s.cri.endpoint); remove your definition (the module sets it).";
        }
        {
          assertion = !cri.enable || cfg.settings.cgroupDriver == "systemd";
          message = "${where}.settings.cgroupDriver is \"${cfg.settings.cgroupDriver}\", but services.k8s.cri configures ${cri.runtime} for systemd cgroups; set it to \"systemd\".";
        }
      ]
      ++ lib.mapAttrsToList (name: pod: {
        assertion = (pod.kind or null) == "Pod" && (pod.apiVersion or null) == "v1";
        message = "${where}.staticPods.${name}: a static pod manifest needs apiVersion = \"v1\" and kind = \"Pod\".";
      })
      cfg.staticPods;

    services.k8s.kubelet.settings.registerWithTaints = mkIf (taintList != []) taintList;

    environment.etc = lib.mapAttrs' (name: pod:
      lib.nameValuePair "${manifestDir}/${name}.json" {
        text = builtins.toJSON pod;
      })
    cfg.staticPods;

    systemd.tmpfiles.rules = ["d ${cfg.rootDir} 0700 root root -"];

    systemd.services.kubelet = {
      description = "Kubernetes kubelet (k8s-shims)";
      wantedBy = ["multi-user.target"];
      wants = ["network-online.target"] ++ criUnits ++ routesUnit;
      # Its endpoint is the serve socket: required, not only wanted.
      requires = lib.optional (cri.enable && cri.serve.enable) "k8s-cri-adapter-serve.service";
      after = ["network-online.target"] ++ criUnits ++ routesUnit;
      path = [pkgs.util-linux pkgs.iproute2 pkgs.iptables];
      serviceConfig = {
        ExecStart = lib.escapeShellArgs argv;
        Restart = "always";
        RestartSec = 2;
      };
    };
  };
}
