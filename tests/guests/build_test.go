package guests

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

const (
	loadAddr            = 0x100000
	xenNoteName         = "Xen"
	xenElfnotePhys32    = 18
	noteHeaderSize      = 12
	maxImageEnd         = 4 << 20 // every guest must fit well inside an 8 MiB VM
	qemuDescReadBytes   = 8       // QEMU 7.2 reads a 64-bit ELF's note descriptor as 8 bytes
	expectedNoteAlign   = 4
	expectedXenDescSize = 4
)

func needGCC(t *testing.T) {
	t.Helper()
	testenv.MustHaveCommand(t, "gcc", "gcc")
}

func TestNamesHaveSources(t *testing.T) {
	names := Names()
	if !slices.IsSorted(names) {
		t.Errorf("Names() not sorted: %v", names)
	}
	for _, n := range names {
		srcs, ok := guestSources(n)
		if !ok {
			t.Errorf("guest %q in Names() has no source list", n)
			continue
		}
		for _, s := range srcs {
			if _, err := fs.Stat(sourceFS, path.Join("src", s)); err != nil {
				t.Errorf("guest %q: source %s missing: %v", n, s, err)
			}
		}
	}
	// Every guest main file (a .c other than lib.c and smp helpers) is a guest.
	entries, err := fs.ReadDir(sourceFS, "src")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n, ok := strings.CutSuffix(e.Name(), ".c")
		if !ok || slices.Contains(librarySources(), e.Name()) {
			continue
		}
		if !slices.Contains(names, n) {
			t.Errorf("src/%s looks like a guest but is not in Names()", e.Name())
		}
	}
}

func TestBuildUnknownGuest(t *testing.T) {
	_, err := Build("no-such-guest", t.TempDir())
	if !errors.Is(err, ErrUnknownGuest) {
		t.Fatalf("Build(unknown) error = %v, want ErrUnknownGuest", err)
	}
	_, err = Cache{Dir: t.TempDir()}.Build(t.Context(), "../hello")
	if !errors.Is(err, ErrUnknownGuest) {
		t.Fatalf("Cache.Build(../hello) error = %v, want ErrUnknownGuest", err)
	}
}

// TestBuildEveryGuestPVH builds each guest warning-free and checks its ELF
// against the PVH boot contract.
func TestBuildEveryGuestPVH(t *testing.T) {
	needGCC(t)
	dir := t.TempDir()
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			p, diag, err := build(t.Context(), name, dir)
			if err != nil {
				t.Fatal(err)
			}
			if strings.TrimSpace(diag) != "" {
				t.Errorf("gcc diagnostics building %s:\n%s", name, diag)
			}
			checkPVH(t, p)
		})
	}
}

// checkPVH verifies the ELF layout and the Xen PVH note, returning the entry.
func checkPVH(t *testing.T, p string) uint32 {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		t.Fatalf("%s: class %v machine %v type %v, want ELFCLASS64 EM_X86_64 ET_EXEC", p, f.Class, f.Machine, f.Type)
	}

	var loads, notes []*elf.Prog
	for _, pr := range f.Progs {
		switch pr.Type {
		case elf.PT_LOAD:
			loads = append(loads, pr)
		case elf.PT_NOTE:
			notes = append(notes, pr)
		}
	}
	if len(loads) == 0 {
		t.Fatalf("%s: no PT_LOAD", p)
	}
	sort.Slice(loads, func(i, j int) bool { return loads[i].Paddr < loads[j].Paddr })
	if loads[0].Paddr != loadAddr {
		t.Errorf("%s: first PT_LOAD at paddr %#x, want %#x", p, loads[0].Paddr, loadAddr)
	}
	var prevEnd uint64
	for _, l := range loads {
		if l.Vaddr != l.Paddr {
			t.Errorf("%s: PT_LOAD vaddr %#x != paddr %#x", p, l.Vaddr, l.Paddr)
		}
		if l.Filesz > l.Memsz {
			t.Errorf("%s: PT_LOAD at %#x filesz %#x > memsz %#x", p, l.Paddr, l.Filesz, l.Memsz)
		}
		if l.Paddr < prevEnd {
			t.Errorf("%s: PT_LOAD at %#x overlaps the previous one (ends %#x)", p, l.Paddr, prevEnd)
		}
		prevEnd = l.Paddr + l.Memsz
	}
	if prevEnd > maxImageEnd {
		t.Errorf("%s: image ends at %#x, want below %#x", p, prevEnd, maxImageEnd)
	}

	if len(notes) != 1 {
		t.Fatalf("%s: %d PT_NOTE segments, want 1", p, len(notes))
	}
	nt := notes[0]
	if nt.Align != expectedNoteAlign {
		// QEMU aligns the note name size to p_align when finding the descriptor.
		t.Errorf("%s: PT_NOTE p_align %d, want %d", p, nt.Align, expectedNoteAlign)
	}
	data, err := io.ReadAll(nt.Open())
	if err != nil {
		t.Fatalf("%s: reading PT_NOTE: %v", p, err)
	}
	var entry uint32
	found := false
	for off := 0; off < len(data); {
		if len(data)-off < noteHeaderSize {
			t.Fatalf("%s: %d stray bytes at the end of PT_NOTE", p, len(data)-off)
		}
		namesz := int(binary.LittleEndian.Uint32(data[off:]))
		descsz := int(binary.LittleEndian.Uint32(data[off+4:]))
		typ := binary.LittleEndian.Uint32(data[off+8:])
		nameOff := off + noteHeaderSize
		descOff := nameOff + align4(namesz)
		next := descOff + align4(descsz)
		if namesz > len(data) || descsz > len(data) || next > len(data) {
			t.Fatalf("%s: note at %d (namesz %d descsz %d) overruns PT_NOTE (%d bytes)", p, off, namesz, descsz, len(data))
		}
		name := strings.TrimRight(string(data[nameOff:nameOff+namesz]), "\x00")
		if name == xenNoteName && typ == xenElfnotePhys32 {
			if found {
				t.Errorf("%s: two XEN_ELFNOTE_PHYS32_ENTRY notes", p)
			}
			found = true
			if descsz != expectedXenDescSize {
				t.Fatalf("%s: PHYS32_ENTRY descsz %d, want %d", p, descsz, expectedXenDescSize)
			}
			entry = binary.LittleEndian.Uint32(data[descOff:])
			if descOff+qemuDescReadBytes > len(data) {
				t.Errorf("%s: fewer than %d bytes from the PHYS32_ENTRY descriptor to the end of PT_NOTE", p, qemuDescReadBytes)
			} else if hi := binary.LittleEndian.Uint32(data[descOff+4:]); hi != 0 {
				t.Errorf("%s: the 4 bytes after the PHYS32_ENTRY descriptor are %#x, want 0 (QEMU reads 8)", p, hi)
			}
		}
		off = next
	}
	if !found {
		t.Fatalf("%s: no Xen XEN_ELFNOTE_PHYS32_ENTRY note", p)
	}
	if uint64(entry) != f.Entry {
		t.Errorf("%s: PVH entry %#x != e_entry %#x", p, entry, f.Entry)
	}
	inText := false
	for _, l := range loads {
		if uint64(entry) >= l.Paddr && uint64(entry) < l.Paddr+l.Filesz && l.Flags&elf.PF_X != 0 {
			inText = true
		}
	}
	if !inText {
		t.Errorf("%s: PVH entry %#x is not inside the file-backed part of an executable PT_LOAD", p, entry)
	}
	return entry
}

func align4(n int) int { return (n + 3) &^ 3 }

// forbiddenInsn matches instructions the nested-KVM emulator refuses in ring 0
// or that need state the guests never set up (SSE/AVX registers, x87).
var forbiddenInsn = regexp.MustCompile(`\t(mfence|popcnt\w*|pdep|pext|xsave\w*|xrstor\w*|xgetbv|int3|rdtscp|crc32\w*|clac|stac|fnclex|cmpxchg16b|aes\w+|f\w+)\b|%[xyz]mm\d`)

func TestNoForbiddenInstructions(t *testing.T) {
	needGCC(t)
	objdump := testenv.MustHaveCommand(t, "objdump", "binutils")
	for _, name := range Names() {
		p := BuildT(t, name)
		out, err := exec.Command(objdump, "-d", "--no-show-raw-insn", p).Output()
		if err != nil {
			t.Fatalf("objdump %s: %v", p, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if forbiddenInsn.MatchString(sc.Text()) {
				t.Errorf("%s: forbidden instruction: %s", name, strings.TrimSpace(sc.Text()))
			}
		}
	}
}

func TestForbiddenInsnPattern(t *testing.T) {
	for _, line := range []string{"  100000:\tmfence", "  1:\tpopcnt %eax,%eax", "  1:\tmovaps %xmm0,(%rax)", "  1:\tint3", "  1:\tfnstsw %ax"} {
		if !forbiddenInsn.MatchString(line) {
			t.Errorf("pattern misses %q", line)
		}
	}
	for _, line := range []string{"  1:\tmov %eax,%ebx", "  1:\tlock addl $0x0,(%rsp)", "  1:\thlt", "  1:\tpause"} {
		if forbiddenInsn.MatchString(line) {
			t.Errorf("pattern wrongly matches %q", line)
		}
	}
}

func TestCacheReusesBuild(t *testing.T) {
	needGCC(t)
	c := Cache{Dir: t.TempDir()}
	p1, err := c.Build(t.Context(), "hello")
	if err != nil {
		t.Fatal(err)
	}
	st1, err := os.Stat(p1)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := c.Build(t.Context(), "hello")
	if err != nil {
		t.Fatal(err)
	}
	st2, err := os.Stat(p2)
	if err != nil {
		t.Fatal(err)
	}
	if p1 != p2 || !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Errorf("second Cache.Build rebuilt: %s (%v) then %s (%v)", p1, st1.ModTime(), p2, st2.ModTime())
	}
	p3, err := c.Build(t.Context(), "halt")
	if err != nil {
		t.Fatal(err)
	}
	if path.Dir(p3) == path.Dir(p1) {
		t.Errorf("hello and halt share cache directory %s", path.Dir(p1))
	}
	// A damaged (empty) cache entry is rebuilt.
	if err := os.WriteFile(p1, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p4, err := c.Build(t.Context(), "hello")
	if err != nil {
		t.Fatal(err)
	}
	checkPVH(t, p4)
}

func TestBuildT(t *testing.T) {
	needGCC(t)
	t.Setenv("CORRAL_GUEST_CACHE", t.TempDir())
	p := BuildT(t, "hello")
	if !strings.HasPrefix(p, os.Getenv("CORRAL_GUEST_CACHE")) {
		t.Errorf("BuildT put %s outside $CORRAL_GUEST_CACHE", p)
	}
	checkPVH(t, p)
	if q := BuildT(t, "hello"); q != p {
		t.Errorf("BuildT twice: %s then %s", p, q)
	}
}

// TestExitCodesMatchLibH keeps exitcodes.go and src/lib.h in step.
func TestExitCodesMatchLibH(t *testing.T) {
	want := map[string]int{
		"EXIT_OK":                  ExitOK,
		"EXIT_BAD_ARGS":            ExitBadArgs,
		"EXIT_SMP_TIMEOUT":         ExitSMPTimeout,
		"EXIT_SMP_EXTRA":           ExitSMPExtra,
		"EXIT_RTC_ABSENT":          ExitRTCAbsent,
		"EXIT_RTC_INVALID":         ExitRTCInvalid,
		"EXIT_SMP_NO_PAGE":         ExitSMPNoPage,
		"EXIT_FAULT_SURVIVED":      ExitFaultSurvived,
		"EXIT_VIRTIO_NO_DEVICE":    ExitVirtioNoDevice,
		"EXIT_VIRTIO_BAD_CAPS":     ExitVirtioBadCaps,
		"EXIT_VIRTIO_FEATURES":     ExitVirtioFeatures,
		"EXIT_VIRTIO_QUEUE":        ExitVirtioQueue,
		"EXIT_VIRTIO_TIMEOUT":      ExitVirtioTimeout,
		"EXIT_VIRTIO_NEEDS_RESET":  ExitVirtioNeedsReset,
		"EXIT_BLK_READ":            ExitBlkRead,
		"EXIT_BLK_WRITE":           ExitBlkWrite,
		"EXIT_BLK_VERIFY":          ExitBlkVerify,
		"EXIT_BLK_FLUSH":           ExitBlkFlush,
		"EXIT_BLK_GET_ID":          ExitBlkGetID,
		"EXIT_BLK_RO_WRITE_OK":     ExitBlkROWriteOK,
		"EXIT_BLK_RO_MISMATCH":     ExitBlkROMismatch,
		"EXIT_BLK_SEQREAD":         ExitBlkSeqRead,
		"EXIT_BLK_BADREQ_ANSWERED": ExitBlkBadReqAnswered,
		"EXIT_NET_NO_MAC":          ExitNetNoMAC,
		"EXIT_NET_DHCP_TIMEOUT":    ExitNetDHCPTimeout,
		"EXIT_NET_DHCP_NAK":        ExitNetDHCPNAK,
		"EXIT_NET_ARP_TIMEOUT":     ExitNetARPTimeout,
		"EXIT_NET_UDP_TIMEOUT":     ExitNetUDPTimeout,
		"EXIT_COUNT_MEM_BAD":       ExitCountMemBad,
		"EXIT_BAD_START_INFO":      ExitBadStartInfo,
	}
	src, err := sourceFS.ReadFile("src/lib.h")
	if err != nil {
		t.Fatal(err)
	}
	def := regexp.MustCompile(`(?m)^#define\s+(EXIT_\w+)\s+(\d+)\s*$`)
	got := map[string]int{}
	for _, m := range def.FindAllStringSubmatch(string(src), -1) {
		v, err := strconv.Atoi(m[2])
		if err != nil {
			t.Fatal(err)
		}
		got[m[1]] = v
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lib.h exit codes %v, exitcodes.go %v", got, want)
	}
}

func TestQEMUStatus(t *testing.T) {
	for v, want := range map[int]int{0: 1, 3: 7, 7: 15, 125: 251, 200: 145, 255: 255} {
		if got := QEMUStatus(v); got != want {
			t.Errorf("QEMUStatus(%d) = %d, want %d", v, got, want)
		}
	}
}

// BenchmarkCacheHit measures what BuildT costs once a guest is cached.
func BenchmarkCacheHit(b *testing.B) {
	testenv.MustHaveCommand(b, "gcc", "gcc")
	c := Cache{Dir: b.TempDir()}
	if _, err := c.Build(b.Context(), "hello"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.Build(b.Context(), "hello"); err != nil {
			b.Fatal(err)
		}
	}
}
