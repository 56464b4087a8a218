package vsock

import "sync/atomic"

// Counters are the device's counters since New. Every packet the guest
// sent is counted once in TxPackets and, when it was refused, in one of the
// Drop*/Reset* counters too.
type Counters struct {
	TxPackets uint64 // packets the guest sent (tx queue chains taken)
	TxBytes   uint64 // stream bytes the guest sent and the host side accepted
	RxPackets uint64 // packets the device put in the guest's rx queue
	RxBytes   uint64 // stream bytes delivered to the guest

	Conns       uint64 // connections in the table now (a gauge)
	Accepted    uint64 // guest connections accepted (listener or Unix socket)
	Dialed      uint64 // host connections the guest accepted
	Refused     uint64 // guest REQUESTs refused: no listener, backlog full, Unix socket absent
	TableFull   uint64 // REQUESTs and Dials refused because MaxConns connections exist
	DialRefused uint64 // host Dials the guest answered with RST

	DropAddress      uint64 // packets with a source CID not the guest's or a destination not the host
	ResetBadLen      uint64 // len past the chain's payload or MaxPayload: RST
	ResetType        uint64 // not a stream packet: RST
	ResetOp          uint64 // unknown op: RST
	ResetNoConn      uint64 // packets (other than REQUEST and RST) for no connection: RST
	ResetProtocol    uint64 // ops the connection's state does not allow (a second REQUEST, RW after SHUTDOWN SEND): RST
	CreditViolations uint64 // RW past the credit the device gave: the connection is reset
	CreditLies       uint64 // fwd_cnt figures that claim more than was sent: ignored
	Discarded        uint64 // stream bytes dropped because the host side had closed
	ProtocolErrors   uint64 // malformed chains that stopped the device (also reported to Activation.Fail)
	TransportResets  uint64 // TRANSPORT_RESET events raised
}

type counter int

const (
	cTxPackets counter = iota
	cTxBytes
	cRxPackets
	cRxBytes
	cConns
	cAccepted
	cDialed
	cRefused
	cTableFull
	cDialRefused
	cDropAddress
	cResetBadLen
	cResetType
	cResetOp
	cResetNoConn
	cResetProtocol
	cCreditViolations
	cCreditLies
	cDiscarded
	cProtocolErrors
	cTransportResets
	numCounters
)

// counters is safe for concurrent use.
type counters [numCounters]atomic.Uint64

func (c *counters) add(i counter, n uint64) { c[i].Add(n) }
func (c *counters) inc(i counter)           { c[i].Add(1) }
func (c *counters) dec(i counter)           { c[i].Add(^uint64(0)) }

func (c *counters) snapshot() Counters {
	return Counters{
		TxPackets: c[cTxPackets].Load(), TxBytes: c[cTxBytes].Load(),
		RxPackets: c[cRxPackets].Load(), RxBytes: c[cRxBytes].Load(),
		Conns: c[cConns].Load(), Accepted: c[cAccepted].Load(), Dialed: c[cDialed].Load(),
		Refused: c[cRefused].Load(), TableFull: c[cTableFull].Load(), DialRefused: c[cDialRefused].Load(),
		DropAddress: c[cDropAddress].Load(), ResetBadLen: c[cResetBadLen].Load(),
		ResetType: c[cResetType].Load(), ResetOp: c[cResetOp].Load(),
		ResetNoConn: c[cResetNoConn].Load(), ResetProtocol: c[cResetProtocol].Load(),
		CreditViolations: c[cCreditViolations].Load(), CreditLies: c[cCreditLies].Load(),
		Discarded: c[cDiscarded].Load(), ProtocolErrors: c[cProtocolErrors].Load(),
		TransportResets: c[cTransportResets].Load(),
	}
}
