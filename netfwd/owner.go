package netfwd

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// SocketOwners returns the pids of the processes that hold the socket whose
// local address is client and remote address server: netDir is the
// network namespace's view (/proc/net for the agent's own), proc the pid
// namespace's. It is how a refusal finds the call that made the
// connection; nil when the socket is gone or cannot be found.
func SocketOwners(netDir, proc, proto string, client, server netip.AddrPort) []int {
	inode := socketInode(netDir, proto, unmapAP(client), unmapAP(server))
	if inode == "" {
		return nil
	}
	return inodeOwners(proc, "socket:["+inode+"]")
}

// socketInode finds the socket in /proc/net/{tcp,tcp6,udp,udp6}. A UDP
// socket that never connected has no remote address; it matches by its
// local one alone.
func socketInode(netDir, proto string, client, server netip.AddrPort) string {
	for _, table := range []string{proto, proto + "6"} {
		f, err := os.Open(netDir + "/" + table)
		if err != nil {
			continue
		}
		s := bufio.NewScanner(f)
		s.Scan() // header
		for s.Scan() {
			fields := strings.Fields(s.Text())
			if len(fields) < 10 {
				continue
			}
			local, ok1 := parseProcAddr(fields[1])
			remote, ok2 := parseProcAddr(fields[2])
			if !ok1 || !ok2 || local != client {
				continue
			}
			if remote == server || (proto == "udp" && remote.Port() == 0) {
				f.Close()
				return fields[9]
			}
		}
		f.Close()
	}
	return ""
}

// parseProcAddr reads "0100007F:1F90": the address as the kernel's words
// in host (little-endian) order, the port in hex.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	addrHex, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(addrHex)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	var a netip.Addr
	if len(raw) == 4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], binary.LittleEndian.Uint32(raw))
		a = netip.AddrFrom4(b)
	} else {
		var b [16]byte
		for i := 0; i < 16; i += 4 {
			binary.BigEndian.PutUint32(b[i:], binary.LittleEndian.Uint32(raw[i:i+4]))
		}
		a = netip.AddrFrom16(b).Unmap()
	}
	return netip.AddrPortFrom(a, uint16(port)), true
}

// inodeOwners lists the processes with an fd whose link is target.
func inodeOwners(proc, target string) []int {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := proc + "/" + e.Name() + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if link, err := os.Readlink(dir + "/" + fd.Name()); err == nil && link == target {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// Parent returns the parent pid and process group of pid, from
// /proc/PID/stat.
func Parent(proc string, pid int) (ppid, pgid int, ok bool) {
	b, err := os.ReadFile(proc + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name may hold spaces and parentheses: fields start
	// after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return 0, 0, false
	}
	ppid, err1 := strconv.Atoi(f[1])
	pgid, err2 := strconv.Atoi(f[2])
	return ppid, pgid, err1 == nil && err2 == nil
}
