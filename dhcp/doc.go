// Package dhcp is Corral's built-in DHCPv4 server. Its entry point,
// Server.HandleFrame, takes one raw Ethernet frame a guest's NIC sent and
// returns the frame to deliver back, so the whole server can be tested and
// fuzzed without KVM. Everything in a frame is treated as hostile: see
// README.md for the threat model and the meaning of every counter.
package dhcp
