# Option types shared by the modules.
{
  lib,
  pkgs,
}: let
  inherit (lib) types;
in {
  # A JSON object (RFC 42): the freeform type is pkgs.formats.json's, so
  # definitions merge like nixpkgs' `settings` (attribute sets key by key,
  # lists concatenated) instead of clashing.
  jsonObject = types.submodule {freeformType = (pkgs.formats.json {}).type;};

  # An absolute path on the node (a string, never copied to the store).
  # lib.types.pathWith is in nixpkgs 25.05 and later; older libs get
  # types.path (absolute, but a path literal would be copied).
  absolutePath =
    if types ? pathWith
    then
      types.pathWith {
        absolute = true;
        inStore = false;
      }
    else types.path;
}
