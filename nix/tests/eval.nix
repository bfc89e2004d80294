# Module evaluation tests: each k8s-shims module through lib.evalModules
# against the stand-ins of nix/tests/stubs.nix and the fake packages of
# nix/tests/fake-pkgs.nix. Needs only nixpkgs' lib (works with Nix 2.8 and
# lib a53daa43):
#
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/eval.nix \
#     --arg lib 'import <nixpkgs lib dir>'
#
# Returns { results = <what each case produced>; failures = [ <message> ]; }:
# `failures` lists every expectation that did not hold (the flake's
# `module-eval` check and the Rust test both require it to be empty; the
# Rust test checks `results` on its own too).
{lib}: let
  pkgs = import ./fake-pkgs.nix {inherit lib;};
  inherit (pkgs) drv;
  modules = {
    cni-host-local = ../modules/cni-host-local.nix;
    cni-bridge = ../modules/cni-bridge.nix;
    cri-adapter = ../modules/cri-adapter.nix;
    kubelet = ../modules/kubelet.nix;
    default = ../modules/default.nix;
  };

  evalPkgs = pkgs: imports: config:
    (lib.evalModules {
      modules = [./stubs.nix {inherit config;}] ++ imports;
      specialArgs = {inherit pkgs;};
    })
    .config;
  eval = evalPkgs pkgs;
  failed = cfg: map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);

  hostLocal = {
    enable = true;
    ranges = [[{subnet = "10.244.1.0/24";}]];
  };

  ours = name: "${pkgs.k8s-shims.${name}}/bin/${name}";
  ref = name: "${pkgs.cni-plugins}/bin/${name}";

  # Summary of one evaluated configuration.
  summary = cfg: let
    c = cfg.services.k8s;
    etcOn = lib.filterAttrs (_: f: f.enable) cfg.environment.etc;
  in {
    assertions = failed cfg;
    inherit (cfg) warnings;
    pluginPaths = c.cni.pluginPaths;
    binDir = c.cni.binDir;
    conflist = c.cni.network.conflist;
    etc = lib.mapAttrs (_: f: f.text) etcOn;
    containerd = {
      inherit (cfg.virtualisation.containerd) enable settings;
    };
    crio = {
      inherit (cfg.virtualisation.cri-o) enable settings;
    };
    kubeletEndpoint = cfg.services.kubernetes.kubelet.containerRuntimeEndpoint;
    kubeletSeed = cfg.services.kubernetes.kubelet.seedDockerImages;
    kubeletExtraOpts = cfg.services.kubernetes.kubelet.extraOpts;
    seeded =
      if c ? cri
      then c.cri.seededImages
      else null;
    services = lib.mapAttrs (_: s: {
      inherit (s) after before wants requires wantedBy path;
      ExecStart = s.serviceConfig.ExecStart or null;
      ExecStop = s.serviceConfig.ExecStop or null;
      LimitNOFILE = s.serviceConfig.LimitNOFILE or null;
    }) (lib.filterAttrs (n: _: lib.hasPrefix "k8s-" n || n == "kubelet" || n == "containerd" || n == "crio") cfg.systemd.services);
    # Our kubelet's KubeletConfiguration (the fake formats.json keeps it).
    kubeletConfig =
      if c ? kubelet && c.kubelet.enable
      then c.kubelet.configFile.value
      else null;
    endpoint =
      if c ? cri
      then c.cri.endpoint
      else null;
  };

  cases = {
    # Each module on its own.
    host-local-alone = summary (eval [modules.cni-host-local] {
      services.k8s.cni.host-local = hostLocal;
    });
    bridge-alone = summary (eval [modules.cni-bridge] {
      services.k8s.cni.bridge.enable = true;
      services.k8s.cni.network.ipam = {type = "dhcp";};
    });
    cri-alone = summary (eval [modules.cri-adapter] {
      services.k8s.cri.enable = true;
    });

    # A containerd node: our bridge + our host-local, kubelet on.
    containerd-node = summary (eval [modules.default] {
      services.k8s.cni.host-local = hostLocal // {routes = [{dst = "192.168.0.0/16";}];};
      services.k8s.cni.bridge = {
        enable = true;
        mtu = 1450;
        vlanTrunk = [
          {id = 101;}
          {
            minID = 200;
            maxID = 210;
          }
        ];
      };
      services.k8s.cri = {
        enable = true;
        runtime = "containerd";
        seedImages = [(drv "pause-image.tar.gz")];
      };
      services.kubernetes.kubelet.enable = true;
      services.kubernetes.clusterCidr = "10.244.0.0/16";
    });

    # A CRI-O node: the reference bridge + our host-local, serve on.
    crio-node = summary (eval [modules.default] {
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge.enable = true;
      services.k8s.cni.plugins.bridge.package = pkgs.cni-plugins;
      services.k8s.cri = {
        enable = true;
        runtime = "cri-o";
        serve.enable = true;
      };
      services.kubernetes.kubelet.enable = true;
    });

    # Our bridge + the reference host-local; a type from another package
    # under another program name; a dropped type.
    mixed = summary (eval [modules.default] {
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge.enable = true;
      services.k8s.cni.plugins = {
        host-local.package = pkgs.cni-plugins;
        portmap.package = pkgs.cni-plugins;
        flannel.package = pkgs.cni-plugin-flannel;
        kn = {
          package = drv "kn-plugins";
          program = "kn-bridge";
        };
        dhcp.enable = false;
      };
      services.k8s.cni.network.extraPlugins = [
        {
          type = "tuning";
          sysctl."net.core.somaxconn" = "512";
        }
      ];
    });

    # The user's own definitions win over the module's.
    user-override = summary (eval [modules.default] {
      services.k8s.cri.enable = true;
      services.kubernetes.kubelet = {
        enable = true;
        containerRuntimeEndpoint = "unix:///run/other.sock";
      };
      virtualisation.containerd.settings.plugins."io.containerd.grpc.v1.cri".cni.bin_dir = "/opt/cni/bin";
      services.k8s.cni.bridge = {
        enable = true;
        settings.dns.nameservers = ["10.96.0.10"];
      };
      services.k8s.cni.host-local = hostLocal // {settings.ranges = [[{subnet = "10.9.0.0/24";}]];};
      services.k8s.cni.network = {
        name = "podnet";
        priority = 5;
        cniVersion = "1.1.0";
        portmap.enable = false;
        settings.disableCheck = true;
      };
    });

    # A CRI-O node with nixpkgs' kubelet (its pause image and the DNS
    # addon's coredns in seedDockerImages): seeded by cri-adapter instead.
    crio-nixpkgs-kubelet = summary (eval [modules.default] {
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge.enable = true;
      services.k8s.cri = {
        enable = true;
        runtime = "cri-o";
        seedImages = [(drv "app.tar")];
      };
      services.kubernetes.kubelet.enable = true;
    });
    # Another pause image, on CRI-O and on containerd (config version 3).
    crio-own-pause = summary (eval [modules.default] {
      services.k8s.cri = {
        enable = true;
        runtime = "cri-o";
        pauseImage.name = "registry.k8s.io/pause:3.10";
      };
      services.kubernetes.kubelet.enable = true;
      services.kubernetes.addons.dns.enable = false;
    });
    containerd-own-pause = summary (eval [modules.cri-adapter] {
      services.k8s.cri = {
        enable = true;
        pauseImage = {
          name = "registry.k8s.io/pause:3.10";
          package = pkgs.kubernetes.pause;
        };
      };
    });

    # containerd 2.x layout: our keys in the version 3 places, the file
    # says version 3; nixpkgs' kubelet's version-2 keys are warned about.
    # nixpkgs' roles with our network: flannel must go, clusterCidr must
    # hold our ranges.
    roles-default = failed (eval [modules.default] {
      services.kubernetes.roles = ["master" "node"];
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge.enable = true;
      services.k8s.cri.enable = true;
    });
    roles-coherent = summary (eval [modules.default] {
      services.kubernetes = {
        roles = ["master" "node"];
        flannel.enable = false;
        clusterCidr = "10.244.0.0/16,fd00:10:244::/56";
      };
      services.k8s.cni.host-local = hostLocal // {ranges = hostLocal.ranges ++ [[{subnet = "fd00:10:244:1::/64";}]];};
      services.k8s.cni.bridge.enable = true;
      services.k8s.cri.enable = true;
    });
    # roles + our network, pod traffic between nodes by static host-gw
    # routes (no flannel).
    host-gw = summary (eval [modules.default] {
      services.kubernetes = {
        roles = ["master" "node"];
        flannel.enable = false;
        clusterCidr = "10.244.0.0/16";
      };
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge.enable = true;
      services.k8s.cri.enable = true;
      services.k8s.cni.routes = {
        node2 = {
          address = "192.168.1.12";
          podCIDR = "10.244.2.0/24";
        };
        node3 = {
          address = "192.168.1.13";
          podCIDR = "10.244.3.0/24";
        };
        gone = {
          enable = false;
          address = "192.168.1.14";
          podCIDR = "10.244.4.0/24";
        };
      };
    });
    bad-routes = failed (eval [modules.default] {
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge.enable = true;
      services.k8s.cni.routes = {
        self = {
          address = "192.168.1.11";
          podCIDR = "10.244.1.0/24";
        };
        v6 = {
          address = "fd00::12";
          podCIDR = "10.244.2.0/24";
        };
        a = {
          address = "192.168.1.13";
          podCIDR = "10.244.3.0/24";
        };
        b = {
          address = "192.168.1.14";
          podCIDR = "10.244.3.128/25";
        };
      };
    });
    # roles + our modules in flannel mode: flannel routes, its plugin
    # delegates to our bridge and host-local.
    flannel-mode = summary (eval [modules.default] {
      services.kubernetes.roles = ["master" "node"];
      services.k8s.cni.bridge.enable = true;
      services.k8s.cni.flannel.enable = true;
      services.k8s.cri.enable = true;
    });
    bad-flannel-mode = failed (eval [modules.default] {
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.flannel.enable = true;
    });
    flannel-mode-no-daemon = summary (eval [modules.default] {
      services.k8s.cni.bridge.enable = true;
      services.k8s.cni.flannel.enable = true;
    });

    # Our kubelet on a containerd node with host-gw routes.
    kubelet-containerd = summary (eval [modules.default] {
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge.enable = true;
      services.k8s.cri.enable = true;
      services.k8s.cni.routes.node2 = {
        address = "192.168.1.12";
        podCIDR = "10.244.2.0/24";
      };
      services.k8s.kubelet = {
        enable = true;
        kubeconfig = "/var/lib/kubelet/kubeconfig";
      };
    });
    # Our kubelet alone (its module imports the CRI and CNI ones): pinned
    # to another kubernetes than the node's, on CRI-O behind serve, static
    # pods (an etcd), labels, taints, certificate rotation via settings.
    kubelet-crio-pinned = summary (eval [modules.kubelet] {
      services.k8s.cri = {
        enable = true;
        runtime = "cri-o";
        serve.enable = true;
      };
      services.k8s.kubelet = {
        enable = true;
        package = pkgs.kubernetes_1_31;
        bootstrapKubeconfig = "/var/lib/kubelet/bootstrap-kubeconfig";
        kubeconfig = "/var/lib/kubelet/kubeconfig";
        hostname = "node-1";
        labels = {
          "topology.kubernetes.io/zone" = "rack-1";
          "node-role.kubernetes.io/control-plane" = "";
        };
        taints."node-role.kubernetes.io/control-plane".effect = "NoSchedule";
        taints.dedicated = {
          value = "etcd";
          effect = "NoExecute";
        };
        settings = {
          rotateCertificates = true;
          serverTLSBootstrap = true;
          clusterDNS = ["10.96.0.10"];
        };
        extraArgs = ["--v=2"];
        staticPods.etcd = {
          apiVersion = "v1";
          kind = "Pod";
          metadata = {
            name = "etcd";
            namespace = "kube-system";
          };
          spec = {
            hostNetwork = true;
            containers = [
              {
                name = "etcd";
                image = "registry.k8s.io/etcd:3.5.21-0";
                command = ["etcd" "--data-dir=/var/lib/etcd"];
              }
            ];
          };
        };
      };
    });
    bad-kubelet = failed (eval [modules.default] {
      services.kubernetes.roles = ["node"];
      services.kubernetes.flannel.enable = false;
      services.k8s.cri.enable = true;
      services.k8s.kubelet = {
        enable = true;
        settings = {
          containerRuntimeEndpoint = "unix:///run/other.sock";
          cgroupDriver = "cgroupfs";
        };
        staticPods.web = {
          apiVersion = "apps/v1";
          kind = "Deployment";
        };
      };
    });
    # nixpkgs' kubelet alone: the controller-manager is elsewhere, a warning.
    kubelet-outside-cidr = summary (eval [modules.default] {
      services.kubernetes.kubelet.enable = true;
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge.enable = true;
      services.k8s.cri.enable = true;
    });

    containerd-v3 = summary (eval [modules.cri-adapter] {
      services.k8s.cri = {
        enable = true;
        containerd.configVersion = 3;
      };
      virtualisation.containerd.settings.version = lib.mkForce 3;
    });
    containerd-v3-nixpkgs-kubelet = summary (eval [modules.default] {
      services.k8s.cri = {
        enable = true;
        containerd.configVersion = 3;
      };
      virtualisation.containerd.settings.version = lib.mkForce 3;
      services.kubernetes.kubelet.enable = true;
    });
    # configVersion and the file's version disagree (either way), or the
    # package is too old for version 3.
    bad-v3-file-v2 = failed (eval [modules.cri-adapter] {
      services.k8s.cri = {
        enable = true;
        containerd.configVersion = 3;
      };
    });
    bad-v2-file-v3 = failed (eval [modules.cri-adapter] {
      services.k8s.cri.enable = true;
      virtualisation.containerd.settings.version = lib.mkForce 3;
    });
    bad-v3-old-containerd = failed (evalPkgs (pkgs // {containerd = drv "containerd-1.7.27" // {version = "1.7.27";};}) [modules.cri-adapter] {
      services.k8s.cri = {
        enable = true;
        containerd.configVersion = 3;
      };
      virtualisation.containerd.settings.version = lib.mkForce 3;
    });

    # Settings that must be refused, with the messages the user sees.
    bad-overlap = failed (eval [modules.cni-host-local] {
      services.k8s.cni.host-local = {
        enable = true;
        ranges = [[{subnet = "10.1.0.0/16";}] [{subnet = "10.1.2.0/24";}]];
      };
    });
    bad-cidr = failed (eval [modules.cni-host-local] {
      services.k8s.cni.host-local = {
        enable = true;
        ranges = [[{subnet = "10.1.2.0/33";} {subnet = "10.1.300.0/24";}] [{subnet = "10.1.3.7/24";}]];
        routes = [{dst = "default";}];
      };
    });
    # Two definitions of a list (RFC 42 JSON settings): concatenated.
    lists-merge = summary (eval [modules.default {services.k8s.cni.bridge.settings.dns.nameservers = ["10.96.0.11"];}] {
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge = {
        enable = true;
        settings.dns.nameservers = ["10.96.0.10"];
      };
      services.k8s.cni.network.extraPlugins = [{type = "tuning";}];
    });
    # bridge without IPAM: refused, unless it is an L2 bridge.
    bad-bridge-no-ipam = failed (eval [modules.cni-bridge] {
      services.k8s.cni.bridge.enable = true;
    });
    bridge-l2 = failed (eval [modules.cni-bridge] {
      services.k8s.cni.bridge = {
        enable = true;
        isGateway = false;
        isDefaultGateway = false;
        ipMasq = false;
      };
    });
    bad-range = failed (eval [modules.cni-host-local] {
      services.k8s.cni.host-local = {
        enable = true;
        ranges = [
          [
            {
              subnet = "10.1.0.0/24";
              rangeStart = "10.1.1.10";
            }
          ]
          [
            {
              subnet = "fd00::/64";
              gateway = "10.0.0.1";
            }
          ]
        ];
      };
    });
    bad-bridge = failed (eval [modules.cni-bridge] {
      services.k8s.cni.bridge = {
        enable = true;
        promiscMode = true;
        vlanTrunk = [{minID = 10;}];
      };
    });
    bad-missing-type = failed (eval [modules.default] {
      services.k8s.cni.host-local = hostLocal;
      services.k8s.cni.bridge.enable = true;
      services.k8s.cni.plugins.portmap.enable = false;
      services.k8s.cni.network.name = "pod net";
    });
    bad-cri = failed (eval [modules.default] {
      services.k8s.cri = {
        enable = true;
        runtime = "cri-o";
      };
      services.k8s.cni.plugins.loopback.enable = false;
      services.kubernetes.kubelet = {
        enable = true;
        seedDockerImages = lib.mkForce [(drv "pause.tar")];
      };
    });
    # The pause image set on the runtime behind our back.
    bad-crio-pause = failed (eval [modules.default] {
      services.k8s.cri = {
        enable = true;
        runtime = "cri-o";
      };
      virtualisation.cri-o.pauseImage = "k8s.gcr.io/pause:3.2";
    });
    bad-containerd-pause = failed (eval [modules.default] {
      services.k8s.cri.enable = true;
      virtualisation.containerd.settings.plugins."io.containerd.grpc.v1.cri".sandbox_image = "pause:3.9";
    });
    # Type errors are thrown (caught here), not assertions.
    bad-runtime-rejected =
      !(builtins.tryEval (builtins.deepSeq
        (eval [modules.cri-adapter] {
          services.k8s.cri = {
            enable = true;
            runtime = "docker";
          };
        })
        .services
        .k8s
        .cri
        .runtime
        true))
      .success;
    bad-datadir-rejected =
      !(builtins.tryEval (builtins.deepSeq
        (eval [modules.cni-host-local] {
          services.k8s.cni.host-local.dataDir = "run/cni";
        })
        .services
        .k8s
        .cni
        .host-local
        .dataDir
        true))
      .success;
    bad-resolvconf-rejected =
      !(builtins.tryEval (builtins.deepSeq
        (eval [modules.cni-host-local] {
          services.k8s.cni.host-local.resolvConf = "etc/resolv.conf";
        })
        .services
        .k8s
        .cni
        .host-local
        .resolvConf
        true))
      .success;
    bad-socket-rejected =
      !(builtins.tryEval (builtins.deepSeq
        (eval [modules.cri-adapter] {
          services.k8s.cri.serve.socket = "cri.sock";
        })
        .services
        .k8s
        .cri
        .serve
        .socket
        true))
      .success;
    bad-mtu-rejected =
      !(builtins.tryEval (builtins.deepSeq
        (eval [modules.cni-bridge] {
          services.k8s.cni.bridge.mtu = 40;
        })
        .services
        .k8s
        .cni
        .bridge
        .mtu
        true))
      .success;

    # Every visible option of ours has a description.
    undocumented = let
      all =
        (lib.evalModules {
          modules = [./stubs.nix modules.default];
          specialArgs = {inherit pkgs;};
        })
        .options;
      docs = lib.optionAttrSetToDocList all;
      ourDocs = lib.filter (o: lib.hasPrefix "services.k8s." o.name && o.visible && !(o.internal or false)) docs;
    in {
      count = builtins.length ourDocs;
      missing = map (o: o.name) (lib.filter (o: (o.description or null) == null || o.description == "") ourDocs);
    };
  };

  hasMsg = needle: msgs: lib.any (m: lib.hasInfix needle m) msgs;
  expect = name: cond:
    if cond
    then []
    else [name];
  c = cases;
  cniOf = k: c.${k}.containerd.settings.plugins."io.containerd.grpc.v1.cri".cni;
  # Every evaluated node scenario: the runtime's effective CNI dirs are ours
  # and kubelet (ours or nixpkgs') talks to our endpoint, unless the
  # scenario is about overriding them.
  nodeScenarios = lib.filterAttrs (n: v: builtins.isAttrs v && v ? containerd && v ? assertions && v.assertions == [] && (v.containerd.enable || v.crio.enable) && !(builtins.elem n ["user-override"])) c;
  dirsOurs = name: v: let
    st = v.containerd.settings;
    ctrdCni =
      if (st.version or 2) >= 3
      then st.plugins."io.containerd.cri.v1.runtime".cni
      else st.plugins."io.containerd.grpc.v1.cri".cni;
  in
    (
      if v.containerd.enable
      then ctrdCni.conf_dir == "/etc/k8s-shims/cni/net.d" && ctrdCni.bin_dir == v.binDir
      else builtins.head v.crio.settings.crio.network.plugin_dirs == v.binDir && v.crio.settings.crio.network.network_dir == "/etc/k8s-shims/cni/net.d"
    )
    && (v.kubeletConfig == null || v.kubeletConfig.containerRuntimeEndpoint == v.endpoint)
    && (v.services ? kubelet && v.kubeletConfig == null -> v.kubeletEndpoint == v.endpoint)
    || builtins.trace "dirs/endpoint not ours in ${name}" false;
  failures = lib.concatLists [
    (expect "every node scenario (${toString (builtins.length (builtins.attrNames nodeScenarios))}): runtime's CNI dirs and kubelet's endpoint are ours" (lib.all (n: dirsOurs n nodeScenarios.${n}) (builtins.attrNames nodeScenarios) && builtins.length (builtins.attrNames nodeScenarios) >= 10))
    (expect "host-local-alone: no conflist without a main plugin, and an assertion says so" (
      c.host-local-alone.conflist
      == null
      && c.host-local-alone.assertions == ["services.k8s.cni.host-local.enable: host-local only renders the `ipam` object, and the network has no main plugin, so no conflist is written; enable services.k8s.cni.bridge (or set services.k8s.cni.network.main)."]
    ))
    (expect "bad-bridge-no-ipam" (c.bad-bridge-no-ipam == ["services.k8s.cni.bridge.enable: the bridge has no IPAM (services.k8s.cni.network.ipam is empty), so isGateway, isDefaultGateway and ipMasq have no address to work with; enable services.k8s.cni.host-local (or set services.k8s.cni.network.ipam), or for an L2 bridge set services.k8s.cni.bridge.isGateway, isDefaultGateway and ipMasq to false."]))
    (expect "bridge-l2: an L2 bridge needs no IPAM" (c.bridge-l2 == []))
    (expect "lists-merge: list definitions concatenate" (
      let
        b = builtins.head c.lists-merge.conflist.plugins;
      in
        c.lists-merge.assertions
        == []
        && lib.sort (a: b: a < b) b.dns.nameservers == ["10.96.0.10" "10.96.0.11"]
        && map (p: p.type) c.lists-merge.conflist.plugins == ["bridge" "portmap" "tuning"]
    ))
    (expect "paths are typed: relative dataDir, resolvConf, serve.socket rejected" (c.bad-datadir-rejected && c.bad-resolvconf-rejected && c.bad-socket-rejected))
    (expect "crio-node: kubelet requires the serve unit (its endpoint)" (c.crio-node.services.kubelet.requires == ["k8s-cri-adapter-serve.service"]))
    (expect "containerd-node: no serve, nothing required" (c.containerd-node.services.kubelet.requires == []))
    (expect "user-override: a user-set kubelet endpoint that is not ours is refused" (
      c.user-override.assertions
      == ["services.k8s.cri: services.kubernetes.kubelet.containerRuntimeEndpoint is \"unix:///run/other.sock\", but this node's CRI endpoint is \"unix:///run/containerd/containerd.sock\" (services.k8s.cri.endpoint, containerd); remove your definition (the module sets it), or change services.k8s.cri.runtime / serve."]
    ))
    (expect "bridge-alone: conflist with the given ipam" (c.bridge-alone.conflist != null && (builtins.head c.bridge-alone.conflist.plugins).ipam == {type = "dhcp";}))
    (expect "cri-alone: containerd on, assertions pass" (c.cri-alone.containerd.enable && c.cri-alone.assertions == []))
    (expect "cri-alone: no conflist, so wait does not require NetworkReady" (lib.hasSuffix " --no-network" (builtins.head c.cri-alone.services.k8s-cri-adapter.ExecStart)))
    (expect "containerd-node: wait requires NetworkReady" (!(lib.hasInfix "--no-network" (builtins.head c.containerd-node.services.k8s-cri-adapter.ExecStart))))
    (expect "crio-node: skopeo for seeding" (c.crio-node.services.k8s-cri-adapter.path == [pkgs.skopeo]))
    (expect "containerd-node: no failed assertion" (c.containerd-node.assertions == []))
    (expect "containerd-node: bin dir = ours for bridge, host-local, loopback and portmap, cni-plugins for the rest" (
      c.containerd-node.pluginPaths.bridge
      == ours "bridge"
      && c.containerd-node.pluginPaths.host-local == ours "host-local"
      && c.containerd-node.pluginPaths.loopback == ours "loopback"
      && c.containerd-node.pluginPaths.portmap == ours "portmap"
      && c.containerd-node.pluginPaths.tuning == ref "tuning"
    ))
    (expect "containerd-node: containerd uses our bin dir and conf dir (over kubernetes' mkDefault)" (
      cniOf "containerd-node"
      == {
        bin_dir = c.containerd-node.binDir;
        conf_dir = "/etc/k8s-shims/cni/net.d";
      }
    ))
    (expect "containerd-node: conflist file in our conf dir" (c.containerd-node.etc ? "k8s-shims/cni/net.d/10-k8s-pod-network.conflist"))
    (expect "containerd-node: kubelet endpoint" (c.containerd-node.kubeletEndpoint == "unix:///run/containerd/containerd.sock"))
    (expect "containerd-node: kubelet after the adapter" (builtins.elem "k8s-cri-adapter.service" c.containerd-node.services.kubelet.after))
    (expect "containerd-node: adapter waits then seeds" (builtins.length c.containerd-node.services.k8s-cri-adapter.ExecStart == 2))
    (expect "containerd-node: plugins' tools on containerd's PATH" (c.containerd-node.services.containerd.path == [pkgs.iptables pkgs.nftables]))
    (expect "crio-node: no failed assertion" (c.crio-node.assertions == []))
    (expect "crio-node: reference bridge, our host-local" (c.crio-node.pluginPaths.bridge == ref "bridge" && c.crio-node.pluginPaths.host-local == ours "host-local"))
    (expect "crio-node: our bin dir first in plugin_dirs, our conf dir" (
      c.crio-node.crio.settings.crio.network
      == {
        plugin_dirs = [c.crio-node.binDir "${pkgs.cni-plugins}/bin"];
        network_dir = "/etc/k8s-shims/cni/net.d";
      }
    ))
    (expect "crio-node: CRI-O's own conflists off" (!(c.crio-node.etc ? "cni/net.d/10-crio-bridge.conflist") && !(c.crio-node.etc ? "cni/net.d/99-loopback.conflist")))
    (expect "crio-node: containerd stays off though kubelet is on" (!c.crio-node.containerd.enable))
    (expect "crio-node: kubelet talks to the serve socket" (c.crio-node.kubeletEndpoint == "unix:///run/k8s-shims/cri.sock" && c.crio-node.endpoint == "unix:///run/k8s-shims/cri.sock"))
    (expect "crio-node: serve unit" (c.crio-node.services ? k8s-cri-adapter-serve))
    (expect "mixed: our bridge, reference host-local and portmap, flannel, renamed program, dhcp dropped" (
      c.mixed.pluginPaths.bridge
      == ours "bridge"
      && c.mixed.pluginPaths.host-local == ref "host-local"
      && c.mixed.pluginPaths.portmap == ref "portmap"
      && c.mixed.pluginPaths.flannel == "${pkgs.cni-plugin-flannel}/bin/flannel"
      && c.mixed.pluginPaths.kn == "${drv "kn-plugins"}/bin/kn-bridge"
      && !(c.mixed.pluginPaths ? dhcp)
    ))
    (expect "mixed: chain bridge, portmap, tuning" (map (p: p.type) c.mixed.conflist.plugins == ["bridge" "portmap" "tuning"]))
    (expect "user-override: the user's bin_dir and endpoint win" ((cniOf "user-override").bin_dir == "/opt/cni/bin" && c.user-override.kubeletEndpoint == "unix:///run/other.sock"))
    (expect "user-override: escape hatches merged" (
      let
        l = c.user-override.conflist;
        b = builtins.head l.plugins;
      in
        l.disableCheck
        && l.name == "podnet"
        && l.cniVersion == "1.1.0"
        && builtins.length l.plugins == 1
        && b.dns.nameservers == ["10.96.0.10"]
        && b.ipam.ranges == [[{subnet = "10.9.0.0/24";}]]
    ))
    (expect "user-override: file name from priority and name" (c.user-override.etc ? "k8s-shims/cni/net.d/05-podnet.conflist"))
    (expect "containerd-v3: v3 layout, file version 3, nothing of ours in the v2 places" (
      let
        st = c.containerd-v3.containerd.settings;
      in
        c.containerd-v3.assertions
        == []
        && c.containerd-v3.warnings == []
        && st.version == 3
        && st.plugins."io.containerd.cri.v1.runtime".cni.conf_dir == "/etc/k8s-shims/cni/net.d"
        && st.plugins."io.containerd.cri.v1.images".pinned_images.sandbox == "docker.io/library/pause:latest"
        # only what nixpkgs' containerd module writes there (ignored in v3)
        && st.plugins."io.containerd.grpc.v1.cri" == {cni.bin_dir = "${pkgs.cni-plugins}/bin";}
    ))
    (expect "containerd-v3-nixpkgs-kubelet: evaluates, warns about kubernetes' version-2 keys" (
      c.containerd-v3-nixpkgs-kubelet.assertions
      == []
      && hasMsg "sets sandbox_image, containerd, which a version 3 config no longer reads there" c.containerd-v3-nixpkgs-kubelet.warnings
    ))
    (expect "containerd-node: file version 2, no warning" (c.containerd-node.containerd.settings.version == 2 && c.containerd-node.warnings == []))
    (expect "roles-default: flannel and clusterCidr refused, with the fix" (
      lib.sort (a: b: a < b) c.roles-default
      == [
        "services.k8s.cni.host-local.ranges: range set 0, range 0: subnet 10.244.1.0/24 is outside services.kubernetes.clusterCidr \"10.1.0.0/16\", the pod network kube-proxy and the controller-manager use; set services.kubernetes.clusterCidr to a prefix that holds every node's ranges (e.g. \"10.244.0.0/16\"), or pick ranges inside it."
        "services.k8s.cni.network: services.kubernetes.flannel.enable is on (services.kubernetes.roles turns it on at mkDefault) next to our conflist: flannel would route its own subnets of services.kubernetes.clusterCidr while our host-local hands out other addresses, and the 11-flannel.conf kubelet writes is not read by the runtime; set services.kubernetes.flannel.enable = false and route pod traffic between nodes otherwise (services.k8s.cni.routes for static host-gw routes), or keep flannel and set services.k8s.cni.flannel.enable = true (flannel mode: flannel's plugin delegates to our bridge and host-local)."
      ]
    ))
    (expect "roles-coherent: dual-stack clusterCidr holding both range sets, flannel off" (c.roles-coherent.assertions == [] && c.roles-coherent.warnings == []))
    (expect "kubelet-outside-cidr: a warning, not an assertion" (c.kubelet-outside-cidr.assertions == [] && hasMsg "subnet 10.244.1.0/24 is outside services.kubernetes.clusterCidr" c.kubelet-outside-cidr.warnings))
    (expect "host-gw: evaluates; one route per enabled node, before kubelet and the runtime" (
      let
        u = c.host-gw.services.k8s-cni-routes;
        ip = "${pkgs.iproute2}/bin/ip";
      in
        c.host-gw.assertions
        == []
        && u.ExecStart == ["${ip} route replace 10.244.2.0/24 via 192.168.1.12" "${ip} route replace 10.244.3.0/24 via 192.168.1.13"]
        && u.ExecStop == ["-${ip} route del 10.244.2.0/24 via 192.168.1.12" "-${ip} route del 10.244.3.0/24 via 192.168.1.13"]
        && builtins.elem "kubelet.service" u.before
        && builtins.elem "containerd.service" u.before
        && u.wantedBy == ["multi-user.target"]
    ))
    (expect "no routes, no unit" (!(c.containerd-node.services ? k8s-cni-routes)))
    (expect "bad-routes" (
      lib.sort (a: b: a < b) c.bad-routes
      == [
        "services.k8s.cni.routes.self: podCIDR 10.244.1.0/24 overlaps this node's own range 10.244.1.0/24 (services.k8s.cni.host-local.ranges); list only the other nodes"
        "services.k8s.cni.routes.v6: address fd00::12 and podCIDR 10.244.2.0/24 are of different IP families (a route needs a next hop of its own family)"
        "services.k8s.cni.routes: nodes a and b have overlapping podCIDRs (10.244.3.0/24, 10.244.3.128/25)"
      ]
    ))
    (expect "kubelet-containerd: evaluates; our kubelet, wired to containerd, the adapter and the routes" (
      let
        k = c.kubelet-containerd;
        u = k.services.kubelet;
        runc = k.containerd.settings.plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc;
      in
        k.assertions
        == []
        && k.kubeletConfig
        == {
          apiVersion = "kubelet.config.k8s.io/v1beta1";
          kind = "KubeletConfiguration";
          containerRuntimeEndpoint = "unix:///run/containerd/containerd.sock";
          cgroupDriver = "systemd";
        }
        && lib.hasPrefix "${pkgs.kubernetes}/bin/kubelet '--config=" u.ExecStart
        && lib.hasSuffix " '--root-dir=/var/lib/kubelet' '--kubeconfig=/var/lib/kubelet/kubeconfig'" u.ExecStart
        && lib.all (x: builtins.elem x u.after) ["containerd.service" "k8s-cri-adapter.service" "k8s-cni-routes.service"]
        && u.requires == []
        && runc.options.SystemdCgroup
        && (builtins.elemAt k.seeded 0).args.copyToRoot == [pkgs.kubernetes.pause]
        && k.containerd.enable
    ))
    (expect "kubelet-crio-pinned: evaluates; pinned package, pause from it, serve required, static pod, labels, taints" (
      let
        k = c.kubelet-crio-pinned;
        u = k.services.kubelet;
        kc = k.kubeletConfig;
      in
        k.assertions
        == []
        && lib.hasPrefix "${pkgs.kubernetes_1_31}/bin/kubelet '--config=" u.ExecStart
        && lib.hasSuffix " '--bootstrap-kubeconfig=/var/lib/kubelet/bootstrap-kubeconfig' '--hostname-override=node-1' '--node-labels=node-role.kubernetes.io/control-plane=,topology.kubernetes.io/zone=rack-1' '--v=2'" u.ExecStart
        && u.requires == ["k8s-cri-adapter-serve.service"]
        && lib.all (x: builtins.elem x u.after) ["crio.service" "k8s-cri-adapter.service" "k8s-cri-adapter-serve.service"]
        && kc.containerRuntimeEndpoint == "unix:///run/k8s-shims/cri.sock"
        && kc.staticPodPath == "/etc/k8s-shims/kubelet/manifests"
        && kc.rotateCertificates
        && kc.serverTLSBootstrap
        && kc.clusterDNS == ["10.96.0.10"]
        && kc.registerWithTaints
        == [
          {
            key = "dedicated";
            value = "etcd";
            effect = "NoExecute";
          }
          {
            key = "node-role.kubernetes.io/control-plane";
            effect = "NoSchedule";
          }
        ]
        && (builtins.fromJSON k.etc."k8s-shims/kubelet/manifests/etcd.json").spec.containers
        == [
          {
            name = "etcd";
            image = "registry.k8s.io/etcd:3.5.21-0";
            command = ["etcd" "--data-dir=/var/lib/etcd"];
          }
        ]
        && (builtins.head k.seeded).args.copyToRoot == [pkgs.kubernetes_1_31.pause]
        && k.crio.settings.crio.image.pause_image == "docker.io/library/pause:latest"
    ))
    (expect "bad-kubelet: next to nixpkgs' kubelet, another endpoint, cgroupfs, a non-Pod static pod" (
      lib.sort (a: b: a < b) c.bad-kubelet
      == [
        "services.k8s.kubelet.enable and nixpkgs' services.kubernetes.kubelet.enable are both on, and both define kubelet.service; set services.kubernetes.kubelet.enable = false (services.kubernetes.roles turns it on at mkDefault), or disable services.k8s.kubelet."
        "services.k8s.kubelet.settings.cgroupDriver is \"cgroupfs\", but services.k8s.cri configures containerd for systemd cgroups; set it to \"systemd\"."
        "services.k8s.kubelet.settings.containerRuntimeEndpoint is \"unix:///run/other.sock\", but this node's CRI endpoint is \"unix:///run/containerd/containerd.sock\" (services.k8s.cri.endpoint); remove your definition (the module sets it)."
        "services.k8s.kubelet.staticPods.web: a static pod manifest needs apiVersion = \"v1\" and kind = \"Pod\"."
      ]
    ))
    (expect "flannel-mode: evaluates; flannel's plugin delegating to our bridge, host-local IPAM, in our conf dir" (
      let
        k = c.flannel-mode;
        main = builtins.head k.conflist.plugins;
      in
        k.assertions
        == []
        && k.warnings == []
        && main
        == {
          type = "flannel";
          subnetFile = "/run/flannel/subnet.env";
          dataDir = "/var/lib/cni/flannel";
          ipam = {
            type = "host-local";
            dataDir = "/run/cni/networks";
          };
          delegate = {
            type = "bridge";
            bridge = "cni0";
            isGateway = true;
            isDefaultGateway = true;
            hairpinMode = true;
          };
        }
        && k.pluginPaths.flannel == "${pkgs.cni-plugin-flannel}/bin/flannel"
        && k.pluginPaths.bridge == ours "bridge"
        && k.pluginPaths.host-local == ours "host-local"
        && (cniOf "flannel-mode").conf_dir == "/etc/k8s-shims/cni/net.d"
        && k.etc ? "k8s-shims/cni/net.d/10-k8s-pod-network.conflist"
    ))
    (expect "bad-flannel-mode" (
      lib.sort (a: b: a < b) c.bad-flannel-mode
      == [
        "services.k8s.cni.flannel.enable: flannel mode delegates to our bridge; set services.k8s.cni.bridge.enable = true."
        "services.k8s.cni.flannel.enable: in flannel mode flannel gives each node its subnet (subnet.env) and host-local allocates from it, so services.k8s.cni.host-local.ranges are not used; set services.k8s.cni.host-local.enable = false."
        "services.k8s.cni.host-local.enable: host-local only renders the `ipam` object, and the network has no main plugin, so no conflist is written; enable services.k8s.cni.bridge (or set services.k8s.cni.network.main)."
      ]
    ))
    (expect "flannel-mode-no-daemon: a warning" (c.flannel-mode-no-daemon.assertions == [] && hasMsg "no flannel daemon is enabled on this node" c.flannel-mode-no-daemon.warnings))
    (expect "bad-v3-file-v2" (c.bad-v3-file-v2 == ["services.k8s.cri.containerd.configVersion = 3, but containerd's config file says version = 2 (nixpkgs' containerd module writes 2), so containerd would ignore our `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images` keys and use /opt/cni/bin and /etc/cni/net.d: keep services.k8s.cri.containerd.configVersion = 2 (containerd 2.x migrates it), or also set virtualisation.containerd.settings.version = lib.mkForce 3."]))
    (expect "bad-v2-file-v3" (c.bad-v2-file-v3 == ["services.k8s.cri.containerd.configVersion = 2, but containerd's config file says version = 3, so containerd would ignore our `io.containerd.grpc.v1.cri` keys: set services.k8s.cri.containerd.configVersion = 3."]))
    (expect "bad-v3-old-containerd" (c.bad-v3-old-containerd == ["services.k8s.cri.containerd.configVersion = 3 needs containerd 2.0 or later, but pkgs.containerd is 1.7.27: set services.k8s.cri.containerd.configVersion = 2."]))
    (expect "bad-overlap" (hasMsg "range sets 0 and 1 overlap" c.bad-overlap))
    (expect "bad-cidr" (
      hasMsg "range set 0, range 0: subnet \"10.1.2.0/33\" is not a valid CIDR" c.bad-cidr
      && hasMsg "range set 0, range 1: subnet \"10.1.300.0/24\" is not a valid CIDR" c.bad-cidr
      && hasMsg "range set 1, range 0: subnet 10.1.3.7/24 has host bits set; the network address for a /24 is 10.1.3.0/24" c.bad-cidr
      && hasMsg "routes: route 0: dst \"default\" is not a valid CIDR" c.bad-cidr
    ))
    (expect "bad-range" (hasMsg "rangeStart 10.1.1.10 is not in subnet 10.1.0.0/24" c.bad-range && hasMsg "gateway 10.0.0.1 is IPv4 but subnet fd00::/64 is IPv6" c.bad-range))
    (expect "bad-bridge" (hasMsg "hairpinMode and promiscMode cannot both be true" c.bad-bridge && hasMsg "vlanTrunk: each entry needs" c.bad-bridge))
    (expect "bad-missing-type" (hasMsg "uses CNI type(s) portmap, which the bin dir does not provide" c.bad-missing-type && hasMsg "\"pod net\" is not a valid CNI network name" c.bad-missing-type))
    (expect "bad-cri" (hasMsg "keep services.k8s.cni.plugins.loopback enabled" c.bad-cri && hasMsg "seedDockerImages is forced non-empty on a CRI-O node" c.bad-cri))
    (expect "bad-crio-pause" (c.bad-crio-pause == ["services.k8s.cri: the runtime's pause image is \"k8s.gcr.io/pause:3.2\" but services.k8s.cri.pauseImage.name is \"docker.io/library/pause:latest\"; set services.k8s.cri.pauseImage.name instead of virtualisation.cri-o.pauseImage (one value for the runtime, kubelet and the seeded archive)."]))
    (expect "bad-containerd-pause" (hasMsg "the runtime's pause image is \"pause:3.9\"" c.bad-containerd-pause && hasMsg "instead of containerd's sandbox_image" c.bad-containerd-pause))
    (expect "crio-nixpkgs-kubelet: evaluates, no failed assertion" (c.crio-nixpkgs-kubelet.assertions == []))
    (expect "crio-nixpkgs-kubelet: nothing left for ctr" (c.crio-nixpkgs-kubelet.kubeletSeed == []))
    (expect "crio-nixpkgs-kubelet: cri-adapter seeds the user's images, our pause archive (from kubelet's package) and coredns" (
      let
        s = c.crio-nixpkgs-kubelet.seeded;
        p = builtins.elemAt s 1;
      in
        builtins.length s
        == 3
        && builtins.head s == drv "app.tar"
        && p.args.name == "docker.io/library/pause"
        && p.args.tag == "latest"
        && p.args.copyToRoot == [pkgs.kubernetes.pause]
        && (builtins.elemAt s 2).args.imageName == "coredns/coredns"
    ))
    (expect "crio-nixpkgs-kubelet: seed command carries them" (
      let
        e = builtins.elemAt c.crio-nixpkgs-kubelet.services.k8s-cri-adapter.ExecStart 1;
      in
        lib.all (i: lib.hasInfix (toString i) e) c.crio-nixpkgs-kubelet.seeded
    ))
    (expect "crio-nixpkgs-kubelet: one pause image for CRI-O and kubelet" (
      c.crio-nixpkgs-kubelet.crio.settings.crio.image.pause_image
      == "docker.io/library/pause:latest"
      && lib.hasSuffix "--pod-infra-container-image=docker.io/library/pause:latest" c.crio-nixpkgs-kubelet.kubeletExtraOpts
    ))
    (expect "crio-own-pause: CRI-O, kubelet and the archive share the name" (
      let
        p = builtins.head c.crio-own-pause.seeded;
      in
        c.crio-own-pause.assertions
        == []
        && c.crio-own-pause.crio.settings.crio.image.pause_image == "registry.k8s.io/pause:3.10"
        && c.crio-own-pause.kubeletExtraOpts == "--pod-infra-container-image=registry.k8s.io/pause:3.10"
        && p.args.name == "registry.k8s.io/pause"
        && p.args.tag == "3.10"
        && builtins.length c.crio-own-pause.seeded == 1
    ))
    (expect "containerd-own-pause: sandbox_image and the archive" (
      c.containerd-own-pause.assertions
      == []
      && c.containerd-own-pause.containerd.settings.plugins."io.containerd.grpc.v1.cri".sandbox_image == "registry.k8s.io/pause:3.10"
      && (builtins.head c.containerd-own-pause.seeded).args.tag == "3.10"
    ))
    (expect "containerd-node: our pause name over kubernetes' mkDefault pause:latest; our archive from kubelet's package seeded too" (
      c.containerd-node.containerd.settings.plugins."io.containerd.grpc.v1.cri".sandbox_image
      == "docker.io/library/pause:latest"
      && builtins.head c.containerd-node.seeded == drv "pause-image.tar.gz"
      && (builtins.elemAt c.containerd-node.seeded 1).args.copyToRoot == [pkgs.kubernetes.pause]
      && c.containerd-node.assertions == []
    ))
    (expect "cri-alone: no pause archive, nothing seeded" (c.cri-alone.seeded == [] && builtins.length c.cri-alone.services.k8s-cri-adapter.ExecStart == 1))
    (expect "bad-runtime-rejected" c.bad-runtime-rejected)
    (expect "bad-mtu-rejected" c.bad-mtu-rejected)
    (expect "every option documented (${toString c.undocumented.count} checked)" (c.undocumented.missing == [] && c.undocumented.count > 40))
  ];
in {
  results = cases;
  inherit failures;
  libVersion = lib.version;
  nixVersion = builtins.nixVersion;
}
