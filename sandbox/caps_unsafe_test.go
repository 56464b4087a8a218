//go:build linux && amd64

package sandbox

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// capSets returns the calling thread's effective, permitted and
// inheritable capability sets.
func capSets() (eff, prm, inh uint64, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, 0, 0, err
	}
	join := func(lo, hi uint32) uint64 { return uint64(lo) | uint64(hi)<<32 }
	return join(data[0].Effective, data[1].Effective), join(data[0].Permitted, data[1].Permitted),
		join(data[0].Inheritable, data[1].Inheritable), nil
}

// hasCap reports whether the calling thread's effective set holds c.
func hasCap(c int) bool {
	eff, _, _, err := capSets()
	return err == nil && eff&(1<<c) != 0
}

// dropSysAdmin removes CAP_SYS_ADMIN from the effective and permitted
// sets of every thread, keeping the rest.
func dropSysAdmin() error {
	eff, prm, inh, err := capSets()
	if err != nil {
		return err
	}
	const sa = 1 << unix.CAP_SYS_ADMIN
	eff, prm = eff&^sa, prm&^sa
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(eff), Permitted: uint32(prm), Inheritable: uint32(inh)},
		{Effective: uint32(eff >> 32), Permitted: uint32(prm >> 32), Inheritable: uint32(inh >> 32)},
	}
	err = allThreads("capset", unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	return err
}
