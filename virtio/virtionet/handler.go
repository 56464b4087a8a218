package virtionet

// FrameHandler sees the frames the guest transmits before the backend does,
// and may answer them. The device knows nothing of what a handler is for;
// a DHCP server (*dhcp.Server implements FrameHandler) is the usual one,
// wired in by the VMM. The device calls it from its transmit goroutines
// (one per queue pair), one Handle at a time, on frames without GSO whose
// partial checksum (if any) it has completed. Match may run concurrently.
type FrameHandler interface {
	// Match reports, cheaply and without side effects, whether Handle wants
	// the frame. Frames it does not match go straight to the backend.
	Match(frame []byte) bool
	// Handle takes a matched frame. It returns a reply frame for the guest
	// (built in out when it fits, or nil) and whether it consumed the frame:
	// a consumed frame never reaches the backend. frame is only valid during
	// the call; the reply only until the next call.
	Handle(frame, out []byte) (reply []byte, consumed bool)
	// ReplyBufferSize is the capacity out needs for Handle not to allocate.
	ReplyBufferSize() int
}
