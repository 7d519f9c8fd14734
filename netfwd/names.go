package netfwd

import (
	"net/netip"
	"sync"

	"github.com/lectic-nix-sandbox/lectic-nix-sandbox/netpolicy"
)

// nameTable hands out one address of netpolicy.NameBlock per name and maps
// it back. Addresses are given in order and, once the block is used up,
// reused oldest first: a command that looks up more than 131071 names in
// one container's life loses the oldest mappings, never a recent one.
type nameTable struct {
	mu     sync.Mutex
	byName map[string]uint32
	byOff  map[uint32]string
	next   uint32 // the next offset to hand out, 1..size-1
	size   uint32
	base   [4]byte
}

func newNameTable(block netip.Prefix) *nameTable {
	return &nameTable{
		byName: map[string]uint32{},
		byOff:  map[uint32]string{},
		next:   1,
		size:   1 << (32 - block.Bits()),
		base:   block.Addr().As4(),
	}
}

// addrFor returns name's address, handing out a new one if it has none.
func (t *nameTable) addrFor(name string) netip.Addr {
	t.mu.Lock()
	defer t.mu.Unlock()
	off, ok := t.byName[name]
	if !ok {
		off = t.next
		t.next++
		if t.next == t.size {
			t.next = 1
		}
		if old, used := t.byOff[off]; used {
			delete(t.byName, old)
		}
		t.byName[name] = off
		t.byOff[off] = name
	}
	return t.addrAt(off)
}

// nameOf returns the name an address was handed out for.
func (t *nameTable) nameOf(a netip.Addr) (string, bool) {
	a = a.Unmap()
	if !a.Is4() {
		return "", false
	}
	b := a.As4()
	base := uint32(t.base[0])<<24 | uint32(t.base[1])<<16 | uint32(t.base[2])<<8 | uint32(t.base[3])
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	off := v - base
	if v < base || off >= t.size {
		return "", false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	name, ok := t.byOff[off]
	return name, ok
}

func (t *nameTable) addrAt(off uint32) netip.Addr {
	base := uint32(t.base[0])<<24 | uint32(t.base[1])<<16 | uint32(t.base[2])<<8 | uint32(t.base[3])
	v := base + off
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// hostOf is where a connection to a captured address is meant to go: the
// name behind an address of the block, or the address itself.
func (t *nameTable) hostOf(a netip.Addr) (netpolicy.Host, bool) {
	a = a.Unmap()
	if netpolicy.NameBlock.Contains(a) {
		name, ok := t.nameOf(a)
		if !ok {
			return netpolicy.AddrHost(a), false
		}
		return netpolicy.NameHost(name), true
	}
	return netpolicy.AddrHost(a), true
}
