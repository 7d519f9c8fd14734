package warm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// resolveUser turns an "id" or "image" user spec into uid and gid, looking
// names up in the container's passwd and group files.
func resolveUser(u UserSpec, passwdPath, groupPath string) (uid, gid uint32, cerr *cmdError) {
	if u.Name == "" {
		return u.UID, u.GID, nil
	}
	userPart, groupPart, hasGroup := strings.Cut(u.Name, ":")
	passwd, _ := os.ReadFile(passwdPath)
	uid, gid, found := lookupUser(passwd, userPart)
	if !found {
		n, err := strconv.ParseUint(userPart, 10, 32)
		if err != nil {
			return 0, 0, &cmdError{125, fmt.Sprintf("user %q not found in the container's /etc/passwd; pass a uid or a name the image knows", userPart)}
		}
		uid, gid = uint32(n), 0
	}
	if !hasGroup {
		return uid, gid, nil
	}
	group, _ := os.ReadFile(groupPath)
	if g, ok := lookupGroup(group, groupPart); ok {
		return uid, g, nil
	}
	n, err := strconv.ParseUint(groupPart, 10, 32)
	if err != nil {
		return 0, 0, &cmdError{125, fmt.Sprintf("group %q not found in the container's /etc/group; pass a gid or a name the image knows", groupPart)}
	}
	return uid, uint32(n), nil
}

// lookupUser finds a passwd entry by name, or by uid when name is numeric.
func lookupUser(passwd []byte, name string) (uid, gid uint32, ok bool) {
	for _, f := range colonRecords(passwd, 4) {
		if f[0] != name && f[2] != name {
			continue
		}
		u, err1 := strconv.ParseUint(f[2], 10, 32)
		g, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 == nil && err2 == nil {
			return uint32(u), uint32(g), true
		}
	}
	return 0, 0, false
}

// lookupGroup finds a group entry by name.
func lookupGroup(group []byte, name string) (uint32, bool) {
	for _, f := range colonRecords(group, 3) {
		if f[0] != name {
			continue
		}
		if g, err := strconv.ParseUint(f[2], 10, 32); err == nil {
			return uint32(g), true
		}
	}
	return 0, false
}

// colonRecords splits a passwd-style file into records with at least min
// fields, skipping comments and malformed lines.
func colonRecords(data []byte, min int) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if f := strings.Split(line, ":"); len(f) >= min {
			out = append(out, f)
		}
	}
	return out
}
