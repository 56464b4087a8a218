package dhcp

import "encoding/binary"

// encoder appends DHCP options to a fixed buffer. It never writes past
// len(b): an option that does not fit whole is left out and counted, and one
// byte is always kept for the END option.
type encoder struct {
	b       []byte
	n       int
	omitted int
}

// room returns how many option bytes still fit before the reserved END byte.
func (e *encoder) room() int { return len(e.b) - e.n - 1 }

// option appends code with data, split into several options of the same code
// when data is longer than 255 bytes (RFC 3396). All or nothing.
func (e *encoder) option(code byte, data []byte) bool {
	chunks := (len(data) + 254) / 255
	if chunks == 0 {
		chunks = 1
	}
	if len(data)+2*chunks > e.room() {
		e.omitted++
		return false
	}
	for {
		c := min(len(data), 255)
		e.b[e.n] = code
		e.b[e.n+1] = byte(c)
		copy(e.b[e.n+2:], data[:c])
		e.n += 2 + c
		data = data[c:]
		if len(data) == 0 {
			return true
		}
	}
}

// optionU32 appends a 4-byte option.
func (e *encoder) optionU32(code byte, v uint32) bool {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return e.option(code, b[:])
}

// optionByte appends a 1-byte option.
func (e *encoder) optionByte(code, v byte) bool {
	b := [1]byte{v}
	return e.option(code, b[:])
}

// end appends the END option into the byte room kept for it.
func (e *encoder) end() {
	if e.n < len(e.b) {
		e.b[e.n] = optEnd
		e.n++
	}
}
