# The flake's outputs, evaluated with a stand-in nixpkgs (nixpkgs' lib plus
# fake packages) so the wiring is checked without nixpkgs or a network:
# output names, the package expressions' arguments, the exported modules
# (each alone, and several together: included once), the overlay.
#
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/flake-eval.nix \
#     --arg lib 'import <nixpkgs lib dir>'
{lib}: let
  fake = import ./fake-pkgs.nix {inherit lib;};
  inherit (fake) drv;
  systems = ["x86_64-linux" "aarch64-linux"];

  # What buildRustPackage was called with, as a fake derivation.
  rustPlatform.buildRustPackage = args: drv args.pname // {inherit args;};
  pkgsFor = system: let
    self =
      fake
      // {
        inherit lib rustPlatform system;
        protobuf = drv "protobuf-29.3";
        stdenv.hostPlatform.system = system;
        symlinkJoin = args: drv args.name // {inherit (args) paths;};
        callPackage = f: overrides: let
          fn =
            if builtins.isFunction f
            then f
            else import f;
        in
          fn (builtins.intersectAttrs (builtins.functionArgs fn) self // overrides);
        testers.runNixOSTest = test: drv "vm-test-${test.name}" // {inherit test;};
        writeText = name: text: drv name // {inherit text;};
        dockerTools.buildImage = args: drv "image-${args.name}";
        runCommand = name: _: _: drv name;
        mkShell = args: drv "shell" // {inherit args;};
        alejandra = drv "alejandra";
      };
  in
    self;

  nixpkgs = {
    lib =
      lib
      // {
        nixosSystem = args: {
          inherit args;
          config.system.build.toplevel = drv "toplevel";
        };
      };
    legacyPackages = lib.genAttrs systems pkgsFor;
  };
  flake = import ../../flake.nix;
  outputs = flake.outputs {
    self = outputs;
    inherit nixpkgs;
  };
  pkgs = pkgsFor "x86_64-linux";
  ps = outputs.packages.x86_64-linux;

  evalWith = modules: config:
    (lib.evalModules {
      modules = [./stubs.nix {inherit config;}] ++ modules;
      specialArgs = {inherit pkgs;};
    })
    .config;
  node = {
    services.k8s.cni.host-local = {
      enable = true;
      ranges = [[{subnet = "10.244.1.0/24";}]];
    };
    services.k8s.cni.bridge.enable = true;
    services.k8s.cri.enable = true;
  };
  # The flake's own modules: default, plus the single ones again (a user
  # may import both): everything must be declared once.
  m = outputs.nixosModules;
  together = evalWith [m.default m.cni-bridge m.cni-host-local m.cri-adapter m.kubelet] node;
  # Without the overlay's pkgs.k8s-shims the flake's modules build ours
  # with the node's pkgs.
  noOverlay =
    (lib.evalModules {
      modules = [./stubs.nix {config = node;} m.default];
      specialArgs.pkgs = removeAttrs pkgs ["k8s-shims"];
    })
    .config;
  overlaid = outputs.overlays.default pkgs pkgs;

  # The VM tests' node configurations, evaluated against the stand-ins (plus
  # the two NixOS options only the tests set): their assertions must pass.
  vmStubs = {
    options.environment.systemPackages = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [];
    };
    options.virtualisation.memorySize = lib.mkOption {
      type = lib.types.ints.positive;
      default = 1024;
    };
    options.networking.firewall.enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
    };
  };
  # What runNixOSTest passes as `nodes` (only what the tests read).
  vmNodes = {
    node1.networking.primaryIPAddress = "192.168.1.1";
    node2.networking.primaryIPAddress = "192.168.1.2";
  };
  failedIn = module: let
    cfg =
      (lib.evalModules {
        modules = [./stubs.nix vmStubs module];
        specialArgs = {
          inherit pkgs;
          nodes = vmNodes;
        };
      })
      .config;
  in {
    failed = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
    routes = cfg.systemd.services.k8s-cni-routes.serviceConfig.ExecStart or [];
  };
  vmNodeAssertions =
    lib.genAttrs ["vm-containerd" "vm-crio"] (n: (failedIn outputs.checks.x86_64-linux.${n}.test.nodes.machine).failed)
    // lib.mapAttrs' (name: m: lib.nameValuePair "vm-host-gw-${name}" (failedIn m)) outputs.checks.x86_64-linux.vm-host-gw.test.nodes;
  src = ps.bridge.args.src;
  root = toString ../..;
  keep = rel: src.filter "${root}/${rel}" "regular";

  results = {
    outputs = builtins.attrNames outputs;
    packages = builtins.attrNames ps;
    nixosModules = builtins.attrNames m;
    nixosConfigurations = builtins.attrNames outputs.nixosConfigurations;
    checks = builtins.attrNames outputs.checks.x86_64-linux;
    cniArgs = {inherit (ps.cni-plugins.args) pname version buildType cargoBuildFlags doCheck postInstall;};
    # Each plugin attribute: the multi-call derivation itself, its own mainProgram.
    pluginAttrs = lib.genAttrs ["bridge" "host-local" "loopback" "portmap"] (p: {
      same = ps.${p}.outPath == ps.cni-plugins.outPath && ps.${p}.args == ps.cni-plugins.args;
      inherit (ps.${p}.meta) mainProgram;
    });
    criAdapterArgs = {inherit (ps.cri-adapter.args) buildType cargoBuildFlags PROTOC postInstall;};
    allPaths = map (p: p.name) ps.default.paths;
    lockFile = toString ps.bridge.args.cargoLock.lockFile;
    srcKeeps = lib.genAttrs ["Cargo.toml" "Cargo.lock" "cni-bridge/src/main.rs" "cri-adapter/Cargo.toml" "integration/src/lib.rs" "target/debug/bridge" "nix/modules/cni.nix" "flake.nix" "README.md" "scripts/test"] keep;
    togetherAssertions = map (a: a.message) (lib.filter (a: !a.assertion) together.assertions);
    togetherBridge = together.services.k8s.cni.pluginPaths.bridge;
    noOverlayBridge = noOverlay.services.k8s.cni.pluginPaths.bridge;
    overlay = builtins.attrNames overlaid.k8s-shims;
    vmTests = map (n: outputs.checks.x86_64-linux.${n}.test.name) ["vm-containerd" "vm-crio" "vm-host-gw"];
    inherit vmNodeAssertions;
    examples = lib.mapAttrs (_: s: builtins.length s.args.modules) outputs.nixosConfigurations;
    formatter = outputs.formatter.x86_64-linux.name;
  };

  expect = name: cond:
    if cond
    then []
    else [name];
  r = results;
  failures = lib.concatLists [
    (expect "outputs" (r.outputs == ["checks" "devShells" "formatter" "nixosConfigurations" "nixosModules" "overlays" "packages"]))
    (expect "packages" (r.packages == ["bridge" "cni-plugins" "cri-adapter" "default" "host-local" "loopback" "portmap"]))
    (expect "nixosModules" (r.nixosModules == ["cni-bridge" "cni-host-local" "cri-adapter" "default" "kubelet"]))
    (expect "nixosConfigurations" (r.nixosConfigurations == ["containerd-node" "crio-node"]))
    (expect "checks" (lib.all (c: builtins.elem c r.checks) ["cni-plugins" "cri-adapter" "module-eval" "vm-containerd" "vm-crio" "vm-host-gw" "example-containerd-node" "example-crio-node"]))
    (expect "plugins package: the multi-call executable, cni profile, no sandbox tests" (r.cniArgs.buildType == "cni" && r.cniArgs.cargoBuildFlags == ["-p" "cni-plugins" "--bin" "k8s-shims-cni"] && !r.cniArgs.doCheck))
    (expect "plugins package: a link to it under each plugin's name" (lib.all (p: lib.hasInfix "ln -s k8s-shims-cni $out/bin/${p}\n" r.cniArgs.postInstall) ["bridge" "host-local" "loopback" "portmap"]))
    (expect "plugin packages: the multi-call derivation, each its own mainProgram" (r.pluginAttrs
      == lib.genAttrs ["bridge" "host-local" "loopback" "portmap"] (p: {
        same = true;
        mainProgram = p;
      })))
    (expect "cri-adapter package: release, protoc" (r.criAdapterArgs.buildType == "release" && r.criAdapterArgs.cargoBuildFlags == ["-p" "cri-adapter" "--bin" "cri-adapter"] && lib.hasSuffix "-protobuf-29.3/bin/protoc" r.criAdapterArgs.PROTOC))
    (expect "cri-adapter package: the runc wrapper is a link named cri-adapter-runc" (lib.hasInfix "ln -s cri-adapter $out/bin/cri-adapter-runc" r.criAdapterArgs.postInstall))
    (expect "default package: every binary" (r.allPaths == ["k8s-shims-cni-plugins" "k8s-shims-cri-adapter"]))
    (expect "version from the workspace" (r.cniArgs.version == (builtins.fromTOML (builtins.readFile ../../Cargo.toml)).workspace.package.version))
    (expect "lock file" (lib.hasSuffix "/Cargo.lock" r.lockFile))
    (expect "source filter: the workspace's crates only" (
      r.srcKeeps
      == {
        "Cargo.toml" = true;
        "Cargo.lock" = true;
        "cni-bridge/src/main.rs" = true;
        "cri-adapter/Cargo.toml" = true;
        "integration/src/lib.rs" = true;
        "target/debug/bridge" = false;
        "nix/modules/cni.nix" = false;
        "flake.nix" = false;
        "README.md" = false;
        "scripts/test" = false;
      }
    ))
    (expect "modules imported together: declared once, assertions pass" (r.togetherAssertions == []))
    (expect "modules with the overlay: pkgs.k8s-shims" (r.togetherBridge == "${fake.k8s-shims.bridge}/bin/bridge"))
    (expect "modules without the overlay: ours built with the node's pkgs" (r.noOverlayBridge == "${ps.bridge}/bin/bridge"))
    (expect "overlay" (lib.all (n: builtins.elem n r.overlay) ["all" "bridge" "cni-plugins" "cri-adapter" "host-local" "loopback" "portmap"]))
    (expect "vm tests" (r.vmTests == ["k8s-shims-containerd" "k8s-shims-cri-o" "k8s-shims-host-gw"]))
    (expect "vm test nodes evaluate with no failed assertion; host-gw nodes route to each other" (r.vmNodeAssertions
      == {
        vm-containerd = [];
        vm-crio = [];
        vm-host-gw-node1 = {
          failed = [];
          routes = ["${fake.iproute2}/bin/ip route replace 10.244.2.0/24 via 192.168.1.2"];
        };
        vm-host-gw-node2 = {
          failed = [];
          routes = ["${fake.iproute2}/bin/ip route replace 10.244.1.0/24 via 192.168.1.1"];
        };
      }))
    (expect "examples" (r.examples
      == {
        containerd-node = 3;
        crio-node = 3;
      }))
    (expect "formatter" (r.formatter == "alejandra"))
  ];
in {
  inherit results failures;
}
