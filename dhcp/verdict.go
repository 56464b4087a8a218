package dhcp

// Verdict says what HandleFrame did with one frame: the message type of the
// reply it built, an accepted message that needs no reply, a frame that was
// not for the DHCP server, or the reason the frame was dropped. Its String
// form is the name of the counter it increments.
type Verdict uint8

// Verdicts. The Drop* verdicts are malformed, refused or unserviceable input;
// README.md explains each one.
const (
	verdictNone Verdict = iota // internal: processing continues; never returned

	VerdictOffer       // a DHCPOFFER was built
	VerdictAck         // a DHCPACK was built (REQUEST or INFORM)
	VerdictNak         // a DHCPNAK was built
	VerdictRelease     // a DHCPRELEASE freed the client's lease; no reply
	VerdictDecline     // a DHCPDECLINE quarantined the address; no reply
	VerdictOtherServer // the client addressed another server (option 54); no reply
	VerdictNotDHCP     // not a frame for this DHCP server; the caller may deliver it elsewhere
	// VerdictUnknownClient: a REQUEST in INIT-REBOOT, RENEWING or REBINDING
	// state from a client this server has no record of, and Config.Authoritative
	// is off: RFC 2131 4.3.2 says stay silent, so there is no reply.
	VerdictUnknownClient
	// VerdictVLANTagged: the frame carries one or more 802.1Q/802.1ad tags. The
	// server serves no VLAN, so the frame is not for it: no reply; the caller
	// may deliver it elsewhere, as with VerdictNotDHCP.
	VerdictVLANTagged

	DropEthShort         // shorter than an Ethernet header
	DropSrcMAC           // source MAC is multicast, broadcast or zero
	DropIPShort          // shorter than a minimal IPv4 header
	DropIPVersion        // EtherType IPv4 but version field is not 4
	DropIPHeaderLength   // IHL below 5 or past the end of the frame
	DropIPChecksum       // IPv4 header checksum wrong
	DropIPLength         // IPv4 total length shorter than its header or past the end of the frame
	DropIPFragment       // UDP in a fragmented IPv4 datagram (MF set or offset non-zero)
	DropUDPLength        // UDP header cut off, or UDP length below 8 or past the IPv4 payload
	DropUDPChecksum      // UDP checksum present and wrong
	DropUDPSrcPort       // source port not 68 (or 67 for a relay with giaddr set)
	DropRateLimited      // the source MAC (or all sources together) exceeded the rate limit
	DropBOOTPShort       // UDP payload shorter than the BOOTP header plus magic cookie
	DropBOOTPOp          // op is not BOOTREQUEST
	DropBOOTPHtype       // htype is not Ethernet (1)
	DropBOOTPHlen        // hlen above 16, or not 6 for Ethernet
	DropMagicCookie      // options do not start with 99.130.83.99
	DropOptionOverrun    // an option's length runs past the end of its field
	DropOptionMissingEnd // an options field (or overloaded sname/file) has no END option
	DropOptionOverload   // option 52 malformed, repeated, or found inside sname/file
	DropOptionLength     // a known option has a length its type forbids (zero, too short, wrong multiple)
	DropOptionCount      // more option fragments than the decoder keeps (256)
	DropNoMessageType    // no option 53: plain BOOTP, which this server does not answer
	DropMessageType      // option 53 is a server-to-client or unknown message type
	DropMACNotAllowed    // chaddr or source MAC is not one the guest's NIC owns
	DropRelay            // giaddr set to an address outside the served subnet
	DropBadRequest       // a message lacks what RFC 2131 requires of its kind (e.g. INFORM without ciaddr)
	DropNotLeased        // DECLINE or RELEASE for an address not leased to that client
	DropPoolExhausted    // no address left to offer
	DropTableFull        // the lease table is full of live leases

	numVerdicts
)

// String returns the verdict's counter name, e.g. "offer" or "drop_ip_checksum".
func (v Verdict) String() string {
	if int(v) < len(counterNames) && v < numVerdicts {
		return counterNames[v]
	}
	return "unknown"
}

// IsDrop reports whether the verdict is a dropped frame (a Drop* constant).
func (v Verdict) IsDrop() bool { return v >= DropEthShort && v < numVerdicts }

// HasReply reports whether the verdict comes with a reply frame.
func (v Verdict) HasReply() bool { return v == VerdictOffer || v == VerdictAck || v == VerdictNak }
