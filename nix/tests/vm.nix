# VM test (pkgs.testers.runNixOSTest): one node built from an example
# configuration; a pod sandbox started through CRI gets an address from
# host-local's range on the bridge, answers ping from the node, and its
# reservation is released when the sandbox is removed.
#
#   nix build .#checks.x86_64-linux.vm-containerd -L
#   nix build .#checks.x86_64-linux.vm-crio -L
{
  self,
  pkgs,
  runtime,
  example,
  subnetPrefix,
}: let
  # A tiny image for the sandbox ("pause") container, seeded by cri-adapter
  # (there is no registry in the VM).
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
  endpoint =
    if runtime == "containerd"
    then "unix:///run/containerd/containerd.sock"
    else "unix:///var/run/crio/crio.sock";
in {
  name = "k8s-shims-${runtime}";

  nodes.machine = {lib, ...}: {
    imports = [self.nixosModules.default example];
    virtualisation.memorySize = 2048;
    # One pause image for the runtime (sandbox_image / pause_image) and
    # cri-adapter seed.
    services.k8s.cri.pauseImage = {
      name = pauseRef;
      archive = pause;
    };
    # "" runs the image's own entrypoint.
    virtualisation.cri-o.settings.crio.image.pause_command = lib.mkIf (runtime == "cri-o") "";
    environment.systemPackages = [pkgs.cri-tools pkgs.jq pkgs.iproute2];
  };

  testScript = ''
    import json

    crictl = "crictl --runtime-endpoint ${endpoint} --image-endpoint ${endpoint}"

    machine.wait_for_unit("k8s-cri-adapter.service")
    machine.succeed(f"{crictl} inspecti ${pauseRef}")

    pod = machine.succeed(f"{crictl} runp ${sandbox}").strip()
    status = json.loads(machine.succeed(f"{crictl} inspectp -o json {pod}"))
    ip = status["status"]["network"]["ip"]
    print(f"pod {pod} got {ip}")
    assert ip.startswith("${subnetPrefix}"), f"pod address {ip} is not in host-local's range ${subnetPrefix}*"

    # The bridge carries the gateway, the pod answers through it.
    machine.succeed("ip -j addr show cni0 | jq -e '.[0].addr_info[] | select(.local == \"${subnetPrefix}1\")'")
    machine.succeed(f"ping -c1 -W5 {ip}")
    machine.succeed(f"test -e /run/cni/networks/k8s-pod-network/{ip}")

    machine.succeed(f"{crictl} stopp {pod}")
    machine.succeed(f"{crictl} rmp {pod}")
    machine.fail(f"test -e /run/cni/networks/k8s-pod-network/{ip}")
  '';
}
