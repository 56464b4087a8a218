package devices

import (
	"bytes"
	"testing"
)

// FuzzSerial drives a Serial with a sequence of guest register accesses,
// host input and output flushes. Each operation is 2 bytes: an op (low
// bits: read/write/input/flush, then the register) and a value. It checks
// that nothing panics, the FIFOs stay in bounds, every transmitted byte
// reaches the writer in order, and the IRQ line is high exactly while IIR
// reports an interrupt.
func FuzzSerial(f *testing.F) {
	f.Add([]byte{0x01 | 1<<2, 0x0f, 0x01 | 2<<2, 0xc1, 0x01, 'h', 0x01, 'i', 0x00 | 2<<2, 0})
	f.Add([]byte{0x01 | 4<<2, 0x10, 0x01, 'a', 0x00 | 5<<2, 0, 0x00, 0, 0x02, 'k'})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var l line
		var out bytes.Buffer
		s := NewSerial(SerialConfig{IRQ: &l, Out: &out, OutBuffer: 64, InBuffer: 24})
		var sent []byte // bytes the guest transmitted outside loopback
		for len(ops) >= 2 {
			op, v := ops[0], ops[1]
			ops = ops[2:]
			reg := uint64(op>>2) & 7
			switch op & 3 {
			case 0:
				b := []byte{0}
				s.Read(reg, b)
			case 1:
				s.mu.Lock()
				tx := reg == uartRBR && s.lcr&lcrDLAB == 0 && !s.loopback() && s.thrEmpty()
				s.mu.Unlock()
				if tx {
					sent = append(sent, v)
				}
				s.Write(reg, []byte{v})
			case 2:
				s.Input(bytes.Repeat([]byte{v}, int(op>>5)+1))
			case 3:
				s.Flush()
			}
			s.mu.Lock()
			if s.rxLen < 0 || s.rxLen > s.rxCap() || len(s.tx) > s.txCap || s.rxqLen < 0 || s.rxqLen > s.rxqCap {
				t.Fatalf("bounds: rx %d/%d held %d/%d tx %d/%d", s.rxLen, s.rxCap(), s.rxqLen, s.rxqCap, len(s.tx), s.txCap)
			}
			if s.rxqLen > 0 && !s.loopback() && s.rxLen < s.rxCap() {
				t.Fatalf("input held (%d) while the FIFO has room (%d/%d)", s.rxqLen, s.rxLen, s.rxCap())
			}
			pending := s.iirID() != iirNoInt
			s.mu.Unlock()
			if high, _ := l.state(); high != pending {
				t.Fatalf("line high=%v, interrupt pending=%v", high, pending)
			}
		}
		s.Flush()
		if st := s.Stats(); st.TX != st.Written+st.OutLost {
			t.Fatalf("stats %+v: TX != Written+OutLost", st)
		}
		if !bytes.Equal(out.Bytes(), sent) {
			t.Fatalf("output %q, guest sent %q", out.Bytes(), sent)
		}
	})
}
