package replay

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// pcap file layout (https://www.tcpdump.org/manpages/pcap-savefile.5.html).
const (
	pcapGlobalHeaderLen = 24
	pcapVersionMajorOff = 4
	pcapSnaplenOff      = 16
	pcapLinkTypeOff     = 20
	pcapRecordHeaderLen = 16
	pcapTsSecOff        = 0
	pcapTsFracOff       = 4
	pcapInclLenOff      = 8
	pcapOrigLenOff      = 12

	magicMicro  = 0xa1b2c3d4 // timestamps in microseconds
	magicNano   = 0xa1b23c4d // timestamps in nanoseconds
	magicPcapng = 0x0a0d0d0a // pcapng section header block

	linkTypeEthernet = 1
	linkTypeMask     = 0xffff    // low 16 bits of the link-type field
	linkTypeFCSFlag  = 1 << 26   // "F" bit: FCS length is in the top nibble
	maxRecordLen     = 256 << 10 // larger than any snap length tcpdump writes
)

// ErrNotPcap is returned by newPcapReader when the data does not start with
// a pcap magic number.
var ErrNotPcap = errors.New("replay: not a pcap file")

// pcapReader reads records from a classic pcap capture. Every length in the
// file is bounded before use; the record buffer is reused between records.
type pcapReader struct {
	r     *bufio.Reader
	order binary.ByteOrder
	nano  bool
	buf   []byte
	hdr   [pcapRecordHeaderLen]byte
}

// pcapRecord is one captured frame. data is valid until the next call to next.
type pcapRecord struct {
	ts      time.Duration // since the Unix epoch; only differences are used
	data    []byte
	origLen uint32
}

// isPcapMagic reports whether the first four bytes of a file are a pcap magic
// number in either byte order.
func isPcapMagic(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	le, be := binary.LittleEndian.Uint32(b), binary.BigEndian.Uint32(b)
	return le == magicMicro || le == magicNano || be == magicMicro || be == magicNano
}

// newPcapReader reads and checks the global header.
func newPcapReader(r io.Reader) (*pcapReader, error) {
	p := &pcapReader{r: bufio.NewReader(r)}
	var h [pcapGlobalHeaderLen]byte
	if _, err := io.ReadFull(p.r, h[:]); err != nil {
		return nil, fmt.Errorf("replay: pcap global header: %w", err)
	}
	switch {
	case binary.LittleEndian.Uint32(h[:]) == magicMicro:
		p.order = binary.LittleEndian
	case binary.LittleEndian.Uint32(h[:]) == magicNano:
		p.order, p.nano = binary.LittleEndian, true
	case binary.BigEndian.Uint32(h[:]) == magicMicro:
		p.order = binary.BigEndian
	case binary.BigEndian.Uint32(h[:]) == magicNano:
		p.order, p.nano = binary.BigEndian, true
	case binary.BigEndian.Uint32(h[:]) == magicPcapng:
		return nil, fmt.Errorf("%w: pcapng is not supported; write with tcpdump -w, or convert with editcap -F pcap", ErrNotPcap)
	default:
		return nil, ErrNotPcap
	}
	if major := p.order.Uint16(h[pcapVersionMajorOff:]); major != 2 {
		return nil, fmt.Errorf("replay: pcap version %d, want 2", major)
	}
	lt := p.order.Uint32(h[pcapLinkTypeOff:])
	if lt&linkTypeFCSFlag != 0 {
		return nil, fmt.Errorf("replay: capture frames carry an FCS; capture without it")
	}
	if lt&linkTypeMask != linkTypeEthernet {
		return nil, fmt.Errorf("replay: pcap link type %d, want %d (Ethernet)", lt&linkTypeMask, linkTypeEthernet)
	}
	return p, nil
}

// next returns the next record, io.EOF at a clean end of file, or an error
// for a record that is cut short or claims an impossible length.
func (p *pcapReader) next() (pcapRecord, error) {
	n, err := io.ReadFull(p.r, p.hdr[:])
	if err == io.EOF {
		return pcapRecord{}, io.EOF
	}
	if err != nil {
		return pcapRecord{}, fmt.Errorf("replay: pcap record header cut short after %d bytes", n)
	}
	incl := p.order.Uint32(p.hdr[pcapInclLenOff:])
	orig := p.order.Uint32(p.hdr[pcapOrigLenOff:])
	if incl > maxRecordLen {
		return pcapRecord{}, fmt.Errorf("replay: pcap record of %d bytes exceeds %d", incl, maxRecordLen)
	}
	if cap(p.buf) < int(incl) {
		p.buf = make([]byte, incl)
	}
	data := p.buf[:incl]
	if _, err := io.ReadFull(p.r, data); err != nil {
		return pcapRecord{}, fmt.Errorf("replay: pcap record of %d bytes cut short", incl)
	}
	sec := time.Duration(p.order.Uint32(p.hdr[pcapTsSecOff:]))
	frac := time.Duration(p.order.Uint32(p.hdr[pcapTsFracOff:]))
	if !p.nano {
		frac *= time.Microsecond
	}
	// sec < 2^32 and frac < 2^42: the sum cannot overflow an int64.
	return pcapRecord{ts: sec*time.Second + frac, data: data, origLen: orig}, nil
}
