# Extra packages for the sandbox image: pass this file (or your copy) with
#   sandbox: local:./lectic-nix-sandbox --nix-packages-file ./packages.nix
# The path is relative to the directory Lectic runs the tool in; an absolute
# path is safest. The sandbox rebuilds the image when this file changes
# (files it imports are not watched: pass --refresh after editing those).
#
# The file may take any of three shapes.
#
# 1) A function of { pkgs, callPackage } (pkgs is the flake's nixpkgs)
#    returning a list or an attrset as below. This is the usual shape:

{ pkgs, callPackage }:

{
  packages = with pkgs; [
    ripgrep
    fd
    python3

    # A local derivation, resolved relative to this file:
    # (callPackage ./nix/my-tool.nix { })
  ];
}

# 2) A plain list of derivations (without the function, bring your own
#    nixpkgs; `import <nixpkgs> { }` needs --nix-extra "-I nixpkgs=...",
#    and a pinned tarball works everywhere):
#
#   let pkgs = import (builtins.fetchTarball "https://github.com/NixOS/nixpkgs/archive/nixos-unstable.tar.gz") { };
#   in [ pkgs.ripgrep pkgs.fd ]
#
# 3) An attrset with a `packages` list:
#
#   let pkgs = import (builtins.fetchTarball "https://github.com/NixOS/nixpkgs/archive/nixos-unstable.tar.gz") { };
#   in { packages = [ pkgs.ripgrep pkgs.fd ]; }
