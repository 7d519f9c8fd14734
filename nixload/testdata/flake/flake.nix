# Offline fixture for the nixload tests: no inputs, no nixpkgs. The tests copy
# this directory and put a static busybox beside it; every derivation is
# built by that busybox. The image is a docker-archive with one base layer
# (busybox) and one layer per extra package, so the tests can see the
# packages file reach the image.
{
  description = "lectic-nix-sandbox test fixture";

  outputs = { self }:
    let
      forSystem = system:
        let
          # The store path's basename must be "busybox" for busybox to treat its
          # first argument as the applet, hence a path inside the flake source.
          busybox = "${self}/busybox";

          run = name: script: derivation {
            inherit name system;
            builder = busybox;
            args = [ "sh" "-euc" script ];
            PATH = "/no-path";
          };

          # Tiny stand-ins for nixpkgs packages: each puts one script in bin/.
          tool = name: run name ''
            bb=${busybox}
            $bb mkdir -p $out/bin
            $bb printf '#!/bin/sh\necho ${name} from the fixture\n' > $out/bin/${name}
            $bb chmod 755 $out/bin/${name}
          '';

          pkgs = {
            hello = tool "hello";
            cowsay = tool "cowsay";
          };
          callPackage = f: args: f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);

          extraFile = builtins.getEnv "LECTIC_NIX_SANDBOX_EXTRA_PKGS_FILE";
          normalize = v:
            if builtins.isList v then v
            else if builtins.isAttrs v && v ? packages && builtins.isList v.packages then v.packages
            else throw "extra packages file must evaluate to a list, or an attrset with a 'packages' list";
          extra =
            if extraFile == "" then [ ]
            else
              let imported = import extraFile;
              in normalize (if builtins.isFunction imported then imported { inherit pkgs callPackage; } else imported);

          image = run "fixture-image.tar" ''
            bb=${busybox}
            w=$TMPDIR/work
            $bb mkdir -p $w/base/bin $w/base/tmp $w/out
            $bb cp ${busybox} $w/base/bin/busybox
            $bb ln -s busybox $w/base/bin/sh
            $bb chmod 1777 $w/base/tmp
            n=0
            layers=""
            diffs=""
            addlayer() {
              n=$((n+1))
              $bb tar -cf $w/out/layer$n.tar -C "$1" .
              sum=$($bb sha256sum $w/out/layer$n.tar | $bb cut -d' ' -f1)
              $bb mkdir -p $w/out/$sum
              $bb mv $w/out/layer$n.tar $w/out/$sum/layer.tar
              layers="$layers\"$sum/layer.tar\","
              diffs="$diffs\"sha256:$sum\","
            }
            addlayer $w/base
            for p in ${builtins.concatStringsSep " " (map toString extra)}; do
              addlayer $p
            done
            layers=''${layers%,}
            diffs=''${diffs%,}
            $bb printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin","FIXTURE=1"],"WorkingDir":"/","Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diffs" > $w/out/config.json
            csum=$($bb sha256sum $w/out/config.json | $bb cut -d' ' -f1)
            $bb mv $w/out/config.json $w/out/$csum.json
            $bb printf '[{"Config":"%s.json","RepoTags":["fixture:latest"],"Layers":[%s]}]' "$csum" "$layers" > $w/out/manifest.json
            cd $w/out
            $bb tar -cf $out *
          '';

          # The shape of streamLayeredImage: an executable that writes the
          # docker-archive to stdout.
          stream = run "fixture-stream" ''
            bb=${busybox}
            $bb printf '#!%s sh\nexec %s cat %s\n' ${busybox} ${busybox} ${image} > $out
            $bb chmod 555 $out
          '';
        in
        pkgs // { containerImage = image; streamImage = stream; default = image; };
    in
    {
      packages = {
        x86_64-linux = forSystem "x86_64-linux";
        aarch64-linux = forSystem "aarch64-linux";
      };
    };
}
