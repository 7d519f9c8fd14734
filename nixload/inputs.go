package nixload

import (
	"os"
	"path/filepath"
	"strings"
)

// Input is a file whose stat data a cached answer of this package depends
// on: while none of an answer's inputs changes (same type, size, times,
// inode), the same request resolves to the same image without this package
// being asked. Follow says whether the file is stat'ed through a final
// symlink (stat) or not (lstat). A path may be absent; that is an answer
// too (a nix that is not installed, a flake.nix that is not there).
type Input struct {
	Path   string
	Follow bool
	// Resolve: what matters is the path Path resolves to (a `result`
	// symlink's target), not its stat data.
	Resolve bool
}

// HostInputs are what the host image's fingerprint covers.
func HostInputs() []Input {
	var paths []string
	paths = append(paths, hostTop()...)
	for _, name := range hostEtc() {
		paths = append(paths, filepath.Join("/etc", name))
	}
	for _, d := range hostEtcLinkDirs() {
		paths = append(paths, filepath.Join("/etc", d))
	}
	in := make([]Input, 0, 2*len(paths))
	for _, p := range paths {
		in = append(in, Input{Path: p}, Input{Path: p, Follow: true})
	}
	return in
}

// FileInputs are what LoadFileCached's entry for an --image value covers:
// the file through any symlink, the path it resolves to, and for FILE:REF
// the longer readings of the value as a path, which must stay absent.
func FileInputs(src FileSource) []Input {
	in := []Input{{Path: src.Path, Follow: true}, {Path: src.Path, Resolve: true}}
	for _, p := range src.absent {
		in = append(in, Input{Path: p})
	}
	return in
}

// FlakeRefInputs are the flake.nix files ResolveFlakeRef looks for when
// the flake comes from the binary's own directory.
func FlakeRefInputs(flag, envFlake, exePath string) []Input {
	if flag != "" || envFlake != "" || exePath == "" {
		return nil
	}
	dir := filepath.Dir(exePath)
	in := []Input{{Path: filepath.Join(dir, "flake.nix"), Follow: true}}
	if filepath.Base(dir) == "bin" {
		in = append(in, Input{Path: filepath.Join(filepath.Dir(dir), "flake.nix"), Follow: true})
	}
	return in
}

// FlakeInputs are what CachedFlake's answer for src covers: the nix
// executable as PATH finds it (and every PATH entry before it, where a nix
// could appear), the packages file and every file of the flake directory.
// ok is false when the source cache cannot answer for src without running
// nix (a github: ref, --refresh, a flake directory that cannot be read).
func FlakeInputs(src FlakeSource) (in []Input, ok bool) {
	dir, local := flakeDir(src.Ref)
	if !local || src.Refresh {
		return nil, false
	}
	in = lookPathInputs(nixExe(src), os.Getenv("PATH"))
	if src.PackagesFile != "" {
		in = append(in, Input{Path: src.PackagesFile, Follow: true})
	}
	entries, err := walkFlake(dir)
	if err != nil {
		return nil, false
	}
	for _, e := range entries {
		in = append(in, Input{Path: filepath.Join(dir, e.rel)})
	}
	return in, true
}

// lookPathInputs are the files exec.LookPath(name) examines: each PATH
// entry's name up to the first executable one.
func lookPathInputs(name, path string) []Input {
	if strings.Contains(name, "/") {
		return []Input{{Path: name, Follow: true}}
	}
	var in []Input
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		in = append(in, Input{Path: p, Follow: true})
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			break
		}
	}
	return in
}
