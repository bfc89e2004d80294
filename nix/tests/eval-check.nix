# The module evaluation tests (eval.nix) as a flake check: builds when
# every expectation holds, fails listing the ones that do not.
{
  lib,
  runCommand,
}: let
  r = import ./eval.nix {inherit lib;};
in
  if r.failures == []
  then
    runCommand "k8s-shims-module-eval" {} ''
      echo ${lib.escapeShellArg (builtins.toJSON r.results)} > $out
    ''
  else throw "k8s-shims module evaluation failed: ${lib.concatStringsSep "; " r.failures}"
