# The options reference of the README's NixOS section, generated from the
# modules' declarations (type, default, first sentence of the description):
#
#   nix-instantiate --eval --strict --json --store dummy:// nix/tests/options-doc.nix \
#     --arg lib 'import <nixpkgs lib dir>'
#
# scripts/nix-options-doc writes it into README.md; the module-evaluation
# test fails when the README's copy differs.
{lib}: let
  pkgs = import ./fake-pkgs.nix {inherit lib;};
  options =
    (lib.evalModules {
      modules = [./stubs.nix ../modules/default.nix];
      specialArgs = {inherit pkgs;};
    })
    .options;
  ours = lib.filter (o: lib.hasPrefix "services.k8s." o.name && o.visible && !(o.internal or false)) (lib.optionAttrSetToDocList options);

  oneLine = s: lib.concatStringsSep " " (lib.filter (w: w != "") (lib.splitString " " (builtins.replaceStrings ["\n" "|" "{option}"] [" " "\\|" ""] s)));
  firstSentence = s: let
    m = builtins.match "(([^.]|\\.[^ ])*\\.)( .*)?" s;
  in
    if m == null
    then s
    else builtins.head m;
  shown = v:
    if v == null
    then ""
    else if builtins.isAttrs v && v ? text
    then oneLine v.text
    else oneLine (builtins.toJSON v);
  clip = n: s:
    if builtins.stringLength s > n
    then builtins.substring 0 (n - 1) s + "…"
    else s;
  row = o: "| `${o.name}`${lib.optionalString o.readOnly " (read-only)"} | ${oneLine o.type} | ${
    if o ? default
    then "`${clip 60 (shown o.default)}`"
    else "(none)"
  } | ${firstSentence (oneLine (o.description or ""))} |";
in
  lib.concatStringsSep "\n" ([
      "| option | type | default | description |"
      "|---|---|---|---|"
    ]
    ++ map row ours)
  + "\n"
