# Pure renderers shared by the NixOS modules and the tests: plain data in,
# plain data out, builtins only (no nixpkgs lib), so Nix 2.8 can evaluate
# them with `nix-instantiate --eval --strict --json` and the integration
# tests can feed the result to the plugin binaries.
let
  cidr = import ./cidr.nix;

  inherit (builtins) attrNames concatMap elemAt filter foldl' genList isAttrs length listToAttrs removeAttrs;

  # Drops the attributes whose value is null (null means "leave the key out,
  # the plugin's own default applies").
  compact = attrs: removeAttrs attrs (filter (n: attrs.${n} == null) (attrNames attrs));

  # Recursive merge: attribute sets merge key by key, anything else in `b`
  # replaces `a` (the freeform `settings` escape hatches use it).
  merge = a: b:
    if isAttrs a && isAttrs b
    then
      foldl' (acc: n:
        acc
        // {
          ${n} =
            if acc ? ${n}
            then merge acc.${n} b.${n}
            else b.${n};
        })
      a (attrNames b)
    else b;

  # Where each runtime serves CRI by default.
  endpoints = {
    containerd = "unix:///run/containerd/containerd.sock";
    cri-o = "unix:///var/run/crio/crio.sock";
  };
in rec {
  inherit cidr compact merge endpoints;

  # Default store of host-local reservations: a tmpfs (see the module docs).
  defaultDataDir = "/run/cni/networks";

  # The `ipam` object of host-local.
  hostLocalIpam = {
    ranges,
    routes ? [],
    dataDir ? defaultDataDir,
    resolvConf ? null,
    settings ? {},
  }:
    merge (compact {
      type = "host-local";
      ranges = map (map compact) ranges;
      routes =
        if routes == []
        then null
        else map compact routes;
      inherit dataDir resolvConf;
    })
    settings;

  # The `bridge` plugin object. Every option is the plugin's key of the same
  # name (`enableDad` is the plugin's `enabledad`); null leaves it out.
  bridgePlugin = {
    bridge ? "cni0",
    isGateway ? null,
    isDefaultGateway ? null,
    forceAddress ? null,
    ipMasq ? null,
    ipMasqBackend ? null,
    mtu ? null,
    hairpinMode ? null,
    promiscMode ? null,
    vlan ? null,
    vlanTrunk ? null,
    preserveDefaultVlan ? null,
    enableDad ? null,
    macspoofchk ? null,
    disableContainerInterface ? null,
    portIsolation ? null,
    ipam ? {},
    settings ? {},
  }:
    merge (compact {
      type = "bridge";
      inherit bridge isGateway isDefaultGateway forceAddress ipMasq ipMasqBackend mtu hairpinMode promiscMode vlan;
      inherit preserveDefaultVlan macspoofchk disableContainerInterface portIsolation;
      vlanTrunk =
        if vlanTrunk == null
        then null
        else map compact vlanTrunk;
      enabledad = enableDad;
      inherit ipam;
    })
    settings;

  # The `portmap` chained plugin (hostPort support for pods).
  portmapPlugin = {settings ? {}}:
    merge {
      type = "portmap";
      capabilities.portMappings = true;
    }
    settings;

  # A network configuration list.
  conflist = {
    name,
    cniVersion ? "1.0.0",
    plugins,
    settings ? {},
  }:
    merge {inherit cniVersion name plugins;} settings;

  # File name of a conflist in the conf dir: runtimes take the first file in
  # lexical order, so the priority is zero-padded.
  conflistFileName = {
    priority,
    name,
  }: "${
    if priority < 10
    then "0"
    else ""
  }${toString priority}-${name}.conflist";

  # Every CNI `type` the runtime will exec for a conflist: each plugin's
  # type, its ipam type, and for a delegating plugin (flannel) the
  # delegate's type (flannel's default: bridge) and its ipam (host-local).
  conflistTypes = list:
    foldl' (acc: p:
      acc
      ++ [p.type]
      ++ (
        if p ? ipam && p.ipam ? type
        then [p.ipam.type]
        else []
      )
      ++ (
        if p.type == "flannel"
        then [(p.delegate.type or "bridge") (p.ipam.type or "host-local")]
        else []
      )) []
    list.plugins;

  # flannel mode: flannel's CNI plugin as the main plugin, delegating to
  # `delegate` (our bridge's object without `ipam`, and without `ipMasq` and
  # `mtu`, which flannel sets from its subnet.env) with an `ipam` base that
  # flannel completes (ranges from FLANNEL_SUBNET, a route to
  # FLANNEL_NETWORK).
  flannelPlugin = {
    delegate,
    ipam ? {type = "host-local";},
    subnetFile ? "/run/flannel/subnet.env",
    dataDir ? "/var/lib/cni/flannel",
  }: {
    type = "flannel";
    inherit subnetFile dataDir ipam;
    delegate = removeAttrs delegate ["ipam" "ipMasq" "mtu"];
  };

  # The bin dir: { type = "<package>/bin/<program>"; } from the per-type
  # choices { type = { package = "<store path>"; program = "<name>"; }; }.
  pluginLinks = choices:
    listToAttrs (map (t: {
      name = t;
      value = "${choices.${t}.package}/bin/${choices.${t}.program}";
    }) (attrNames choices));

  # containerd settings (a fragment of config.toml) pointing the CRI plugin
  # at our dirs and, when given, at the sandbox (pause) image. Config
  # version 2 (containerd 1.x; 2.x migrates it) or 3 (containerd 2.x
  # layout, where the CNI dirs and the sandbox image live in two plugins).
  containerdSettings = {
    binDir,
    confDir,
    configVersion ? 2,
    sandboxImage ? null,
    systemdCgroup ? false,
  }: let
    cni = {
      bin_dir = binDir;
      conf_dir = confDir;
    };
    runc =
      if systemdCgroup
      then {
        containerd.runtimes.runc = {
          runtime_type = "io.containerd.runc.v2";
          options.SystemdCgroup = true;
        };
      }
      else {};
  in
    if configVersion >= 3
    then {
      plugins =
        {"io.containerd.cri.v1.runtime" = {inherit cni;} // runc;}
        // (
          if sandboxImage == null
          then {}
          else {"io.containerd.cri.v1.images".pinned_images.sandbox = sandboxImage;}
        );
    }
    else {
      plugins."io.containerd.grpc.v1.cri" =
        compact {
          inherit cni;
          sandbox_image = sandboxImage;
        }
        // runc;
    };

  # Splits an image reference "repo[:tag]" into { name; tag; } (a digest
  # reference keeps its "@..." in the name, tag null).
  imageNameTag = ref: let
    lastSlash = builtins.match "(.*/)?([^/]*)" ref;
    prefix =
      if builtins.elemAt lastSlash 0 == null
      then ""
      else builtins.elemAt lastSlash 0;
    last = builtins.elemAt lastSlash 1;
    m = builtins.match "([^:@]+):([^:@]+)" last;
  in
    if builtins.match ".*@.*" ref != null
    then {
      name = ref;
      tag = null;
    }
    else if m == null
    then {
      name = ref;
      tag = "latest";
    }
    else {
      name = prefix + builtins.elemAt m 0;
      tag = builtins.elemAt m 1;
    };

  # CRI-O settings (a fragment of crio.conf) pointing it at our dirs.
  crioSettings = {
    binDir,
    confDir,
  }: {
    crio.network = {
      network_dir = confDir;
      plugin_dirs = [binDir];
    };
  };

  # The CRI settings for a runtime ("containerd" or "cri-o").
  runtimeSettings = {
    runtime,
    binDir,
    confDir,
    configVersion ? 2,
  }:
    if runtime == "containerd"
    then containerdSettings {inherit binDir confDir configVersion;}
    else if runtime == "cri-o"
    then crioSettings {inherit binDir confDir;}
    else throw "unknown runtime ${runtime} (expected \"containerd\" or \"cri-o\")";

  # Static host-gw routing: one route per other node, its pod CIDR via its
  # address on the shared link. { up; down; } are `ip` argv lists.
  hostGwRouteCommands = {
    ip,
    nodes,
  }: {
    up = map (n: [ip "route" "replace" n.podCIDR "via" n.address]) nodes;
    down = map (n: [ip "route" "del" n.podCIDR "via" n.address]) nodes;
  };

  # Problems of a host-gw node list ([{ name; address; podCIDR; }]), with
  # `own` the CIDRs this node hands out itself.
  hostGwProblems = {
    where,
    nodes,
    own ? [],
  }: let
    bad = n: msg: "${where}.${n.name}: ${msg}";
    one = n:
      if cidr.parseIp n.address == null
      then [(bad n "address \"${n.address}\" is not an IP address")]
      else if cidr.parseCidr n.podCIDR == null
      then [(bad n "podCIDR \"${n.podCIDR}\" is not a valid CIDR")]
      else if (cidr.parseIp n.address).family != cidr.cidrFamily n.podCIDR
      then [(bad n "address ${n.address} and podCIDR ${n.podCIDR} are of different IP families (a route needs a next hop of its own family)")]
      else
        filter (m: m != null) (map (o:
          if cidr.cidrsOverlap n.podCIDR o
          then bad n "podCIDR ${n.podCIDR} overlaps this node's own range ${o} (services.k8s.cni.host-local.ranges); list only the other nodes"
          else null)
        own);
    pairs = concatMap (i: map (j: [i j]) (genList (x: x) i)) (genList (x: x) (length nodes));
    clashes = concatMap (p: let
      a = elemAt nodes (elemAt p 1);
      b = elemAt nodes (elemAt p 0);
    in
      if cidr.cidrsOverlap a.podCIDR b.podCIDR
      then ["${where}: nodes ${a.name} and ${b.name} have overlapping podCIDRs (${a.podCIDR}, ${b.podCIDR})"]
      else [])
    pairs;
  in
    concatMap one nodes ++ clashes;

  # Command lines of the cri-adapter unit (argv lists).
  criAdapterCommands = {
    adapter,
    runtime,
    endpoint,
    timeout ? 120,
    network ? true,
    images ? [],
    serveSocket ? null,
  }: {
    # Without a conflist the runtime never reports NetworkReady.
    wait =
      [adapter "wait" "--runtime" runtime "--endpoint" endpoint "--timeout" (toString timeout)]
      ++ (
        if network
        then []
        else ["--no-network"]
      );
    seed =
      if images == []
      then null
      else [adapter "seed" "--runtime" runtime "--endpoint" endpoint] ++ map toString images;
    serve =
      if serveSocket == null
      then null
      else [adapter "serve" "--listen" serveSocket "--upstream" endpoint];
  };
}
