package devices

// DebugExitPort is the I/O port of the debug-exit device, as QEMU's
// isa-debug-exit uses it (iobase=0xf4). Insert with size DebugExitSize:
// 4, so that the bus passes word and dword writes at 0xf4 on instead of
// refusing them as straddling a one-byte device (0xf5–0xf7 are unused on
// this machine).
const (
	DebugExitPort = 0xf4
	DebugExitSize = 4
)

// DebugExit ends the VM with ExitDebug when the guest writes to its port:
// test guests use it to report a result. Code is the low byte written
// (a word or dword write uses its low byte, so a guest writing a word is
// fine); writes that start past the first port (0xf5–0xf7) do nothing. QEMU's isa-debug-exit turns a write of v into exit status 2v+1;
// here the VMM gets v itself and picks its own exit status. Reads return
// 0xff, as an unclaimed ISA port does, and have no effect.
type DebugExit struct {
	exit ExitFunc
}

// NewDebugExit returns the device; exit receives Exit{ExitDebug, v}. A nil
// exit makes writes do nothing.
func NewDebugExit(exit ExitFunc) *DebugExit { return &DebugExit{exit: exit} }

// Read fills data with 0xff.
func (d *DebugExit) Read(_ uint64, data []byte) { fill(data, 0xff) }

// Write ends the VM with the low byte of data as the code.
func (d *DebugExit) Write(offset uint64, data []byte) {
	if offset != 0 || len(data) == 0 || d.exit == nil {
		return
	}
	d.exit(Exit{Kind: ExitDebug, Code: data[0]})
}
