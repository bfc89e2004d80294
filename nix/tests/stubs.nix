# Stand-ins for the NixOS options the k8s-shims modules set or read, for
# evaluating the modules with nixpkgs' lib alone (lib.evalModules). Since
# undeclared options are errors, this file is also the list of what our
# modules touch. The stand-ins also imitate the definitions of nixpkgs'
# containerd, CRI-O and kubernetes modules that interact with ours (same
# priorities), so the tests see the same merges as a real system.
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption mkDefault mkOptionDefault mkIf types;
  # The type nixpkgs declares for pkgs.formats.toml (the type of
  # virtualisation.containerd.settings and virtualisation.cri-o.settings):
  # no null (TOML has none), lists concatenate, attrsets merge.
  tomlValue = let
    v =
      types.oneOf [types.bool types.int types.float types.str types.path (types.attrsOf v) (types.listOf v)]
      // {description = "TOML value";};
  in
    v;
  list = elem:
    mkOption {
      type = types.listOf elem;
      default = [];
    };
  unit = types.submodule {
    freeformType = types.attrsOf types.anything;
    options = {
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = list types.str;
      requiredBy = list types.str;
      requires = list types.str;
      wants = list types.str;
      after = list types.str;
      before = list types.str;
      path = list types.package;
      serviceConfig = mkOption {
        type = types.attrsOf types.anything;
        default = {};
      };
    };
  };
  etcFile = types.submodule {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      text = mkOption {
        type = types.nullOr types.lines;
        default = null;
      };
      source = mkOption {
        type = types.nullOr types.path;
        default = null;
      };
      mode = mkOption {
        type = types.str;
        default = "symlink";
      };
    };
  };
  k8s = config.services.kubernetes;
in {
  options = {
    assertions = mkOption {
      type = types.listOf (types.submodule {
        options = {
          assertion = mkOption {type = types.bool;};
          message = mkOption {type = types.str;};
        };
      });
      default = [];
    };
    warnings = list types.str;
    environment.etc = mkOption {
      type = types.attrsOf etcFile;
      default = {};
    };
    systemd.services = mkOption {
      type = types.attrsOf unit;
      default = {};
    };
    systemd.tmpfiles.rules = list types.str;
    virtualisation.containerd = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      settings = mkOption {
        type = tomlValue;
        default = {};
      };
    };
    virtualisation.cri-o = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      pauseImage = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
      settings = mkOption {
        type = tomlValue;
        default = {};
      };
    };
    services.kubernetes.roles = mkOption {
      type = types.listOf (types.enum ["master" "node"]);
      default = [];
    };
    services.kubernetes.clusterCidr = mkOption {
      type = types.nullOr types.str;
      default = "10.1.0.0/16";
    };
    services.kubernetes.flannel.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.kubernetes.proxy.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.kubernetes.controllerManager.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.kubernetes.package = mkOption {
      type = types.package;
      default = pkgs.kubernetes;
    };
    services.kubernetes.addons.dns = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      coredns = mkOption {
        type = types.attrs;
        default = {
          imageName = "coredns/coredns";
          imageDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
          finalImageTag = "1.10.1";
          sha256 = "0000000000000000000000000000000000000000000000000000";
        };
      };
    };
    services.kubernetes.kubelet = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      containerRuntimeEndpoint = mkOption {
        type = types.str;
        default = "unix:///run/containerd/containerd.sock";
      };
      extraOpts = mkOption {
        type = types.separatedString " ";
        default = "";
      };
      seedDockerImages = list types.package;
    };
  };

  config = lib.mkMerge [
    # nixpkgs' containerd module.
    (mkIf config.virtualisation.containerd.enable {
      virtualisation.containerd.settings = {
        version = 2;
        plugins."io.containerd.grpc.v1.cri".cni.bin_dir = mkOptionDefault "${pkgs.cni-plugins}/bin";
      };
    })
    # nixpkgs' CRI-O module.
    (mkIf config.virtualisation.cri-o.enable {
      virtualisation.cri-o.settings.crio.image.pause_image = mkIf (config.virtualisation.cri-o.pauseImage != null) config.virtualisation.cri-o.pauseImage;
      virtualisation.cri-o.settings.crio.network.plugin_dirs = ["${pkgs.cni-plugins}/bin"];
      environment.etc."cni/net.d/10-crio-bridge.conflist".text = "{}";
      environment.etc."cni/net.d/99-loopback.conflist".text = "{}";
    })
    # nixpkgs' kubernetes default.nix: roles.
    (mkIf (builtins.elem "master" k8s.roles) {
      services.kubernetes.controllerManager.enable = mkDefault true;
      services.kubernetes.proxy.enable = mkDefault true;
      services.kubernetes.kubelet.enable = mkDefault true;
    })
    (mkIf (builtins.elem "node" k8s.roles) {
      services.kubernetes.proxy.enable = mkDefault true;
      services.kubernetes.kubelet.enable = mkDefault true;
    })
    (mkIf (k8s.roles != []) {
      services.kubernetes.flannel.enable = mkDefault true;
    })
    # nixpkgs' kubernetes modules, for a kubelet node: default.nix (the
    # containerd defaults, the DNS addon on), kubelet.nix (its pause
    # image), addons/dns.nix (coredns).
    (mkIf k8s.kubelet.enable {
      virtualisation.containerd.enable = mkDefault true;
      virtualisation.containerd.settings = {
        version = mkDefault 2;
        plugins."io.containerd.grpc.v1.cri" = {
          sandbox_image = mkDefault "pause:latest";
          cni.bin_dir = mkDefault "/opt/cni/bin";
          containerd.runtimes.runc = {
            runtime_type = mkDefault "io.containerd.runc.v2";
            options.SystemdCgroup = mkDefault true;
          };
        };
      };
      services.kubernetes.addons.dns.enable = mkDefault true;
      services.kubernetes.kubelet.seedDockerImages = [
        (pkgs.dockerTools.buildImage {
          name = "pause";
          tag = "latest";
          copyToRoot = [k8s.package.pause];
        })
      ];
      systemd.services.kubelet.after = ["containerd.service"];
    })
    (mkIf k8s.addons.dns.enable {
      services.kubernetes.kubelet.seedDockerImages = [(pkgs.dockerTools.pullImage k8s.addons.dns.coredns)];
    })
  ];
}
