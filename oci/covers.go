package oci

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// Cover is a host path the container must not reach (Hide) or not write
// (otherwise) wherever it falls under one of the container's binds: the
// sandbox's own state, Lectic's directories, files the host runs later.
// Paths are real paths (no symlinks), as the binds' sources are.
type Cover struct {
	Path string
	Hide bool
	// Why names the path in errors: "the sandbox's cache", "LECTIC_DATA".
	Why string
	// Refuse says what to do when a read-write bind lies inside Path; ""
	// refuses without a way out.
	Refuse string
}

// CoverKind is what a step of a bind's plan does.
type CoverKind int

const (
	// CoverPin binds a directory onto itself, read-write: a mount point
	// cannot be renamed or removed, so the path to a cover below it stays
	// the path the host uses.
	CoverPin CoverKind = iota
	// CoverReadOnly binds a file or directory onto itself, read-only.
	CoverReadOnly
	// CoverHide mounts an empty read-only tmpfs over a directory: nothing
	// in it, sockets included, can be reached.
	CoverHide
)

// CoverStep is one mount a bind's plan makes, at Rel below the bind's
// source ("" is the source itself).
type CoverStep struct {
	Rel  string
	Kind CoverKind
}

// BindCovers is the plan for one bind: the mounts that make its covers,
// in order (every step after the steps above it).
type BindCovers struct {
	Source, Target string
	Steps          []CoverStep
}

// bindRef is one of the container's user binds, as CoverPlan sees it.
type bindRef struct {
	what           string
	source, target string
	readOnly       bool
	own            bool // the sandbox's own per-workdir home, which lives in its cache
}

func userBindRefs(c Config) []bindRef {
	var refs []bindRef
	if c.Home != "" {
		refs = append(refs, bindRef{what: "home", source: c.Home, target: c.HomeTarget, own: c.HomeIsOwn})
	}
	if c.Workdir != "" {
		refs = append(refs, bindRef{what: "workdir", source: c.Workdir, target: c.Workdir})
	}
	for _, v := range c.Volumes {
		refs = append(refs, bindRef{what: "volume", source: v.Source, target: v.Target, readOnly: v.ReadOnly})
	}
	return refs
}

// under reports whether p is dir or lies below it.
func under(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// CoverPlan decides, for every bind that holds a cover, the mounts that
// make it: pins for the directories between the bind's source and each
// cover, then the covers. A read-only bind needs only its Hide covers
// (a socket on a read-only mount still accepts connections). It refuses
// a bind whose source lies inside a Hide cover, or a read-write one inside
// a read-only cover: nothing could protect those.
func CoverPlan(c Config) ([]BindCovers, error) {
	var plans []BindCovers
	for _, b := range userBindRefs(c) {
		src := filepath.Clean(b.source)
		steps := map[string]CoverKind{}
		for _, cv := range c.Covers {
			p := filepath.Clean(cv.Path)
			if under(src, p) && (cv.Hide || !b.readOnly) {
				if b.own {
					continue
				}
				return nil, refuse(b, cv)
			}
			if !under(p, src) || b.readOnly && !cv.Hide {
				continue
			}
			rel := strings.TrimPrefix(strings.TrimPrefix(p, src), "/")
			kind := CoverReadOnly
			if cv.Hide {
				kind = CoverHide
			}
			if old, ok := steps[rel]; !ok || kind > old {
				steps[rel] = kind
			}
			if b.readOnly {
				continue
			}
			parts := strings.Split(rel, "/")
			for i := 1; i < len(parts); i++ {
				pin := strings.Join(parts[:i], "/")
				if _, ok := steps[pin]; !ok {
					steps[pin] = CoverPin
				}
			}
		}
		if len(steps) == 0 {
			continue
		}
		plans = append(plans, BindCovers{Source: src, Target: filepath.Clean(b.target), Steps: orderSteps(steps)})
	}
	return plans, nil
}

// refuse is the error for bind b, which lies inside (or is) cover cv.
func refuse(b bindRef, cv Cover) error {
	what := fmt.Sprintf("%s %s", b.what, b.source)
	if cv.Hide {
		return fmt.Errorf("%s lies inside %s (%s), which no command may reach; choose a directory outside it", what, cv.Why, cv.Path)
	}
	msg := fmt.Sprintf("%s lies inside %s (%s), which must stay read-only in the sandbox: the host runs what is there", what, cv.Why, cv.Path)
	if cv.Refuse != "" {
		return fmt.Errorf("%s; %s", msg, cv.Refuse)
	}
	return fmt.Errorf("%s; bind it read-only (HOST:TARGET:ro) or choose another directory", msg)
}

// orderSteps drops steps a cover above them already covers (inside a
// hidden directory nothing is reachable; inside a read-only one nothing
// needs pinning or making read-only) and orders the rest by depth.
func orderSteps(steps map[string]CoverKind) []CoverStep {
	var out []CoverStep
	for rel, kind := range steps {
		covered := false
		for above, akind := range steps {
			if above == rel || !(above == "" || strings.HasPrefix(rel, above+"/")) {
				continue
			}
			covered = covered || akind == CoverHide || akind == CoverReadOnly && kind != CoverHide
		}
		if !covered {
			out = append(out, CoverStep{Rel: rel, Kind: kind})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		di, dj := depthOf(out[i].Rel), depthOf(out[j].Rel)
		if di != dj {
			return di < dj
		}
		return out[i].Rel < out[j].Rel
	})
	return out
}

func depthOf(rel string) int {
	if rel == "" {
		return 0
	}
	return strings.Count(rel, "/") + 1
}
