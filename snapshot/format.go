// Package snapshot is Corral's on-disk snapshot container: a directory
// holding "state" (a header, a table of named, checksummed sections and a
// SHA-256 trailer) and "memory" (a sparse raw image of guest RAM that
// restore maps copy-on-write). docs/snapshot-format.md describes the format
// byte by byte. The container knows nothing of vCPUs or devices: callers
// store their own encodings as sections.
package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Version is the one container format version this package reads and writes.
const Version = 1

const (
	stateMagic = "CORRALSN"

	// State file header.
	hdrMagic    = 0  // [8]byte "CORRALSN"
	hdrVersion  = 8  // uint32
	hdrSections = 12 // uint32 section count
	hdrID       = 16 // [16]byte snapshot ID
	hdrSize     = 32

	// Section table entry, hdrSize + i*entSize.
	entName     = 0  // [64]byte name, NUL padded
	entOffset   = 64 // uint64 offset of the data in the state file
	entLength   = 72 // uint64
	entCRC      = 80 // uint32 CRC32C of the data
	entReserved = 84 // uint32, zero
	entSize     = 88

	trailerSize = sha256.Size

	// MaxNameLen is the longest section name.
	MaxNameLen = 64
	// MaxSectionSize is the largest section.
	MaxSectionSize = 64 << 20
	// MaxSections is the most sections one snapshot holds, the memory
	// layout included.
	MaxSections = 1024
	// MaxStateSize bounds the whole state file.
	MaxStateSize = 256 << 20
)

// IDSize is the length of a snapshot ID.
const IDSize = 16

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrVersion is wrapped by the error for a snapshot of another format version.
var ErrVersion = errors.New("snapshot: unsupported format version")

// ErrCorrupt is wrapped by every error for a snapshot whose bytes are
// damaged, truncated or inconsistent (bad magic, checksum, bounds).
var ErrCorrupt = errors.New("snapshot: corrupt")

// ErrNoSection is wrapped by Section's error for a name the snapshot lacks.
var ErrNoSection = errors.New("snapshot: no such section")

// corruptError is a one-line description that matches ErrCorrupt.
type corruptError struct{ msg string }

func (e *corruptError) Error() string        { return e.msg }
func (e *corruptError) Is(target error) bool { return target == ErrCorrupt }

func corruptf(format string, args ...any) error {
	return &corruptError{fmt.Sprintf(format, args...)}
}

// versionError reports a format version other than Version.
type versionError struct{ got uint32 }

func (e *versionError) Error() string {
	return fmt.Sprintf("format version %d, this corral reads version %d", e.got, Version)
}
func (e *versionError) Is(target error) bool { return target == ErrVersion }

// section is one named blob of the state file.
type section struct {
	name string
	data []byte
}

// state is the decoded state file.
type state struct {
	id       [IDSize]byte
	sections []section
}

// checkName reports whether name is a valid section name: 1 to 64 bytes of
// [a-z0-9._-].
func checkName(name string) error {
	if len(name) == 0 || len(name) > MaxNameLen {
		return fmt.Errorf("section name %q: length %d, want 1 to %d", name, len(name), MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("section name %q: byte %#x at %d is not one of [a-z0-9._-]", name, c, i)
		}
	}
	return nil
}

// encodeState lays out the state file: header, table, the sections back to
// back in table order, then the SHA-256 of all of that.
func encodeState(st *state) []byte {
	n := hdrSize + len(st.sections)*entSize
	for _, s := range st.sections {
		n += len(s.data)
	}
	b := make([]byte, n, n+trailerSize)
	copy(b[hdrMagic:], stateMagic)
	binary.LittleEndian.PutUint32(b[hdrVersion:], Version)
	binary.LittleEndian.PutUint32(b[hdrSections:], uint32(len(st.sections)))
	copy(b[hdrID:], st.id[:])
	off := hdrSize + len(st.sections)*entSize
	for i, s := range st.sections {
		e := b[hdrSize+i*entSize : hdrSize+(i+1)*entSize]
		copy(e[entName:entName+MaxNameLen], s.name)
		binary.LittleEndian.PutUint64(e[entOffset:], uint64(off))
		binary.LittleEndian.PutUint64(e[entLength:], uint64(len(s.data)))
		binary.LittleEndian.PutUint32(e[entCRC:], crc32.Checksum(s.data, castagnoli))
		off += copy(b[off:], s.data)
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// parseState decodes and verifies a whole state file. Every bound is checked
// before it is used; each section's CRC is checked before the trailer so a
// damaged section is named. The sections alias b.
func parseState(b []byte) (*state, error) {
	if len(b) > MaxStateSize {
		return nil, corruptf("size %d bytes is over the %d byte limit", len(b), MaxStateSize)
	}
	if len(b) < len(stateMagic) || string(b[:len(stateMagic)]) != stateMagic {
		return nil, corruptf("no %q magic: not a corral snapshot state file", stateMagic)
	}
	if len(b) < hdrVersion+4 {
		return nil, corruptf("truncated: %d bytes, the header needs %d", len(b), hdrSize)
	}
	if v := binary.LittleEndian.Uint32(b[hdrVersion:]); v != Version {
		return nil, &versionError{got: v}
	}
	if len(b) < hdrSize+trailerSize {
		return nil, corruptf("truncated: %d bytes, the header and trailer need %d", len(b), hdrSize+trailerSize)
	}
	count := binary.LittleEndian.Uint32(b[hdrSections:])
	if count > MaxSections {
		return nil, corruptf("section count %d is over the limit of %d", count, MaxSections)
	}
	body := len(b) - trailerSize
	tableEnd := hdrSize + int(count)*entSize
	if tableEnd > body {
		return nil, corruptf("truncated: %d bytes, the table of %d sections ends at %d", len(b), count, tableEnd+trailerSize)
	}
	st := &state{sections: make([]section, 0, count)}
	copy(st.id[:], b[hdrID:hdrID+IDSize])
	seen := make(map[string]bool, count)
	next := uint64(tableEnd) // sections are contiguous, in table order
	for i := 0; i < int(count); i++ {
		e := b[hdrSize+i*entSize : hdrSize+(i+1)*entSize]
		raw := e[entName : entName+MaxNameLen]
		nameLen := bytes.IndexByte(raw, 0)
		if nameLen < 0 {
			nameLen = MaxNameLen
		}
		name := string(raw[:nameLen])
		if err := checkName(name); err != nil {
			return nil, corruptf("table entry %d: %v", i, err)
		}
		for _, c := range raw[nameLen:] {
			if c != 0 {
				return nil, corruptf("section %q: name padding is not zero", name)
			}
		}
		if seen[name] {
			return nil, corruptf("section %q: listed twice", name)
		}
		seen[name] = true
		off := binary.LittleEndian.Uint64(e[entOffset:])
		length := binary.LittleEndian.Uint64(e[entLength:])
		if r := binary.LittleEndian.Uint32(e[entReserved:]); r != 0 {
			return nil, corruptf("section %q: reserved field is %#x, want 0", name, r)
		}
		if length > MaxSectionSize {
			return nil, corruptf("section %q: length %d is over the %d byte limit", name, length, MaxSectionSize)
		}
		if off != next {
			return nil, corruptf("section %q: offset %d, want %d (sections follow the table back to back)", name, off, next)
		}
		if off+length > uint64(body) {
			return nil, corruptf("section %q: bytes [%d, %d) are past the end of the data at %d (truncated?)", name, off, off+length, body)
		}
		data := b[off : off+length : off+length]
		if crc32.Checksum(data, castagnoli) != binary.LittleEndian.Uint32(e[entCRC:]) {
			return nil, corruptf("section %q: checksum mismatch", name)
		}
		st.sections = append(st.sections, section{name: name, data: data})
		next = off + length
	}
	if next != uint64(body) {
		return nil, corruptf("%d bytes after the last section, before the trailer", uint64(body)-next)
	}
	if sum := sha256.Sum256(b[:body]); !bytes.Equal(sum[:], b[body:]) {
		return nil, corruptf("trailer checksum mismatch")
	}
	return st, nil
}
