package devices

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Legacy PC serial port addresses and IRQs. Insert a Serial on the I/O bus
// at its port with size SerialPortsSize.
const (
	COM1Port        = 0x3f8
	COM1IRQ         = 4
	COM2Port        = 0x2f8
	COM2IRQ         = 3
	SerialPortsSize = 8
)

// 16550A register offsets (DLAB is LCR bit 7).
const (
	uartRBR = 0 // read: receive buffer; write: THR; DLAB: DLL
	uartIER = 1 // DLAB: DLM
	uartIIR = 2 // read: IIR; write: FCR
	uartLCR = 3
	uartMCR = 4
	uartLSR = 5
	uartMSR = 6
	uartSCR = 7
)

// Register bits.
const (
	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // THR empty
	ierRLSI = 0x04 // receiver line status
	ierMSI  = 0x08 // modem status
	ierMask = 0x0f

	iirNoInt   = 0x01
	iirMSI     = 0x00
	iirTHRI    = 0x02
	iirRDI     = 0x04
	iirRLSI    = 0x06
	iirTimeout = 0x0c
	iirFIFOs   = 0xc0 // both FIFO-enabled bits: a 16550A with FIFOs on

	fcrEnable   = 0x01
	fcrClearRX  = 0x02
	fcrClearTX  = 0x04
	fcrTrigMask = 0xc0

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f

	lsrDR       = 0x01
	lsrOE       = 0x02
	lsrPE       = 0x04
	lsrFE       = 0x08
	lsrBI       = 0x10
	lsrTHRE     = 0x20
	lsrTEMT     = 0x40
	lsrErrors   = lsrOE | lsrPE | lsrFE | lsrBI
	msrDCTS     = 0x01
	msrDDSR     = 0x02
	msrTERI     = 0x04
	msrDDCD     = 0x08
	msrCTS      = 0x10
	msrDSR      = 0x20
	msrRI       = 0x40
	msrDCD      = 0x80
	msrConnects = msrDCD | msrDSR | msrCTS // a terminal is attached

	uartFIFOSize = 16
	// DefaultSerialOutBuffer is how many bytes of guest output a Serial
	// holds for its writer before it makes the guest wait (see Serial).
	DefaultSerialOutBuffer = 64 << 10
	// DefaultSerialInBuffer is how many host input bytes a Serial holds
	// beyond its receive FIFO for a guest that is not reading.
	DefaultSerialInBuffer = 4 << 10
	// DefaultSerialStallTimeout is how long a Write to Out may go without
	// returning before Out counts as stalled (see Serial).
	DefaultSerialStallTimeout = time.Second
	// DefaultSerialFlushTimeout bounds the final flush when Run ends.
	DefaultSerialFlushTimeout = time.Second

	// serialWritePiece is the most handed to Out in one Write, so that a
	// slow writer shows progress often enough not to count as stalled.
	serialWritePiece = 4 << 10
)

// Interrupt sources, as bits, for edge detection.
const (
	srcLineStatus = 1 << iota
	srcRXData
	srcTHRE
	srcModem
)

// SerialConfig configures a Serial.
type SerialConfig struct {
	// IRQ is the serial port's interrupt line (COM1: IRQ 4); nil: none.
	IRQ IRQLine
	// Out receives the guest's output (the console); nil discards it. To
	// notice the first byte of output, wrap Out.
	Out io.Writer
	// OutBuffer bounds the guest output held for Out; 0 means
	// DefaultSerialOutBuffer. At least 64 bytes are used.
	OutBuffer int
	// InBuffer bounds the host input held beyond the receive FIFO; 0 means
	// DefaultSerialInBuffer, negative means none (the FIFO only).
	InBuffer int
	// StallTimeout is how long one Write to Out may take before Out counts
	// as stalled; 0 means DefaultSerialStallTimeout.
	StallTimeout time.Duration
	// FlushTimeout bounds the final flush when Run ends; 0 means
	// DefaultSerialFlushTimeout.
	FlushTimeout time.Duration
	// Log receives device errors (a failing Out or IRQ line); nil discards.
	Log *slog.Logger
}

// SerialStats counts bytes through a Serial.
type SerialStats struct {
	TX        uint64 // bytes the guest transmitted (loopback excluded)
	TXDropped uint64 // bytes written to a full transmitter (THRE clear) and lost
	Written   uint64 // bytes handed to Out
	OutLost   uint64 // transmitted bytes Out never got: it was stalled, had failed, or Run ended first
	RX        uint64 // host bytes accepted by Input or Inject
	InDropped uint64 // host bytes Inject dropped: the FIFO and input buffer were full
	Overruns  uint64 // loopback bytes lost to a full receive FIFO
}

// Serial is a 16550A UART: the full register set, 16-byte FIFOs, the
// interrupt identification priorities, loopback mode and the modem lines,
// enough for Linux's 8250 driver to autoconfigure it as a "16550A".
//
// Output: bytes the guest writes to THR go into a bounded buffer that Run
// (or Flush) writes to Out, so a vCPU never blocks on a slow or stopped
// terminal. While the buffer has room for a FIFO-full (16 bytes), LSR shows
// THRE and TEMT set: transmission looks instant, as it does in QEMU. When a
// slow terminal lets the buffer fill, THRE clears and the THRE interrupt
// waits until Run drains it: the guest is throttled, as by a real UART at a
// low baud rate, and a writer that keeps up loses nothing. A guest that
// writes THR anyway while THRE is clear loses the byte (TXDropped). Run
// writes output that follows a quiet spell at once, and gathers what comes
// after it for up to a millisecond (less at a line's end or a half-full
// buffer), so a guest writing a byte per exit costs Out a write per line.
//
// A writer is stalled when one Write has not returned for StallTimeout (a
// paused pager, an ssh session gone quiet, a FIFO nobody reads): THRE comes
// back and what the full buffer cannot take is dropped and counted
// (OutLost), so the guest runs on; when the Write returns, throttling
// resumes. If Out fails, the error is logged once and later output is
// dropped (OutLost). When Run's context ends, Run writes what is buffered
// for at most FlushTimeout (nothing if Out is stalled) and returns: if Out
// has SetWriteDeadline (an *os.File in Go's poller, a net.Conn), the
// deadline cuts a blocked Write short, and is cleared again when Run
// returns. A writer without deadlines whose Write never returns keeps Run's
// goroutine in that Write: callers must not wait for Run then (see
// WaitRun); once the Write returns, Run writes nothing more and returns.
//
// Input: host bytes go into the receive FIFO (16 bytes; 1 with FIFOs off)
// and, while it is full, a host-side buffer (InBuffer) that refills the
// FIFO as the guest reads. Input accepts only what fits and returns the
// count, so back-pressure reaches a host reader (InputFrom pumps a reader
// that way); Inject drops and counts (InDropped) what does not fit, for an
// interactive source that must keep being read whatever the guest does. In
// loopback mode the receiver is disconnected from the host and nothing is
// accepted.
//
// Interrupts: the IRQ line's level follows "some enabled interrupt is
// pending" (IIR bit 0 clear); when a new source becomes pending while the
// line is already high, the line is pulsed low then high, so an
// edge-triggered pin (ISA IRQ 4) sees every new interrupt. The line is not
// gated by MCR OUT2 (as in QEMU). The receive timeout interrupt (IIR 0x0C)
// is reported at once whenever the FIFO holds fewer bytes than the trigger
// level; there is no character timing.
//
// Not emulated: baud rate timing (the divisor is stored only), parity,
// framing and break errors (never produced), DMA mode, and the 16750/16650
// extensions (EFR, 64-byte FIFO), which the autoconfig probe finds absent.
type Serial struct {
	mu sync.Mutex

	ier, lcr, mcr, scr byte
	dll, dlm           byte
	fcr                byte // FIFO enable and trigger bits as last written
	lsrErr             byte // OE/PE/FE/BI latched until LSR is read
	msrDelta           byte // MSR delta bits latched until MSR is read
	msrLines           byte // current MSR status bits (upper nibble)
	thrIntr            bool // THRE interrupt pending (cleared by IIR read or THR write)

	rx    [uartFIFOSize]byte
	rxHd  int
	rxLen int

	rxq    []byte // ring of host input waiting for FIFO room (allocated on first use)
	rxqHd  int
	rxqLen int
	rxqCap int

	tx       []byte // output waiting for Out
	txSpare  []byte // the other half of the double buffer
	txCap    int
	holding  bool      // Run gathers output for a burst (serialGather): only a line end or a filling buffer wakes it
	txBroke  bool      // Out failed: discard
	writing  bool      // a Write to Out is in progress...
	writeSeq uint64    // ...with this number
	stalled  bool      // ...and has taken longer than stallAfter
	ending   bool      // Run's context ended: the IRQ line is no longer driven
	endBy    time.Time // when ending, the final flush's deadline

	stallAfter time.Duration
	flushFor   time.Duration
	deadline   interface{ SetWriteDeadline(time.Time) error } // Out's, when it works
	runDone    chan struct{}                                  // closed when Run returns

	irq      IRQLine
	irqHigh  bool
	prevSrc  int
	irqErred bool

	stats SerialStats

	out     io.Writer
	flushMu sync.Mutex    // one Flush at a time, so output stays in order
	txReady chan struct{} // Run's wake-up: there is output
	rxSpace chan struct{} // Input waiters' wake-up: the FIFO has room
	log     *slog.Logger
}

// NewSerial returns a UART in its reset state with a terminal attached
// (CTS, DSR, DCD asserted). Run it with Run so its output reaches Out.
func NewSerial(cfg SerialConfig) *Serial {
	s := &Serial{
		irq:        cfg.IRQ,
		out:        cfg.Out,
		txCap:      cfg.OutBuffer,
		rxqCap:     cfg.InBuffer,
		stallAfter: cfg.StallTimeout,
		flushFor:   cfg.FlushTimeout,
		log:        cfg.Log,
		txReady:    make(chan struct{}, 1),
		rxSpace:    make(chan struct{}, 1),
		runDone:    make(chan struct{}),
		dll:        0x0c, // 9600 baud
		msrLines:   msrConnects,
	}
	switch {
	case s.rxqCap == 0:
		s.rxqCap = DefaultSerialInBuffer
	case s.rxqCap < 0:
		s.rxqCap = 0
	}
	if s.stallAfter <= 0 {
		s.stallAfter = DefaultSerialStallTimeout
	}
	if s.flushFor <= 0 {
		s.flushFor = DefaultSerialFlushTimeout
	}
	if s.irq == nil {
		s.irq = NoIRQ{}
	}
	if s.out == nil {
		s.out = io.Discard
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.txCap == 0 {
		s.txCap = DefaultSerialOutBuffer
	}
	s.txCap = max(s.txCap, 4*uartFIFOSize)
	// Probe: setting no deadline fails on writers that cannot have one
	// (an *os.File outside the poller says os.ErrNoDeadline).
	if d, ok := s.out.(interface{ SetWriteDeadline(time.Time) error }); ok && d.SetWriteDeadline(time.Time{}) == nil {
		s.deadline = d
	}
	return s
}

// Stats returns the byte counters.
func (s *Serial) Stats() SerialStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Read handles a guest read at offset (0–7) from the port base. A wider
// access reads consecutive registers, as an 8-bit ISA device would.
func (s *Serial) Read(offset uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range data {
		data[i] = s.readReg(offset + uint64(i))
	}
	s.updateIRQ()
}

// Write handles a guest write at offset (0–7) from the port base, byte by
// byte for wider accesses.
func (s *Serial) Write(offset uint64, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, v := range data {
		s.writeReg(offset+uint64(i), v)
	}
	s.updateIRQ()
}

func (s *Serial) loopback() bool { return s.mcr&mcrLoop != 0 }
func (s *Serial) fifoOn() bool   { return s.fcr&fcrEnable != 0 }

func (s *Serial) rxCap() int {
	if s.fifoOn() {
		return uartFIFOSize
	}
	return 1
}

// rxTrigger is the FIFO level that raises "received data available".
func (s *Serial) rxTrigger() int {
	if !s.fifoOn() {
		return 1
	}
	return [4]int{1, 4, 8, 14}[s.fcr>>6]
}

// txFull says whether the output buffer lacks room for a FIFO-full.
func (s *Serial) txFull() bool { return s.txCap-len(s.tx) < uartFIFOSize }

// thrEmpty says whether the transmitter takes bytes: the buffer has room,
// or Out is stalled and what does not fit is dropped.
func (s *Serial) thrEmpty() bool { return !s.txFull() || s.stalled }

func (s *Serial) lsr() byte {
	v := s.lsrErr
	if s.rxLen > 0 {
		v |= lsrDR
	}
	if s.thrEmpty() {
		v |= lsrTHRE | lsrTEMT
	}
	return v
}

// msrStatus is the MSR's upper nibble: the modem inputs, or in loopback
// mode the MCR outputs wired back (DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD).
func (s *Serial) msrStatus() byte {
	if !s.loopback() {
		return msrConnects
	}
	var v byte
	if s.mcr&mcrDTR != 0 {
		v |= msrDSR
	}
	if s.mcr&mcrRTS != 0 {
		v |= msrCTS
	}
	if s.mcr&mcrOUT1 != 0 {
		v |= msrRI
	}
	if s.mcr&mcrOUT2 != 0 {
		v |= msrDCD
	}
	return v
}

// updateModemLines latches delta bits after the MSR inputs may have changed.
func (s *Serial) updateModemLines() {
	now := s.msrStatus()
	old := s.msrLines
	ch := now ^ old
	if ch&msrCTS != 0 {
		s.msrDelta |= msrDCTS
	}
	if ch&msrDSR != 0 {
		s.msrDelta |= msrDDSR
	}
	if ch&msrDCD != 0 {
		s.msrDelta |= msrDDCD
	}
	if old&msrRI != 0 && now&msrRI == 0 { // trailing edge of RI
		s.msrDelta |= msrTERI
	}
	s.msrLines = now
}

// sources returns the enabled, pending interrupt sources.
func (s *Serial) sources() int {
	src := 0
	if s.ier&ierRLSI != 0 && s.lsrErr != 0 {
		src |= srcLineStatus
	}
	if s.ier&ierRDI != 0 && s.rxLen > 0 {
		src |= srcRXData
	}
	if s.ier&ierTHRI != 0 && s.thrIntr {
		src |= srcTHRE
	}
	if s.ier&ierMSI != 0 && s.msrDelta != 0 {
		src |= srcModem
	}
	return src
}

// iirID is the IIR's interrupt ID (bits 3:0) for the highest-priority source.
func (s *Serial) iirID() byte {
	src := s.sources()
	switch {
	case src&srcLineStatus != 0:
		return iirRLSI
	case src&srcRXData != 0:
		if s.fifoOn() && s.rxLen < s.rxTrigger() {
			return iirTimeout
		}
		return iirRDI
	case src&srcTHRE != 0:
		return iirTHRI
	case src&srcModem != 0:
		return iirMSI
	}
	return iirNoInt
}

// updateIRQ drives the line from the pending sources; mu held. Lines are
// driven under the lock so that level changes from the vCPU and from Run
// reach the irqchip in order.
func (s *Serial) updateIRQ() {
	cur := s.sources()
	fresh := cur &^ s.prevSrc
	s.prevSrc = cur
	switch {
	case cur == 0 && s.irqHigh:
		s.setLine(false)
	case fresh != 0:
		if s.irqHigh {
			s.setLine(false) // pulse so an edge-triggered pin sees it
		}
		s.setLine(true)
	}
}

func (s *Serial) setLine(high bool) {
	if s.ending {
		// The machine is going away; its interrupt controller may be too.
		return
	}
	s.irqHigh = high
	if err := s.irq.SetLevel(high); err != nil && !s.irqErred {
		s.irqErred = true
		s.log.Error("serial: driving the IRQ line failed; further failures not logged", "high", high, "err", err)
	}
}

func (s *Serial) readReg(off uint64) byte {
	dlab := s.lcr&lcrDLAB != 0
	switch off {
	case uartRBR:
		if dlab {
			return s.dll
		}
		return s.popRX()
	case uartIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case uartIIR:
		id := s.iirID()
		if id == iirTHRI {
			s.thrIntr = false // reading IIR clears THRE when it is the source reported
		}
		if s.fifoOn() {
			id |= iirFIFOs
		}
		return id
	case uartLCR:
		return s.lcr
	case uartMCR:
		return s.mcr
	case uartLSR:
		v := s.lsr()
		s.lsrErr = 0
		return v
	case uartMSR:
		v := s.msrLines | s.msrDelta
		s.msrDelta = 0
		return v
	case uartSCR:
		return s.scr
	}
	return 0xff
}

func (s *Serial) writeReg(off uint64, v byte) {
	dlab := s.lcr&lcrDLAB != 0
	switch off {
	case uartRBR:
		if dlab {
			s.dll = v
			return
		}
		s.transmit(v)
	case uartIER:
		if dlab {
			s.dlm = v
			return
		}
		old := s.ier
		s.ier = v & ierMask
		if (old^s.ier)&ierTHRI != 0 {
			// Enabling the THRE interrupt while THR is empty raises it;
			// disabling it drops it.
			s.thrIntr = s.ier&ierTHRI != 0 && s.thrEmpty()
		}
	case uartIIR: // FCR
		if (v^s.fcr)&fcrEnable != 0 {
			// Turning the FIFOs on or off clears them.
			v |= fcrClearRX | fcrClearTX
		}
		if v&fcrClearRX != 0 {
			s.clearRX()
		}
		// Clearing the transmit FIFO has nothing to do: bytes leave THR at once.
		s.fcr = v & (fcrEnable | fcrTrigMask)
		if !s.fifoOn() {
			s.fcr = 0
		}
		s.refillRX() // held host input flows into the (new) FIFO
	case uartLCR:
		s.lcr = v
	case uartMCR:
		wasLoop := s.loopback()
		s.mcr = v & mcrMask
		s.updateModemLines()
		if wasLoop && !s.loopback() {
			s.refillRX()
			s.wakeRX()
		}
	case uartLSR, uartMSR:
		// Read-only here (factory test registers on real parts).
	case uartSCR:
		s.scr = v
	}
}

// transmit handles a THR write.
func (s *Serial) transmit(v byte) {
	s.thrIntr = false
	s.updateIRQ() // a THR write clears THRE; it comes back below
	switch {
	case s.loopback():
		if s.rxLen >= s.rxCap() {
			s.lsrErr |= lsrOE
			s.stats.Overruns++
		} else {
			s.pushRX(v)
		}
	case !s.thrEmpty():
		s.stats.TXDropped++
		return
	case s.txFull(): // Out is stalled: drop rather than hold the guest
		s.stats.TX++
		s.stats.OutLost++
	default:
		s.stats.TX++
		if s.tx == nil {
			s.tx = make([]byte, 0, min(s.txCap, 4096))
		}
		s.tx = append(s.tx, v)
		// Wake Run for output after a quiet spell, and while it gathers
		// a burst only at a line's end or when the buffer fills: not for
		// every byte the guest writes.
		if !s.holding || v == '\n' || len(s.tx) >= s.txCap/2 {
			select {
			case s.txReady <- struct{}{}:
			default:
			}
		}
	}
	if s.thrEmpty() && s.ier&ierTHRI != 0 {
		s.thrIntr = true
	}
}

func (s *Serial) pushRX(v byte) {
	s.rx[(s.rxHd+s.rxLen)%uartFIFOSize] = v
	s.rxLen++
}

func (s *Serial) popRX() byte {
	if s.rxLen == 0 {
		return 0
	}
	v := s.rx[s.rxHd]
	s.rxHd = (s.rxHd + 1) % uartFIFOSize
	s.rxLen--
	s.refillRX()
	s.wakeRX()
	return v
}

// clearRX empties the FIFO; the FCR write refills it from held input once
// the new FIFO mode is set.
func (s *Serial) clearRX() {
	s.rxHd, s.rxLen = 0, 0
	s.wakeRX()
}

// refillRX moves held host input into the FIFO as far as it has room.
func (s *Serial) refillRX() {
	if s.loopback() {
		return
	}
	for s.rxqLen > 0 && s.rxLen < s.rxCap() {
		s.pushRX(s.rxq[s.rxqHd])
		s.rxqHd = (s.rxqHd + 1) % s.rxqCap
		s.rxqLen--
	}
}

func (s *Serial) wakeRX() {
	select {
	case s.rxSpace <- struct{}{}:
	default:
	}
}

// Input puts bytes from the host (the console's keyboard) into the receive
// FIFO, and what the FIFO cannot take into the input buffer, and returns
// how many fit; the caller keeps the rest and offers them again after
// WaitInputSpace. It never blocks and never drops. It raises the RX
// interrupt if the guest enabled it.
func (s *Serial) Input(p []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.input(p)
}

func (s *Serial) input(p []byte) int {
	if s.loopback() {
		return 0
	}
	s.refillRX() // now either nothing is held or the FIFO is full
	n := min(len(p), s.rxCap()-s.rxLen+s.rxqCap-s.rxqLen)
	if n <= 0 {
		return 0
	}
	if s.rxq == nil && s.rxqCap > 0 {
		s.rxq = make([]byte, s.rxqCap)
	}
	for _, v := range p[:n] {
		if s.rxqLen == 0 && s.rxLen < s.rxCap() {
			s.pushRX(v)
			continue
		}
		s.rxq[(s.rxqHd+s.rxqLen)%s.rxqCap] = v
		s.rxqLen++
	}
	s.stats.RX += uint64(n)
	s.updateIRQ()
	return n
}

// Inject is Input for a source that must never wait for the guest (a
// terminal whose escape keys must always be read): what does not fit is
// dropped and counted in InDropped. It returns how many bytes were taken.
func (s *Serial) Inject(p []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.input(p)
	s.stats.InDropped += uint64(len(p) - n)
	return n
}

// WaitInputSpace blocks until Input may have room (the guest read a byte,
// cleared the FIFO or left loopback mode) or ctx is done. It returns at
// once if there is room now.
func (s *Serial) WaitInputSpace(ctx context.Context) error {
	for {
		s.mu.Lock()
		room := !s.loopback() && (s.rxLen < s.rxCap() || s.rxqLen < s.rxqCap)
		s.mu.Unlock()
		if room {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.rxSpace:
		}
	}
}

// InputFrom copies r into the guest's receive FIFO, waiting for the guest
// to make room, until r fails (io.EOF gives nil) or ctx is done. It holds
// at most 256 bytes read from r but not yet accepted. Because it waits for
// the guest before reading on, r must not be a filter that has to see
// every key at once (a console escape): read such a source yourself and
// hand its bytes to Inject. A Read blocked inside r returns only when r
// does: to stop promptly, use a reader that can be unblocked (see
// internal/console.Input).
func (s *Serial) InputFrom(ctx context.Context, r io.Reader) error {
	buf := make([]byte, 256)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := r.Read(buf)
		p := buf[:n]
		for len(p) > 0 {
			p = p[s.Input(p):]
			if len(p) > 0 {
				if err := s.WaitInputSpace(ctx); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// Run writes the guest's output to Out as it comes until ctx is done, then
// writes what is still buffered for at most FlushTimeout (not at all when
// Out is stalled) and returns. Bytes it could not write are counted in
// OutLost. Run may be called once; a Serial whose Run context ended no
// longer drives its IRQ line, as the machine around it is going away.
func (s *Serial) Run(ctx context.Context) error {
	defer close(s.runDone)
	stop := context.AfterFunc(ctx, s.beginEnd)
	defer stop()
	hold := time.NewTimer(serialGather)
	hold.Stop()
	for {
		select {
		case <-ctx.Done():
			s.beginEnd()
			s.Flush()
			if s.deadline != nil {
				_ = s.deadline.SetWriteDeadline(time.Time{})
			}
			return ctx.Err()
		case <-s.txReady:
			s.gather(ctx, hold)
		}
	}
}

// serialGather is how long Run holds output that follows a write to Out,
// so that a guest printing a byte per exit costs a write per line, not
// per byte. Output after a quiet spell goes out at once.
const serialGather = time.Millisecond

// gather writes out what is buffered, then holds what follows for up to
// serialGather, writing early when a line ends or the buffer fills, until
// a hold passes with nothing new.
func (s *Serial) gather(ctx context.Context, hold *time.Timer) {
	for {
		s.Flush()
		s.mu.Lock()
		s.holding = true
		s.mu.Unlock()
		select {
		case <-s.txReady: // sent before the hold began: what it announced is held now
		default:
		}
		hold.Reset(serialGather)
		select {
		case <-hold.C:
		case <-s.txReady:
			hold.Stop()
		case <-ctx.Done():
			hold.Stop()
		}
		s.mu.Lock()
		s.holding = false
		more := len(s.tx) > 0
		s.mu.Unlock()
		if !more || ctx.Err() != nil {
			return // Run's final flush takes the rest when ctx ended
		}
	}
}

// beginEnd starts the final flush: it fixes its deadline and hands it to
// Out when Out takes deadlines, cutting a blocked Write short.
func (s *Serial) beginEnd() {
	s.mu.Lock()
	if s.ending {
		s.mu.Unlock()
		return
	}
	s.ending = true
	s.endBy = time.Now().Add(s.flushFor)
	if s.stalled {
		s.endBy = time.Now()
	}
	endBy := s.endBy
	s.mu.Unlock()
	if s.deadline != nil {
		_ = s.deadline.SetWriteDeadline(endBy)
	}
}

// WaitRun waits until Run has returned, for at most d, and says whether it
// did. A VMM uses it at shutdown so that a writer without deadlines that
// blocks forever cannot hold it: past FlushTimeout, it moves on.
func (s *Serial) WaitRun(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.runDone:
		return true
	case <-t.C:
		return false
	}
}

// FlushTimeout is the bound Run puts on its final flush.
func (s *Serial) FlushTimeout() time.Duration { return s.flushFor }

// Flush writes all buffered output to Out now, in order, and returns when
// Out has taken it (or, once Run's context ended, when FlushTimeout has
// passed). Run calls it; so may a test.
func (s *Serial) Flush() {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	for {
		s.mu.Lock()
		chunk := s.tx
		if len(chunk) == 0 {
			s.mu.Unlock()
			return
		}
		wasFull := s.txFull()
		s.tx, s.txSpare = s.txSpare[:0], nil
		if wasFull {
			// The transmitter was holding the guest back; THRE is back,
			// and so is its interrupt.
			if s.ier&ierTHRI != 0 {
				s.thrIntr = true
			}
			s.updateIRQ()
		}
		s.mu.Unlock()
		s.writeOut(chunk)
		s.mu.Lock()
		s.txSpare = chunk[:0]
		s.mu.Unlock()
	}
}

// writeOut hands chunk to Out piece by piece, watching for a stall, and
// counts what Out does not take.
func (s *Serial) writeOut(chunk []byte) {
	for len(chunk) > 0 {
		s.mu.Lock()
		if s.txBroke || s.ending && (s.stalled || !time.Now().Before(s.endBy)) {
			s.stats.OutLost += uint64(len(chunk))
			s.mu.Unlock()
			return
		}
		s.writing = true
		s.writeSeq++
		seq := s.writeSeq
		s.mu.Unlock()
		timer := time.AfterFunc(s.stallAfter, func() { s.markStalled(seq) })
		n, err := s.out.Write(chunk[:min(len(chunk), serialWritePiece)])
		timer.Stop()
		s.mu.Lock()
		s.writing = false
		s.stalled = false
		n = max(0, min(n, len(chunk)))
		s.stats.Written += uint64(n)
		chunk = chunk[n:]
		if err != nil {
			s.stats.OutLost += uint64(len(chunk))
			chunk = nil
			if !s.txBroke && !(s.ending && errors.Is(err, os.ErrDeadlineExceeded)) {
				s.txBroke = true
				s.log.Error("serial: console output failed; discarding further guest output", "err", err)
			}
		}
		s.mu.Unlock()
	}
}

// markStalled runs when Write number seq has taken StallTimeout: Out is
// stalled, so the transmitter takes bytes again (and drops what does not
// fit) rather than hold the guest.
func (s *Serial) markStalled(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.writing || s.writeSeq != seq || s.stalled {
		return
	}
	s.stalled = true
	if s.ier&ierTHRI != 0 {
		s.thrIntr = true
	}
	s.updateIRQ()
}
