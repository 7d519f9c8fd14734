package oci

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// MergePasswd returns existing with entries appended for root, nobody and
// users, each unless an entry of that name exists. An entry whose id is
// already taken by another name is still added, so the name resolves
// (`id NAME`, ~NAME); lookups by id keep finding the image's own entry
// first. Existing lines are never changed. Users with ':' or a newline in
// a field cannot be written and are skipped.
func MergePasswd(existing []byte, users ...User) []byte {
	all := append([]User{
		{Name: "root", UID: 0, GID: 0, Home: "/root", Shell: "/bin/sh"},
		{Name: "nobody", UID: 65534, GID: 65534, Home: "/nonexistent", Shell: "/bin/false"},
	}, users...)
	names := entryNames(existing)
	out := withNewline(existing)
	for _, u := range all {
		if names[u.Name] || !validFields(u.Name, u.Home, u.Shell) {
			continue
		}
		names[u.Name] = true
		out = append(out, passwdLine(u)...)
	}
	return out
}

// MergeGroup is MergePasswd for /etc/group: root (0) and nobody (65534),
// then groups.
func MergeGroup(existing []byte, groups ...Group) []byte {
	all := append([]Group{{Name: "root", GID: 0}, {Name: "nobody", GID: 65534}}, groups...)
	names := entryNames(existing)
	out := withNewline(existing)
	for _, g := range all {
		if names[g.Name] || !validFields(append([]string{g.Name}, g.Members...)...) || hasComma(g.Members) {
			continue
		}
		names[g.Name] = true
		out = append(out, fmt.Sprintf("%s:x:%d:%s\n", g.Name, g.GID, strings.Join(g.Members, ","))...)
	}
	return out
}

func passwdLine(u User) string {
	home, shell := u.Home, u.Shell
	if home == "" {
		home = "/"
	}
	if shell == "" {
		shell = "/bin/sh"
	}
	return u.Name + ":x:" + strconv.FormatUint(uint64(u.UID), 10) + ":" +
		strconv.FormatUint(uint64(u.GID), 10) + "::" + home + ":" + shell + "\n"
}

// entryNames collects the names of existing entries; comment and blank
// lines are ignored.
func entryNames(data []byte) map[string]bool {
	names := map[string]bool{}
	for _, line := range bytes.Split(data, []byte("\n")) {
		name, _, ok := bytes.Cut(line, []byte(":"))
		if ok && len(name) > 0 && name[0] != '#' {
			names[string(name)] = true
		}
	}
	return names
}

func withNewline(data []byte) []byte {
	out := append([]byte(nil), data...)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return out
}

func validFields(fields ...string) bool {
	for i, f := range fields {
		if strings.ContainsAny(f, ":\n") || (i == 0 && f == "") {
			return false
		}
	}
	return true
}

func hasComma(members []string) bool {
	for _, m := range members {
		if strings.Contains(m, ",") || m == "" {
			return true
		}
	}
	return false
}
