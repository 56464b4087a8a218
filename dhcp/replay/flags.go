package replay

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/corral-vmm/corral/dhcp"
)

// prefixFlag parses IP/PREFIX.
type prefixFlag struct{ p netip.Prefix }

func (f *prefixFlag) String() string {
	if !f.p.IsValid() {
		return ""
	}
	return f.p.String()
}

func (f *prefixFlag) Set(s string) error {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("want IP/PREFIX: %w", err)
	}
	f.p = p
	return nil
}

// addrFlag parses one IP address.
type addrFlag struct{ a netip.Addr }

func (f *addrFlag) String() string {
	if !f.a.IsValid() {
		return ""
	}
	return f.a.String()
}

func (f *addrFlag) Set(s string) error {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return err
	}
	f.a = a
	return nil
}

// addrListFlag parses IP[,IP...]; repeating the flag appends.
type addrListFlag struct{ a []netip.Addr }

func (f *addrListFlag) String() string {
	var s []string
	for _, a := range f.a {
		s = append(s, a.String())
	}
	return strings.Join(s, ",")
}

func (f *addrListFlag) Set(s string) error {
	for _, part := range strings.Split(s, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(part))
		if err != nil {
			return err
		}
		f.a = append(f.a, a)
	}
	return nil
}

// macFlag parses one MAC address; macListFlag appends on each use.
type macFlag struct{ hw net.HardwareAddr }

func (f *macFlag) String() string { return f.hw.String() }

func (f *macFlag) Set(s string) error {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return fmt.Errorf("want a 6-byte MAC such as 52:54:00:12:34:56")
	}
	f.hw = hw
	return nil
}

type macListFlag struct{ hw []net.HardwareAddr }

func (f *macListFlag) String() string {
	var s []string
	for _, hw := range f.hw {
		s = append(s, hw.String())
	}
	return strings.Join(s, ",")
}

func (f *macListFlag) Set(s string) error {
	var m macFlag
	if err := m.Set(s); err != nil {
		return err
	}
	f.hw = append(f.hw, m.hw)
	return nil
}

// poolFlag parses FIRST-LAST.
type poolFlag struct{ first, last netip.Addr }

func (f *poolFlag) String() string {
	if !f.first.IsValid() {
		return ""
	}
	return f.first.String() + "-" + f.last.String()
}

func (f *poolFlag) Set(s string) error {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return fmt.Errorf("want FIRST-LAST")
	}
	var err error
	if f.first, err = netip.ParseAddr(a); err != nil {
		return err
	}
	if f.last, err = netip.ParseAddr(b); err != nil {
		return err
	}
	return nil
}

// reserveFlag parses MAC=IP[,HOSTNAME]; repeatable.
type reserveFlag struct{ r []dhcp.Reservation }

func (f *reserveFlag) String() string {
	var s []string
	for _, r := range f.r {
		v := r.MAC.String() + "=" + r.IP.String()
		if r.Hostname != "" {
			v += "," + r.Hostname
		}
		s = append(s, v)
	}
	return strings.Join(s, " ")
}

func (f *reserveFlag) Set(s string) error {
	macStr, rest, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want MAC=IP[,HOSTNAME]")
	}
	var m macFlag
	if err := m.Set(macStr); err != nil {
		return err
	}
	ipStr, host, _ := strings.Cut(rest, ",")
	ip, err := netip.ParseAddr(ipStr)
	if err != nil {
		return err
	}
	f.r = append(f.r, dhcp.Reservation{MAC: m.hw, IP: ip, Hostname: host})
	return nil
}
