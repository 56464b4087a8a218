package dhcp

// DHCP option codes used by the server (RFC 2132 unless noted).
const (
	optPad              = 0
	optSubnetMask       = 1
	optTimeOffset       = 2
	optRouter           = 3
	optTimeServer       = 4
	optNameServer       = 5
	optDNS              = 6
	optLogServer        = 7
	optHostName         = 12
	optDomainName       = 15
	optInterfaceMTU     = 26
	optBroadcastAddr    = 28
	optNTPServers       = 42
	optRequestedIP      = 50
	optLeaseTime        = 51
	optOverload         = 52
	optMessageType      = 53
	optServerID         = 54
	optParamRequestList = 55
	optMessage          = 56
	optMaxMessageSize   = 57
	optRenewalTime      = 58
	optRebindingTime    = 59
	optVendorClass      = 60
	optClientID         = 61
	optClientFQDN       = 81  // RFC 4702
	optClasslessRoutes  = 121 // RFC 3442
	optEnd              = 255
)

// DHCP message types (option 53).
const (
	msgDiscover = 1
	msgOffer    = 2
	msgRequest  = 3
	msgDecline  = 4
	msgAck      = 5
	msgNak      = 6
	msgRelease  = 7
	msgInform   = 8
)

// Option overload values (option 52).
const (
	overloadFile  = 1
	overloadSname = 2
	overloadBoth  = 3
)

// minMaxMessageSize is the smallest legal maximum DHCP message size (option
// 57) and the size every DHCP client must accept (RFC 2131 section 2).
const minMaxMessageSize = 576

// maxClientIDLen bounds the client identifier (option 61) after RFC 3396
// concatenation; longer identifiers are refused as DropOptionLength.
const maxClientIDLen = 255

// optionLengthOK reports whether n is a length RFC 2132 (or the option's own
// RFC) allows for option code after RFC 3396 concatenation. Codes the server
// does not know accept any length, including zero (e.g. rapid commit, RFC 4039).
func optionLengthOK(code byte, n int) bool {
	switch code {
	case optSubnetMask, optTimeOffset, optBroadcastAddr, optRequestedIP, optLeaseTime,
		optServerID, optRenewalTime, optRebindingTime:
		return n == 4
	case optOverload, optMessageType:
		return n == 1
	case optInterfaceMTU, optMaxMessageSize:
		return n == 2
	case optRouter, optTimeServer, optNameServer, optDNS, optLogServer, optNTPServers:
		return n >= 4 && n%4 == 0
	case optHostName, optDomainName, optParamRequestList, optMessage, optVendorClass:
		return n >= 1
	case optClientID:
		// RFC 2132 says at least 2 (type and one byte), but clients sending a
		// 1-byte identifier exist and RFC 6842 has it echoed whatever it is:
		// accept 1..255, so every such client is served and echoed.
		return n >= 1 && n <= maxClientIDLen
	case optClientFQDN:
		return n >= 3
	case optClasslessRoutes:
		return n >= 5
	}
	return true
}
