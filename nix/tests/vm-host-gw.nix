# VM test (pkgs.testers.runNixOSTest): two nodes on one link, each with
# containerd, our bridge and host-local (its own /24), and static host-gw
# routes to the other (services.k8s.cni.routes): a pod sandbox started on
# each node answers ping from the other node, through the routes.
#
#   nix build .#checks.x86_64-linux.vm-host-gw -L
{
  self,
  pkgs,
}: let
  inherit (pkgs) lib;
  pause = pkgs.dockerTools.buildImage {
    name = "k8s-shims-pause";
    tag = "test";
    copyToRoot = [pkgs.busybox];
    config.Entrypoint = ["/bin/sleep" "infinity"];
  };
  pauseRef = "docker.io/library/k8s-shims-pause:test";
  sandbox = pkgs.writeText "sandbox.json" (builtins.toJSON {
    metadata = {
      name = "probe";
      namespace = "default";
      uid = "k8s-shims-probe";
      attempt = 0;
    };
    log_directory = "/tmp/probe-logs";
    linux = {};
  });
  endpoint = "unix:///run/containerd/containerd.sock";
  names = ["node1" "node2"];
  node = n: let
    other = 3 - n;
  in
    {nodes, ...}: {
      imports = [self.nixosModules.default];
      virtualisation.memorySize = 2048;
      networking.firewall.enable = false;
      services.k8s.cni = {
        host-local = {
          enable = true;
          ranges = [[{subnet = "10.244.${toString n}.0/24";}]];
        };
        bridge.enable = true;
        routes."node${toString other}" = {
          address = nodes."node${toString other}".networking.primaryIPAddress;
          podCIDR = "10.244.${toString other}.0/24";
        };
      };
      services.k8s.cri = {
        enable = true;
        pauseImage = {
          name = pauseRef;
          archive = pause;
        };
      };
      environment.systemPackages = [pkgs.cri-tools pkgs.jq pkgs.iproute2];
    };
in {
  name = "k8s-shims-host-gw";

  nodes = lib.listToAttrs (lib.imap1 (n: name: lib.nameValuePair name (node n)) names);

  testScript = ''
    import json

    crictl = "crictl --runtime-endpoint ${endpoint} --image-endpoint ${endpoint}"
    start_all()

    ips = {}
    for m in [node1, node2]:
        m.wait_for_unit("k8s-cni-routes.service")
        m.wait_for_unit("k8s-cri-adapter.service")
        pod = m.succeed(f"{crictl} runp ${sandbox}").strip()
        status = json.loads(m.succeed(f"{crictl} inspectp -o json {pod}"))
        ips[m.name] = status["status"]["network"]["ip"]
        print(f"{m.name}: pod {pod} got {ips[m.name]}")

    assert ips["node1"].startswith("10.244.1."), ips
    assert ips["node2"].startswith("10.244.2."), ips
    node1.succeed("ip route show 10.244.2.0/24 | grep -q via")
    node1.succeed(f"ping -c1 -W5 {ips['node2']}")
    node2.succeed(f"ping -c1 -W5 {ips['node1']}")

    # Stopping the unit removes the route.
    node1.succeed("systemctl stop k8s-cni-routes.service")
    node1.fail("ip route show 10.244.2.0/24 | grep -q via")
  '';
}
