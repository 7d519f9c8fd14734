package nixload

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// An archive may hold several images (podman save -m, docker save a b, an
// OCI layout with two tags). Nothing is picked silently: without a
// reference such an archive is refused, naming its images, and FILE:REF
// picks one, as skopeo's docker-archive:FILE:REF and oci:DIR:REF do.
//
// A reference is one of the image's names (a RepoTag, an OCI ref.name or
// containerd image name), compared as docker does: "busybox" is
// "busybox:latest" is "docker.io/library/busybox:latest", and podman's
// "localhost/" prefix may be left out; a bare tag ("v2") names the image
// with that tag; "@N" is the N-th image (from 0) in the archive's order.

// candidate is one image of an archive, by the names it answers to.
type candidate struct {
	names []string
}

// label is how an image is shown in a list: its first name, else @N.
func (c candidate) label(i int) string {
	if len(c.names) > 0 {
		return c.names[0]
	}
	return "@" + strconv.Itoa(i)
}

// ImageRefError is an archive of several images of which none, or not
// exactly one, was named.
type ImageRefError struct {
	File    string   // the archive, when known: used in the example
	Ref     string   // what was asked for; "" when nothing was
	Images  []string // every image of the archive, by label
	Matches []string // the images Ref names, when more than one
}

func (e *ImageRefError) Error() string {
	file := e.File
	if file == "" {
		file = "FILE"
	}
	list := strings.Join(e.Images, ", ")
	switch {
	case e.Ref == "":
		return fmt.Sprintf("the archive holds %d images (%s): name one as %s:REF, for example %s:%s",
			len(e.Images), list, file, file, e.Images[0])
	case len(e.Matches) > 1:
		return fmt.Sprintf("%q names %d images in the archive (%s): name one exactly, or by position as %s:@N",
			e.Ref, len(e.Matches), strings.Join(e.Matches, ", "), file)
	}
	return fmt.Sprintf("no image %q in the archive; it holds %s", e.Ref, list)
}

// choose returns the index of the image ref names; "" is fine only when
// there is exactly one.
func choose(imgs []candidate, ref string) (int, error) {
	labels := make([]string, len(imgs))
	for i, c := range imgs {
		labels[i] = c.label(i)
	}
	if ref == "" {
		if len(imgs) == 1 {
			return 0, nil
		}
		return 0, &ImageRefError{Images: labels}
	}
	if n, ok := strings.CutPrefix(ref, "@"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 0 && i < len(imgs) && strconv.Itoa(i) == n {
			return i, nil
		}
		return 0, &ImageRefError{Ref: ref, Images: labels}
	}
	var hits []int
	for i, c := range imgs {
		for _, name := range c.names {
			if matchRef(ref, name) {
				hits = append(hits, i)
				break
			}
		}
	}
	switch len(hits) {
	case 1:
		return hits[0], nil
	case 0:
		return 0, &ImageRefError{Ref: ref, Images: labels}
	}
	matches := make([]string, len(hits))
	for j, i := range hits {
		matches[j] = labels[i]
	}
	return 0, &ImageRefError{Ref: ref, Images: labels, Matches: matches}
}

// matchRef reports whether ref, as a user wrote it, names an image known
// as name.
func matchRef(ref, name string) bool {
	if ref == name || familiar(ref) == familiar(name) {
		return true
	}
	if strings.ContainsAny(ref, "/:@") {
		return false
	}
	_, tag := splitTag(name)
	return tag == ref
}

// splitTag splits "repo:tag" (the tag is after the last "/"); a
// reference without a tag has "" as its tag.
func splitTag(ref string) (repo, tag string) {
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		return ref[:i], ref[i+1:]
	}
	return ref, ""
}

// familiar is a reference as docker shows it: the default registry and
// podman's localhost/ left out, the tag always present.
func familiar(ref string) string {
	repo, digest, hasDigest := strings.Cut(ref, "@")
	repo, tag := splitTag(repo)
	for _, p := range []string{"docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/", "localhost/"} {
		if r, ok := strings.CutPrefix(repo, p); ok {
			repo = r
			break
		}
	}
	switch {
	case hasDigest:
		return repo + "@" + digest
	case tag == "":
		tag = "latest"
	}
	return repo + ":" + tag
}

// chooseOCI groups an OCI index's manifests into images and returns the
// variants (one per platform) of the image ref names. Manifests that
// share a name, or that carry a platform and no name, are one image.
func chooseOCI(idx ocispec.Index, ref string) ([]ocispec.Descriptor, error) {
	descs := imageDescriptors(idx.Manifests)
	if len(descs) == 0 {
		return nil, fmt.Errorf("index.json lists no image manifest")
	}
	var imgs []candidate
	var variants [][]ocispec.Descriptor
	byName := map[string]int{}
	unnamedPlatforms := -1
	for _, d := range descs {
		names := refNames(d)
		switch {
		case len(names) > 0:
			if i, ok := byName[names[0]]; ok {
				variants[i] = append(variants[i], d)
				continue
			}
			byName[names[0]] = len(imgs)
		case d.Platform != nil:
			if unnamedPlatforms >= 0 {
				variants[unnamedPlatforms] = append(variants[unnamedPlatforms], d)
				continue
			}
			unnamedPlatforms = len(imgs)
		}
		imgs = append(imgs, candidate{names: names})
		variants = append(variants, []ocispec.Descriptor{d})
	}
	i, err := choose(imgs, ref)
	if err != nil {
		return nil, err
	}
	return variants[i], nil
}

// refNames are the names an OCI descriptor gives its image: containerd's
// full name first, then the OCI ref.name (often only a tag).
func refNames(d ocispec.Descriptor) []string {
	var names []string
	for _, k := range []string{"io.containerd.image.name", ocispec.AnnotationRefName} {
		if v := d.Annotations[k]; v != "" && (len(names) == 0 || names[0] != v) {
			names = append(names, v)
		}
	}
	return names
}

const (
	dockerManifestType = "application/vnd.docker.distribution.manifest.v2+json"
	dockerListType     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

func isIndex(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageIndex || mediaType == dockerListType
}

// imageDescriptors keeps the descriptors of images: manifests and
// indexes, without the attestations and other artifacts a layout may
// list beside them.
func imageDescriptors(all []ocispec.Descriptor) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for _, d := range all {
		switch d.MediaType {
		case "", ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, dockerManifestType, dockerListType:
		default:
			continue
		}
		if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" ||
			(d.Platform != nil && d.Platform.OS == "unknown") {
			continue
		}
		out = append(out, d)
	}
	return out
}

// PlatformError is an image with no variant for this machine.
type PlatformError struct {
	Platforms []string // what the image is built for
	Machine   string
}

func (e *PlatformError) Error() string {
	return fmt.Sprintf("the image is for %s only; this machine is %s", strings.Join(e.Platforms, ", "), e.Machine)
}

// pickPlatform picks the variant for this machine: one whose platform
// matches, else one that names no platform.
func pickPlatform(variants []ocispec.Descriptor) (ocispec.Descriptor, error) {
	var unnamed []ocispec.Descriptor
	var platforms []string
	for _, d := range variants {
		switch {
		case d.Platform == nil:
			unnamed = append(unnamed, d)
		case d.Platform.OS == "linux" && d.Platform.Architecture == runtime.GOARCH:
			return d, nil
		default:
			p := d.Platform.OS + "/" + d.Platform.Architecture
			if d.Platform.Variant != "" {
				p += "/" + d.Platform.Variant
			}
			platforms = append(platforms, p)
		}
	}
	if len(unnamed) > 0 {
		return unnamed[0], nil
	}
	return ocispec.Descriptor{}, &PlatformError{Platforms: platforms, Machine: "linux/" + runtime.GOARCH}
}
