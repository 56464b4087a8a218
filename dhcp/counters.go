package dhcp

import "reflect"

// counterID indexes the server's counter array. Values below numVerdicts are
// the verdicts themselves; the others count events that are not verdicts.
type counterID int

const (
	cFramesIn counterID = iota + counterID(numVerdicts)
	cRepliesOut
	cRxDiscover
	cRxRequest
	cRxDecline
	cRxRelease
	cRxInform
	cRequestSelecting
	cRequestInitReboot
	cRequestRenewing
	cRequestRebinding
	cLeaseEvictions
	cReplyOptionsOmitted
	cReplyBufferAlloc

	numCounters
)

// counterNames holds every counter's name, indexed by counterID (a Verdict
// converts to its counterID). It is read-only.
var counterNames = [numCounters]string{
	verdictNone:          "none",
	VerdictOffer:         "offer",
	VerdictAck:           "ack",
	VerdictNak:           "nak",
	VerdictRelease:       "release",
	VerdictDecline:       "decline",
	VerdictOtherServer:   "other_server",
	VerdictNotDHCP:       "not_dhcp",
	VerdictUnknownClient: "ignored_unknown_client",
	VerdictVLANTagged:    "ignored_vlan_tagged",
	DropEthShort:         "drop_eth_short",
	DropSrcMAC:           "drop_src_mac",
	DropIPShort:          "drop_ip_short",
	DropIPVersion:        "drop_ip_version",
	DropIPHeaderLength:   "drop_ip_header_length",
	DropIPChecksum:       "drop_ip_checksum",
	DropIPLength:         "drop_ip_length",
	DropIPFragment:       "drop_ip_fragment",
	DropUDPLength:        "drop_udp_length",
	DropUDPChecksum:      "drop_udp_checksum",
	DropUDPSrcPort:       "drop_udp_src_port",
	DropRateLimited:      "drop_rate_limited",
	DropBOOTPShort:       "drop_bootp_short",
	DropBOOTPOp:          "drop_bootp_op",
	DropBOOTPHtype:       "drop_bootp_htype",
	DropBOOTPHlen:        "drop_bootp_hlen",
	DropMagicCookie:      "drop_magic_cookie",
	DropOptionOverrun:    "drop_option_overrun",
	DropOptionMissingEnd: "drop_option_missing_end",
	DropOptionOverload:   "drop_option_overload",
	DropOptionLength:     "drop_option_length",
	DropOptionCount:      "drop_option_count",
	DropNoMessageType:    "drop_no_message_type",
	DropMessageType:      "drop_message_type",
	DropMACNotAllowed:    "drop_mac_not_allowed",
	DropRelay:            "drop_relay",
	DropBadRequest:       "drop_bad_request",
	DropNotLeased:        "drop_not_leased",
	DropPoolExhausted:    "drop_pool_exhausted",
	DropTableFull:        "drop_table_full",
	cFramesIn:            "frames_in",
	cRepliesOut:          "replies_out",
	cRxDiscover:          "rx_discover",
	cRxRequest:           "rx_request",
	cRxDecline:           "rx_decline",
	cRxRelease:           "rx_release",
	cRxInform:            "rx_inform",
	cRequestSelecting:    "request_selecting",
	cRequestInitReboot:   "request_init_reboot",
	cRequestRenewing:     "request_renewing",
	cRequestRebinding:    "request_rebinding",
	cLeaseEvictions:      "lease_evictions",
	cReplyOptionsOmitted: "reply_options_omitted",
	cReplyBufferAlloc:    "reply_buffer_alloc",
}

// Counters is a snapshot of the server's counters. Each field's `counter` tag
// is its name in Map and, for verdicts, the Verdict's String form. Fields are
// in counterID order (checked by a test).
type Counters struct {
	Offer       uint64 `counter:"offer"`        // DHCPOFFERs sent
	Ack         uint64 `counter:"ack"`          // DHCPACKs sent (REQUEST and INFORM)
	Nak         uint64 `counter:"nak"`          // DHCPNAKs sent
	Release     uint64 `counter:"release"`      // RELEASEs that freed a lease
	Decline     uint64 `counter:"decline"`      // DECLINEs that quarantined an address
	OtherServer uint64 `counter:"other_server"` // messages naming another server identifier
	NotDHCP     uint64 `counter:"not_dhcp"`     // frames not addressed to the DHCP server

	IgnoredUnknownClient uint64 `counter:"ignored_unknown_client"` // REQUESTs from unknown clients left unanswered (not Authoritative)
	IgnoredVLANTagged    uint64 `counter:"ignored_vlan_tagged"`    // 802.1Q/802.1ad-tagged frames (no VLAN is served)

	DropEthShort         uint64 `counter:"drop_eth_short"`          // see README.md
	DropSrcMAC           uint64 `counter:"drop_src_mac"`            // see README.md
	DropIPShort          uint64 `counter:"drop_ip_short"`           // see README.md
	DropIPVersion        uint64 `counter:"drop_ip_version"`         // see README.md
	DropIPHeaderLength   uint64 `counter:"drop_ip_header_length"`   // see README.md
	DropIPChecksum       uint64 `counter:"drop_ip_checksum"`        // see README.md
	DropIPLength         uint64 `counter:"drop_ip_length"`          // see README.md
	DropIPFragment       uint64 `counter:"drop_ip_fragment"`        // see README.md
	DropUDPLength        uint64 `counter:"drop_udp_length"`         // see README.md
	DropUDPChecksum      uint64 `counter:"drop_udp_checksum"`       // see README.md
	DropUDPSrcPort       uint64 `counter:"drop_udp_src_port"`       // see README.md
	DropRateLimited      uint64 `counter:"drop_rate_limited"`       // see README.md
	DropBOOTPShort       uint64 `counter:"drop_bootp_short"`        // see README.md
	DropBOOTPOp          uint64 `counter:"drop_bootp_op"`           // see README.md
	DropBOOTPHtype       uint64 `counter:"drop_bootp_htype"`        // see README.md
	DropBOOTPHlen        uint64 `counter:"drop_bootp_hlen"`         // see README.md
	DropMagicCookie      uint64 `counter:"drop_magic_cookie"`       // see README.md
	DropOptionOverrun    uint64 `counter:"drop_option_overrun"`     // see README.md
	DropOptionMissingEnd uint64 `counter:"drop_option_missing_end"` // see README.md
	DropOptionOverload   uint64 `counter:"drop_option_overload"`    // see README.md
	DropOptionLength     uint64 `counter:"drop_option_length"`      // see README.md
	DropOptionCount      uint64 `counter:"drop_option_count"`       // see README.md
	DropNoMessageType    uint64 `counter:"drop_no_message_type"`    // see README.md
	DropMessageType      uint64 `counter:"drop_message_type"`       // see README.md
	DropMACNotAllowed    uint64 `counter:"drop_mac_not_allowed"`    // see README.md
	DropRelay            uint64 `counter:"drop_relay"`              // see README.md
	DropBadRequest       uint64 `counter:"drop_bad_request"`        // see README.md
	DropNotLeased        uint64 `counter:"drop_not_leased"`         // see README.md
	DropPoolExhausted    uint64 `counter:"drop_pool_exhausted"`     // see README.md
	DropTableFull        uint64 `counter:"drop_table_full"`         // see README.md

	FramesIn            uint64 `counter:"frames_in"`             // frames passed to HandleFrame
	RepliesOut          uint64 `counter:"replies_out"`           // reply frames returned
	RxDiscover          uint64 `counter:"rx_discover"`           // well-formed DISCOVERs
	RxRequest           uint64 `counter:"rx_request"`            // well-formed REQUESTs
	RxDecline           uint64 `counter:"rx_decline"`            // well-formed DECLINEs
	RxRelease           uint64 `counter:"rx_release"`            // well-formed RELEASEs
	RxInform            uint64 `counter:"rx_inform"`             // well-formed INFORMs
	RequestSelecting    uint64 `counter:"request_selecting"`     // REQUESTs in SELECTING state (option 54 ours)
	RequestInitReboot   uint64 `counter:"request_init_reboot"`   // REQUESTs in INIT-REBOOT state
	RequestRenewing     uint64 `counter:"request_renewing"`      // REQUESTs in RENEWING state (unicast, ciaddr set)
	RequestRebinding    uint64 `counter:"request_rebinding"`     // REQUESTs in REBINDING state (broadcast, ciaddr set)
	LeaseEvictions      uint64 `counter:"lease_evictions"`       // lease records dropped to make room
	ReplyOptionsOmitted uint64 `counter:"reply_options_omitted"` // reply options left out to respect the size limit
	ReplyBufferAlloc    uint64 `counter:"reply_buffer_alloc"`    // replies for which the caller's buffer was too small
}

// counterArray is the server's live counter storage.
type counterArray [numCounters]uint64

// snapshot copies the counters into a Counters value.
func (a *counterArray) snapshot() Counters {
	var c Counters
	v := reflect.ValueOf(&c).Elem()
	for i := 0; i < v.NumField() && i+1 < len(a); i++ {
		v.Field(i).SetUint(a[i+1]) // field i holds counterID i+1 (verdictNone has no field)
	}
	return c
}

// Map returns the counters keyed by name ("drop_ip_checksum", "offer", ...).
func (c Counters) Map() map[string]uint64 {
	v := reflect.ValueOf(&c).Elem()
	t := v.Type()
	m := make(map[string]uint64, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		m[t.Field(i).Tag.Get("counter")] = v.Field(i).Uint()
	}
	return m
}

// Get returns the counter for verdict v.
func (c Counters) Get(v Verdict) uint64 {
	return c.Map()[v.String()]
}
