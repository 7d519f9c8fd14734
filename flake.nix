# lectic-nix-sandbox: the image every sandboxed tool call runs in, and the
# program itself.
#
#   nix build .#containerImage   the image (streamLayeredImage: a script that
#                                writes a docker-archive; the sandbox runs it)
#   nix build                    the static binary
#   nix run . -- --doctor        check this machine
#
# The sandbox builds `path:<this dir>#containerImage` itself, with
# --no-write-lock-file, and passes --nix-packages-file to this flake as
# LECTIC_NIX_SANDBOX_EXTRA_PKGS_FILE (with --impure).
#
# flake.lock pins nixpkgs, so every machine with this plugin builds the same
# image and adding a package never pulls a new nixpkgs. Move the pin with
# `nix flake update` (then rebuild, or pass --refresh to the sandbox).
{
  description = "Lectic nix-sandbox: rootless, warm, Nix-built sandbox for Lectic tool calls";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # NAR hash of `go mod vendor`. Print it with scripts/vendor-hash.sh,
      # update it with scripts/vendor-hash.sh --write; a test fails when it
      # is stale.
      vendorHash = "sha256-tECJv7nY5PYNjc9Wxy2LmZ5nGLJOFJLBcayK188bdy8=";

      # What every image contains.
      basePackages = pkgs: with pkgs; [
        bashInteractive
        coreutils
        findutils
        gnugrep
        gnused
        gawk
        git
        jq
        curl
        cacert
        util-linux
      ];

      # --nix-packages-file: a list of packages, an attrset with a
      # `packages` list, or a function of { pkgs, callPackage } returning
      # either. See packages.example.nix.
      extraPackages = pkgs:
        let
          file = builtins.getEnv "LECTIC_NIX_SANDBOX_EXTRA_PKGS_FILE";
          imported = import file;
          value =
            if builtins.isFunction imported
            then imported { inherit pkgs; inherit (pkgs) callPackage; }
            else imported;
        in
        if file == "" then [ ]
        else if builtins.isList value then value
        else if builtins.isAttrs value && value ? packages && builtins.isList value.packages then value.packages
        else throw "${file}: a packages file must be a list of packages, an attrset { packages = [ ... ]; }, or a function { pkgs, callPackage }: returning either";

      containerImage = pkgs:
        pkgs.dockerTools.streamLayeredImage {
          name = "lectic-nix-sandbox";
          tag = "latest";
          contents =
            basePackages pkgs
            ++ extraPackages pkgs
            ++ (with pkgs.dockerTools; [ usrBinEnv binSh caCertificates fakeNss ]);
          # Store paths get their own layers, so images that differ only in
          # the extra packages share the rest.
          maxLayers = 100;
          extraCommands = ''
            mkdir -m 1777 tmp
            mkdir -p var/tmp root
            chmod 1777 var/tmp
          '';
          config = {
            Env = [
              "PATH=/bin:/usr/bin"
              "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"
              "NIX_SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"
              "GIT_SSL_CAINFO=/etc/ssl/certs/ca-bundle.crt"
              "LANG=C.UTF-8"
            ];
            WorkingDir = "/";
            Cmd = [ "/bin/bash" ];
          };
        };

      # The program, fully static: it is bind-mounted into images that have
      # no libc. cgo stays on because runc's nsenter is C.
      #
      # go.mod asks for Go 1.26. The pinned nixpkgs (April 2026) has
      # go_1_26 (1.26.x, added as 1.26rc1 in December 2025) and its
      # buildGo126Module, while its default `go`/buildGoModule may still be
      # 1.25, which refuses the module. Name the version, not the default.
      sandbox = pkgs:
        pkgs.pkgsStatic.buildGo126Module {
          pname = "lectic-nix-sandbox";
          version = self.shortRev or self.dirtyShortRev or "dev";
          src = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions [
              ./go.mod
              ./go.sum
              ./flake.nix
              ./lectic.yaml
              ./packages.example.nix
              ./flake.lock
              (lib.fileset.fileFilter (file: file.hasExt "go") ./.)
            ];
          };
          inherit vendorHash;
          subPackages = [ "cmd/lectic-nix-sandbox" ];
          env.CGO_ENABLED = 1;
          tags = [ "netgo" "osusergo" ];
          ldflags = [ "-s" "-w" "-extldflags" "-static" ];
          # The tests need user namespaces, a nix daemon and an unprivileged
          # user; they run in CI (.ci/run), not in the build sandbox.
          doCheck = false;
          meta = {
            description = "Rootless sandbox for Lectic tool calls, with images built by Nix";
            mainProgram = "lectic-nix-sandbox";
            platforms = lib.platforms.linux;
          };
        };
    in
    {
      packages = forAllSystems (pkgs: {
        containerImage = containerImage pkgs;
        lectic-nix-sandbox = sandbox pkgs;
        default = sandbox pkgs;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${sandbox pkgs}/bin/lectic-nix-sandbox";
          meta.description = "Run a command in the lectic-nix-sandbox (try: nix run . -- --doctor)";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            go_1_26 # the toolchain go.mod asks for, as buildGo126Module above
            gnumake
            gcc
            nix
            jq
            zstd
            hyperfine
            bubblewrap
            podman
            # The fixture images are built from a static busybox; only the
            # `busybox` command itself, so its applets do not shadow
            # coreutils.
            (pkgs.runCommand "busybox-static-only" { } ''
              mkdir -p $out/bin
              ln -s ${pkgs.pkgsStatic.busybox}/bin/busybox $out/bin/busybox
            '')
          ];
        };
      });
    };
}
