// Package proto is the wire protocol between Corral (the host) and
// corral-agent (the guest): one package used by both ends, so they cannot
// disagree on a layout.
//
// # Connections
//
// One connection carries one session: either one command (Exec) or one
// power-off request, after a Setup on that connection from version 5. Concurrent commands use concurrent connections. vsock
// connections are cheap and the kernel already multiplexes them, so one
// connection per command keeps a session's state small, isolates a failure
// to its command, and needs no session ids. Within a connection, stdin,
// stdout and stderr are multiplexed as streams, each with its own
// credit-based flow control (below), so a stalled stdout never holds stderr,
// signals, resizes or the exit status.
//
// # Frames
//
// Every message is one frame: an 8-byte header followed by Length bytes of
// payload. All integers are little-endian.
//
//	offset size field
//	0      1    Type    message type (Type* constants)
//	1      1    Stream  StreamStdin, StreamStdout or StreamStderr for Data,
//	                    Close and Credit; 0 for every other type
//	2      2    Reserved, must be 0
//	4      4    Length  payload length; at most MaxPayload(Type)
//
// A reader checks the header before it allocates anything: an unknown
// type, a wrong stream, a non-zero reserved field or a length above the
// type's bound is a protocol error (ErrProtocol) and ends the session. No
// frame needs more than MaxExecPayload (1 MiB) of memory.
//
// # Messages
//
// Host to agent:
//
//	Hello    magic "CRLA", u16 min version, u16 max version (8 bytes)
//	Exec     the command (see Exec); first message after Hello
//	PowerOff empty; instead of Exec: sync and power the machine off (from
//	         version 4 the Ack comes after the sync: SyncedPowerOffVersion)
//	Setup    (version 2) instead of Exec: the root switch and share mounts
//	         an agent started with corral.setup=deferred left for the host
//	         (see Setup); answered by Ack, or Error; from version 5 an
//	         Exec or PowerOff may follow the Ack on the same connection
//	Data     stream stdin: bytes for the command's standard input
//	Close    stream stdin: end of standard input (on a terminal the agent
//	         types the end-of-file character, ^D, instead)
//	Credit   stream stdout or stderr: u32 bytes the host can take more
//	Signal   u32 signal number, u32 flags (SignalGroup: the process group)
//	Resize   u16 rows, u16 columns of the pseudo-terminal
//
// Agent to host:
//
//	Hello    magic "CRLA", u16 version, u16 version: the version chosen
//	Started  u32 pid: the command runs
//	Data     stream stdout or stderr: output bytes, live
//	Close    stream stdout or stderr: end of that output; stream stdin:
//	         the command closed its standard input (send no more)
//	Credit   stream stdin: u32 bytes the agent can take more
//	Exit     u8 kind (ExitCode or ExitSignal), u8 flags (ExitCoreDumped,
//	         ExitOOM), u16 reserved, i32 exit code or signal number
//	Error    u16 code, u16 reserved, message (at most MaxErrorMessage bytes);
//	         ends the session
//	Ack      empty: the power-off request was accepted (version 4: and the
//	         file systems synced), or Setup done
//
// # Session
//
// The host sends Hello; the agent answers Hello with the version it chose,
// or Error with code ErrVersion and closes. The host then sends Exec and
// grants the agent credit for stdout and stderr. The agent answers Started
// (or Error with ErrStart when the command could not be started) and
// grants credit for stdin. Data, Credit, Signal and Resize then flow both
// ways. When the command has exited and its output is complete, the agent
// sends Close for stdout and stderr (a terminal session only has stdout),
// then Exit, and closes the connection: Exit is always the last frame, so
// the host has every output byte when it sees the status.
//
// # Flow control
//
// A sender may have at most as many Data bytes in flight on a stream as the
// receiver has granted with Credit frames; Data beyond the grant is a
// protocol error. A receiver grants credit only once it has passed bytes on
// (the host after its Stdout writer returned, the agent after the
// command's pipe took them), so a slow reader at either end stops the
// writer at the other end: the agent stops reading the command's pipe and
// the command blocks in write(2). Nothing is dropped and nothing is
// buffered beyond the grant (MaxWindow at most). Credit is never a reason
// to stop reading the connection, so control messages always get through.
//
// # Versions
//
// Version is the version this package speaks; MinVersion the oldest it
// still accepts. Any change to a layout or to the meaning of a message,
// and any new message type, makes a new version: a reader of version N
// rejects types it does not know instead of skipping them. In Hello the
// host offers a range; the agent picks the highest version both speak or
// refuses with ErrVersion, naming both ranges. Version 2 added Setup; a
// host that negotiated version 1 does not send it, and an agent refuses it
// in a version 1 session as a protocol error. Version 3 added Setup's host
// name and tmpfs paths (flag SetupSystem) and the read-write root
// ("9p:TAG:rw"); a version 2 session carries neither. Version 4 made the
// power-off Ack wait for the sync. Version 5 (ExecAfterSetupVersion) lets
// a session go on after Setup's Ack: the host may send one more request,
// Exec or PowerOff (not another Setup), which the agent serves as if it
// came after Hello on a new connection; the agent waits for it without a
// deadline, and a host that has none closes the connection. In a session
// of version 4 or less the agent closes the connection after the Ack, as
// older agents do, so a host must not send anything after it. Version 6
// (ResolvedVersion) added Exec's flag ExecResolved: the program's path as
// the host found it in PATH in its own root, with every path that lookup
// examined, which the agent may use instead of its own search (a warm
// exec's 9P round trips); a version 5 session does not carry it.
package proto
