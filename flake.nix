{
  description = "k8s-shims: Kubernetes node components in Rust (CNI host-local, bridge, loopback and portmap, a CRI adapter) with one NixOS module each";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = {
    self,
    nixpkgs,
  }: let
    inherit (nixpkgs) lib;
    systems = ["x86_64-linux" "aarch64-linux"];
    forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    ourPackages = pkgs: pkgs.callPackage ./nix/packages.nix {};

    # Sets services.k8s.packages to our builds (with the node's own pkgs, or
    # pkgs.k8s-shims when overlays.default is applied). Keyed, so importing
    # several of our modules includes it once.
    packagesModule = {
      lib,
      pkgs,
      ...
    }: {
      key = "k8s-shims:flake-packages";
      config.services.k8s.packages = let
        ps = pkgs.k8s-shims or (ourPackages pkgs);
      in {
        host-local = lib.mkDefault ps.host-local;
        bridge = lib.mkDefault ps.bridge;
        loopback = lib.mkDefault ps.loopback;
        portmap = lib.mkDefault ps.portmap;
        cri-adapter = lib.mkDefault ps.cri-adapter;
      };
    };
    # Modules are exported as values (Nix 2.8's flake check rejects a path).
    module = m: {imports = [m packagesModule];};

    examples = {
      containerd-node = ./nix/examples/containerd-node.nix;
      crio-node = ./nix/examples/crio-node.nix;
    };
  in {
    packages = forAllSystems (pkgs: let
      ps = ourPackages pkgs;
    in {
      inherit (ps) cni-plugins host-local bridge loopback portmap cri-adapter;
      default = ps.all;
    });

    # `nix flake check` wants the arguments named final and prev.
    overlays.default = final:
    # deadnix: skip
    prev: {k8s-shims = final.callPackage ./nix/packages.nix {};};

    nixosModules = {
      cni-host-local = module (import ./nix/modules/cni-host-local.nix);
      cni-bridge = module (import ./nix/modules/cni-bridge.nix);
      cri-adapter = module (import ./nix/modules/cri-adapter.nix);
      kubelet = module (import ./nix/modules/kubelet.nix);
      default = module (import ./nix/modules/default.nix);
    };

    # The example nodes, as systems that evaluate (container-style, no
    # boot loader or file systems): nixos-rebuild --flake .#containerd-node
    # shows what a node needs.
    nixosConfigurations = lib.mapAttrs (_: example:
      lib.nixosSystem {
        modules = [
          self.nixosModules.default
          example
          {
            nixpkgs.hostPlatform = "x86_64-linux";
            boot.isContainer = true;
            system.stateVersion = "25.05";
          }
        ];
      })
    examples;

    checks = forAllSystems (pkgs: let
      vm = runtime: example: subnetPrefix:
        pkgs.testers.runNixOSTest (import ./nix/tests/vm.nix {inherit self pkgs runtime example subnetPrefix;});
    in
      {
        inherit (self.packages.${pkgs.system}) cni-plugins cri-adapter;
        module-eval = pkgs.callPackage ./nix/tests/eval-check.nix {};
        vm-containerd = vm "containerd" examples.containerd-node "10.244.1.";
        vm-crio = vm "cri-o" examples.crio-node "10.244.2.";
        vm-host-gw = pkgs.testers.runNixOSTest (import ./nix/tests/vm-host-gw.nix {inherit self pkgs;});
      }
      // lib.optionalAttrs (pkgs.system == "x86_64-linux") (lib.mapAttrs' (name: sys: lib.nameValuePair "example-${name}" sys.config.system.build.toplevel) self.nixosConfigurations));

    formatter = forAllSystems (pkgs: pkgs.alejandra);

    devShells = forAllSystems (pkgs: {
      default = pkgs.mkShell {
        packages = with pkgs; [cargo rustc clippy rustfmt protobuf alejandra deadnix iproute2 iptables nftables iputils cni-plugins];
        PROTOC = "${pkgs.protobuf}/bin/protoc";
      };
    });
  };
}
