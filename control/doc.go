// Package control is a running machine's control socket: HTTP with JSON
// over a Unix socket (SocketName, mode 0600) in the machine's inventory
// directory, served by the VMM itself, so no daemon is needed.
//
//	GET  /v1/vm       the machine's state and record (Info)
//	POST /v1/stop     {"timeout": "10s"}: ask the guest to power off, stop it
//	                  hard after the timeout; answers when it has ended (Ended)
//	POST /v1/kill     stop it hard now; answers when it has ended (Ended)
//	GET  /metrics     the machine's counters, Prometheus text format 0.0.4
//	GET  /v1/metrics  the same counters as JSON ([]Metric), for corral ps
//
// Before it acts on any request the server checks the peer with
// SO_PEERCRED: only the machine's owner (the VMM's uid) or root may look or
// act. The file mode keeps other users from connecting at all; the peer
// check also holds when the socket was made reachable some other way.
// Client is the other end, for the corral command.
package control
