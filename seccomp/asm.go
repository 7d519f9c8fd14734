package seccomp

import (
	"errors"
	"fmt"

	"golang.org/x/net/bpf"
)

// label names a place in a program being assembled. next is the
// instruction that follows.
type label int

const next label = -1

// item is one instruction with symbolic jump targets.
type item struct {
	ins    bpf.Instruction // for everything but jumps
	cond   bpf.JumpTest
	k      uint32
	jt, jf label
	isCond bool
	isJa   bool
	far    bool // assembled as cond + two unconditional jumps
}

func (it item) size() int {
	if it.far {
		return 3
	}
	return 1
}

// assembler builds a classic BPF program with forward labels. Conditional
// jumps reach at most 255 instructions; one that must go further becomes a
// conditional over two unconditional jumps, which reach anywhere.
type assembler struct {
	items  []item
	labels []int // label -> index in items, -1 until marked
}

func (a *assembler) newLabel() label {
	a.labels = append(a.labels, -1)
	return label(len(a.labels) - 1)
}

func (a *assembler) mark(l label) { a.labels[l] = len(a.items) }

func (a *assembler) loadWord(off uint32) {
	a.items = append(a.items, item{ins: bpf.LoadAbsolute{Off: off, Size: 4}})
}

func (a *assembler) and(k uint32) {
	a.items = append(a.items, item{ins: bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: k}})
}

func (a *assembler) ret(k uint32) { a.items = append(a.items, item{ins: bpf.RetConstant{Val: k}}) }

// jump goes to jt when A cond k holds, else to jf.
func (a *assembler) jump(cond bpf.JumpTest, k uint32, jt, jf label) {
	a.items = append(a.items, item{isCond: true, cond: cond, k: k, jt: jt, jf: jf})
}

func (a *assembler) ja(l label) { a.items = append(a.items, item{isJa: true, jt: l}) }

// assemble resolves labels into offsets.
func (a *assembler) assemble() ([]bpf.Instruction, error) {
	for l, at := range a.labels {
		if at < 0 {
			return nil, fmt.Errorf("label %d is never marked", l)
		}
	}
	pos := make([]int, len(a.items)+1)
	for {
		for i, it := range a.items {
			pos[i+1] = pos[i] + it.size()
		}
		changed := false
		for i := range a.items {
			it := &a.items[i]
			if !it.isCond || it.far {
				continue
			}
			for _, l := range []label{it.jt, it.jf} {
				if d := a.target(pos, i, l) - pos[i] - 1; d > 255 {
					it.far, changed = true, true
				}
			}
		}
		if !changed {
			break
		}
	}
	var out []bpf.Instruction
	for i, it := range a.items {
		switch {
		case it.isJa:
			d := a.target(pos, i, it.jt) - pos[i] - 1
			if d < 0 {
				return nil, errors.New("backward jump")
			}
			out = append(out, bpf.Jump{Skip: uint32(d)})
		case it.isCond && it.far:
			t := a.target(pos, i, it.jt) - pos[i] - 2
			f := a.target(pos, i, it.jf) - pos[i] - 3
			if t < 0 || f < 0 {
				return nil, errors.New("backward jump")
			}
			out = append(out, bpf.JumpIf{Cond: it.cond, Val: it.k, SkipTrue: 0, SkipFalse: 1},
				bpf.Jump{Skip: uint32(t)}, bpf.Jump{Skip: uint32(f)})
		case it.isCond:
			t := a.target(pos, i, it.jt) - pos[i] - 1
			f := a.target(pos, i, it.jf) - pos[i] - 1
			if t < 0 || f < 0 {
				return nil, errors.New("backward jump")
			}
			out = append(out, bpf.JumpIf{Cond: it.cond, Val: it.k, SkipTrue: uint8(t), SkipFalse: uint8(f)})
		default:
			out = append(out, it.ins)
		}
	}
	return out, nil
}

// target is the position of label l as seen from item i.
func (a *assembler) target(pos []int, i int, l label) int {
	if l == next {
		return pos[i+1]
	}
	return pos[a.labels[l]]
}
