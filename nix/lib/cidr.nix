# IP addresses and CIDRs in pure Nix (builtins only, Nix >= 2.8), for the
# assertions of the host-local module: parse, canonical form, containment,
# and the range checks host-local runs at load time (ranges, range sets,
# overlap), with messages that say what to change.
#
# An address is { family = 4 | 6; groups = [ int ... ]; }: 16-bit groups,
# 2 for IPv4 and 8 for IPv6, so one set of helpers covers both families.
let
  inherit
    (builtins)
    any
    concatLists
    concatStringsSep
    div
    elemAt
    filter
    foldl'
    genList
    head
    length
    match
    split
    stringLength
    substring
    tail
    ;

  pow2 = n:
    if n <= 0
    then 1
    else 2 * pow2 (n - 1);

  # Decimal string without leading zeros (as Go's parser wants) -> int, or null.
  decimal = s:
    if match "0|[1-9][0-9]{0,9}" s == null
    then null
    else builtins.fromJSON s;

  hexDigits = {
    "0" = 0;
    "1" = 1;
    "2" = 2;
    "3" = 3;
    "4" = 4;
    "5" = 5;
    "6" = 6;
    "7" = 7;
    "8" = 8;
    "9" = 9;
    "a" = 10;
    "b" = 11;
    "c" = 12;
    "d" = 13;
    "e" = 14;
    "f" = 15;
    "A" = 10;
    "B" = 11;
    "C" = 12;
    "D" = 13;
    "E" = 14;
    "F" = 15;
  };

  # 1 to 4 hex digits -> int, or null.
  hexGroup = s:
    if match "[0-9a-fA-F]{1,4}" s == null
    then null
    else
      foldl' (acc: i: acc * 16 + hexDigits.${substring i 1 s}) 0
      (genList (i: i) (stringLength s));

  toHex = n: let
    digits = "0123456789abcdef";
    go = n:
      if n < 16
      then substring n 1 digits
      else go (div n 16) + substring (n - 16 * div n 16) 1 digits;
  in
    go n;

  # Non-string parts of builtins.split are the captures: drop them.
  splitOn = sep: s: filter builtins.isString (split sep s);

  # "a.b.c.d" -> [ hi lo ] or null.
  parseV4Groups = s: let
    m = match "([0-9]+)\\.([0-9]+)\\.([0-9]+)\\.([0-9]+)" s;
    octets =
      if m == null
      then null
      else map decimal m;
  in
    if octets == null || any (o: o == null || o > 255) octets
    then null
    else [
      (elemAt octets 0 * 256 + elemAt octets 1)
      (elemAt octets 2 * 256 + elemAt octets 3)
    ];

  # A ':'-separated run of groups (the last may be a dotted IPv4) -> ints or null.
  parseV6Run = s:
    if s == ""
    then []
    else let
      parts = splitOn ":" s;
      n = length parts;
      lastPart = elemAt parts (n - 1);
      v4 =
        if match ".*\\..*" lastPart != null
        then parseV4Groups lastPart
        else null;
      hexParts =
        if v4 != null
        then genList (i: elemAt parts i) (n - 1)
        else parts;
      groups = map hexGroup hexParts;
    in
      if (match ".*\\..*" lastPart != null && v4 == null) || any (g: g == null) groups
      then null
      else
        groups
        ++ (
          if v4 == null
          then []
          else v4
        );

  parseV6Groups = s: let
    halves = splitOn "::" s;
    nh = length halves;
    left = parseV6Run (head halves);
    right = parseV6Run (elemAt halves 1);
  in
    if match ".*:::.*" s != null || nh > 2
    then null
    else if nh == 1
    then
      if left != null && length left == 8
      then left
      else null
    else if left == null || right == null || length left + length right > 7
    then null
    else left ++ genList (_: 0) (8 - length left - length right) ++ right;

  # "1.2.3.4" or "2001:db8::1" -> address, or null when malformed.
  parseIp = s:
    if !(builtins.isString s)
    then null
    else if match "[0-9.]+" s != null
    then let
      g = parseV4Groups s;
    in
      if g == null
      then null
      else {
        family = 4;
        groups = g;
      }
    else if match "[0-9a-fA-F:.]+" s != null && match ".*:.*" s != null
    then let
      g = parseV6Groups s;
    in
      if g == null
      then null
      else {
        family = 6;
        groups = g;
      }
    else null;

  bitsOf = family:
    if family == 4
    then 32
    else 128;

  # "10.1.0.0/16" -> { family; groups; prefix; } (groups as written), or null.
  parseCidr = s: let
    m =
      if builtins.isString s
      then match "([^/]+)/([0-9]+)" s
      else null;
    ip =
      if m == null
      then null
      else parseIp (head m);
    prefix =
      if m == null
      then null
      else decimal (elemAt m 1);
  in
    if ip == null || prefix == null || prefix > bitsOf ip.family
    then null
    else ip // {inherit prefix;};

  # Bits of group i (0-based) covered by a prefix of length p.
  kept = p: i: let
    k = p - 16 * i;
  in
    if k <= 0
    then 0
    else if k >= 16
    then 16
    else k;

  # The network address and the last address of a CIDR (as addresses).
  network = c:
    c
    // {
      groups =
        genList (
          i: let
            unit = pow2 (16 - kept c.prefix i);
          in
            div (elemAt c.groups i) unit * unit
        )
        (length c.groups);
    };
  lastAddr = c:
    c
    // {
      groups =
        genList (
          i: let
            unit = pow2 (16 - kept c.prefix i);
          in
            div (elemAt c.groups i) unit * unit + unit - 1
        )
        (length c.groups);
    };

  # Adds d (-1 or +1) to the last group; callers use it only where no carry
  # can happen (network+1 and broadcast-1 of a prefix of at most bits-2).
  step = d: a: {
    inherit (a) family;
    groups = genList (i: elemAt a.groups i) (length a.groups - 1) ++ [(elemAt a.groups (length a.groups - 1) + d)];
  };

  # -1, 0 or 1.
  compare = a: b: let
    go = xs: ys:
      if xs == []
      then 0
      else if head xs < head ys
      then -1
      else if head xs > head ys
      then 1
      else go (tail xs) (tail ys);
  in
    go a.groups b.groups;

  contains = c: a:
    a.family == c.family && compare (network c) a <= 0 && compare a (lastAddr c) <= 0;

  # Canonical text: dotted quad, or lowercase IPv6 with the longest run
  # (two or more) of zero groups written as "::" (RFC 5952).
  format = a:
    if a.family == 4
    then let
      g0 = elemAt a.groups 0;
      g1 = elemAt a.groups 1;
    in
      concatStringsSep "." (map toString [(div g0 256) (g0 - 256 * div g0 256) (div g1 256) (g1 - 256 * div g1 256)])
    else let
      gs = a.groups;
      # Length of the zero run starting at i.
      runAt = i:
        if i >= 8 || elemAt gs i != 0
        then 0
        else 1 + runAt (i + 1);
      best =
        foldl' (
          acc: i: let
            r = runAt i;
          in
            if r > acc.len
            then {
              start = i;
              len = r;
            }
            else acc
        ) {
          start = -1;
          len = 1;
        } (genList (i: i) 8);
      hexs = from: to: map toHex (genList (i: elemAt gs (from + i)) (to - from));
    in
      if best.start < 0
      then concatStringsSep ":" (hexs 0 8)
      else
        concatStringsSep ":" (hexs 0 best.start)
        + "::"
        + concatStringsSep ":" (hexs (best.start + best.len) 8);

  formatCidr = c: "${format c}/${toString c.prefix}";

  # The problems host-local would report for an `ipam.ranges` value (a list
  # of range sets, each a list of { subnet; rangeStart?; rangeEnd?; gateway?; }),
  # as messages prefixed with `where` (the option path). [] when it is valid.
  rangeSetProblems = {
    where,
    ranges,
    cniVersion ? "1.0.0",
  }: let
    # One range -> { errors; family; start; end; text; }
    checkRange = si: ri: r: let
      at = "${where}: range set ${toString si}, range ${toString ri}";
      opt = name:
        if r ? ${name} && r.${name} != null
        then r.${name}
        else null;
      subnetText = opt "subnet";
      c = parseCidr subnetText;
      bits =
        if c == null
        then 0
        else bitsOf c.family;
      net =
        if c == null
        then null
        else network c;
      isNetwork = c != null && compare net c == 0;
      ipOpt = name: let
        t = opt name;
      in
        if t == null
        then null
        else parseIp t;
      start0 = ipOpt "rangeStart";
      end0 = ipOpt "rangeEnd";
      start =
        if start0 != null
        then start0
        else step 1 net;
      end =
        if end0 != null
        then end0
        else if c.family == 4
        then step (-1) (lastAddr c)
        else lastAddr c;
      badIp = name: let
        t = opt name;
        ip = ipOpt name;
      in
        if t == null
        then []
        else if ip == null
        then ["${at}: ${name} \"${toString t}\" is not an IP address"]
        else if ip.family != c.family
        then ["${at}: ${name} ${t} is IPv${toString ip.family} but subnet ${subnetText} is IPv${toString c.family}"]
        else [];
      outside = name: let
        ip = ipOpt name;
      in
        if ip != null && ip.family == c.family && !(contains c ip)
        then ["${at}: ${name} ${opt name} is not in subnet ${formatCidr (network c)}"]
        else [];
      ipErrors = concatLists (map badIp ["rangeStart" "rangeEnd" "gateway"]);
      errors =
        if subnetText == null
        then ["${at}: subnet is missing (every range needs a CIDR such as \"10.244.1.0/24\")"]
        else if c == null
        then ["${at}: subnet \"${toString subnetText}\" is not a valid CIDR (expected an address and a prefix length such as \"10.244.1.0/24\" or \"fd00:10:244:1::/64\")"]
        else if c.prefix > bits - 2
        then ["${at}: subnet ${subnetText} is too small to allocate from (host-local needs a prefix of at most /${toString (bits - 2)})"]
        else if !isNetwork
        then ["${at}: subnet ${subnetText} has host bits set; the network address for a /${toString c.prefix} is ${formatCidr net}"]
        else if ipErrors != []
        then ipErrors
        else let
          out = outside "rangeStart" ++ outside "rangeEnd";
        in
          if out != []
          then out
          else if compare start end > 0
          then ["${at}: rangeStart ${format start} is after rangeEnd ${format end}"]
          else [];
    in {
      inherit errors;
      family =
        if c == null
        then 0
        else c.family;
      inherit start end;
      text = "${format start}-${format end}";
    };

    overlaps = a: b: a.family == b.family && compare a.start b.end <= 0 && compare b.start a.end <= 0;

    pairs = n: concatLists (genList (i: genList (j: [i (i + 1 + j)]) (n - 1 - i)) n);

    sets = genList (si: let
      set = elemAt ranges si;
      checked = genList (ri: checkRange si ri (elemAt set ri)) (length set);
      rangeErrors = concatLists (map (x: x.errors) checked);
      families = map (x: x.family) checked;
      within = map (
        p: let
          a = elemAt checked (head p);
          b = elemAt checked (elemAt p 1);
        in "${where}: range set ${toString si}: ranges ${toString (head p)} (${a.text}) and ${toString (elemAt p 1)} (${b.text}) overlap; ranges in one set are alternative pools and must be disjoint"
      ) (filter (p: overlaps (elemAt checked (head p)) (elemAt checked (elemAt p 1))) (pairs (length checked)));
      errors =
        if set == []
        then ["${where}: range set ${toString si} is empty (each range set needs at least one { subnet = ...; })"]
        else if rangeErrors != []
        then rangeErrors
        else if any (f: f != head families) families
        then ["${where}: range set ${toString si} mixes IPv4 and IPv6 ranges; put each family in its own range set"]
        else within;
    in {
      inherit errors checked;
      family =
        if families == []
        then 0
        else head families;
    }) (length ranges);

    setErrors = concatLists (map (s: s.errors) sets);

    between = map (p: "${where}: range sets ${toString (head p)} and ${toString (elemAt p 1)} overlap; each range set yields one address per pod, so their ranges must be disjoint") (
      filter (
        p: let
          a = elemAt sets (head p);
          b = elemAt sets (elemAt p 1);
        in
          any (x: any (overlaps x) b.checked) a.checked
      ) (pairs (length sets))
    );

    oldVersion = builtins.compareVersions cniVersion "0.3.0" < 0;
    perFamily = f: length (filter (s: s.family == f) sets);
    versionErrors =
      if oldVersion && (perFamily 4 > 1 || perFamily 6 > 1)
      then ["${where}: cniVersion ${cniVersion} allows at most one IPv4 and one IPv6 range set; use cniVersion 0.3.0 or later"]
      else [];
  in
    if ranges == []
    then ["${where}: no range set given (set at least one, e.g. [ [ { subnet = \"10.244.1.0/24\"; } ] ])"]
    else if setErrors != []
    then setErrors
    else between ++ versionErrors;

  # Problems of an `ipam.routes` value ([{ dst; gw?; }]), prefixed with `where`.
  routeProblems = {
    where,
    routes,
  }:
    concatLists (genList (i: let
      r = elemAt routes i;
      at = "${where}: route ${toString i}";
      dst = r.dst or null;
      gw = r.gw or null;
      c = parseCidr dst;
      g = parseIp gw;
    in
      (
        if c == null
        then ["${at}: dst \"${toString dst}\" is not a valid CIDR (e.g. \"0.0.0.0/0\" or \"::/0\")"]
        else []
      )
      ++ (
        if gw == null
        then []
        else if g == null
        then ["${at}: gw \"${toString gw}\" is not an IP address"]
        else if c != null && g.family != c.family
        then ["${at}: gw ${gw} and dst ${dst} are of different address families"]
        else []
      )) (length routes));
in {
  inherit parseIp parseCidr network lastAddr contains compare format formatCidr rangeSetProblems routeProblems;

  # True when the CIDR strings a and b share an address (false if either is malformed).
  cidrsOverlap = a: b: let
    x = parseCidr a;
    y = parseCidr b;
  in
    x
    != null
    && y != null
    && x.family == y.family
    && compare (network x) (lastAddr y) <= 0
    && compare (network y) (lastAddr x) <= 0;

  # True when every address of CIDR string `inner` is in CIDR string
  # `outer` (false if either is malformed or the families differ).
  cidrWithin = inner: outer: let
    x = parseCidr inner;
    y = parseCidr outer;
  in
    x != null && y != null && x.family == y.family && y.prefix <= x.prefix && contains y (network x);

  # 4, 6, or null for a malformed CIDR string.
  cidrFamily = s: let
    c = parseCidr s;
  in
    if c == null
    then null
    else c.family;

  isCidr = s: parseCidr s != null;
  isIp = s: parseIp s != null;
}
