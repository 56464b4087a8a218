package corral

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
	"github.com/corral-vmm/corral/virtio/vsock"
)

func TestVsockValidate(t *testing.T) {
	dir := t.TempDir()
	taken := filepath.Join(dir, "taken")
	if err := os.WriteFile(taken, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []Vsock{
		{CID: 1}, {CID: 2}, {CID: 0xffffffff}, {CID: 1 << 40},
		{UDSPath: "/" + strings.Repeat("x", maxUDSPath)},
		{UDSPath: taken},
		{UDSPath: filepath.Join(dir, "absent", "v.sock")},
	} {
		if err := v.validate(); err == nil {
			t.Errorf("%+v accepted", v)
		}
	}
	for _, v := range []Vsock{{}, {CID: 3}, {CID: 0xfffffffe, UDSPath: filepath.Join(dir, "v.sock")}} {
		if err := v.validate(); err != nil {
			t.Errorf("%+v: %v", v, err)
		}
	}
	c := Config{Kernel: "x", Vsock: &Vsock{CID: 2}}
	if err := c.Validate(); !errors.Is(err, ErrConfig) {
		t.Errorf("Validate: %v, want ErrConfig", err)
	}
}

// readPCIConfig reads a dword of slot's configuration space through the
// I/O ports, as the guest does.
func readPCIConfig(m *Machine, slot, off int) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], 0x8000_0000|uint32(slot)<<11|uint32(off))
	m.pio.Write(pci.ConfigAddressPort, b[:])
	m.pio.Read(pci.ConfigAddressPort+4, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// A machine with Vsock has a virtio-vsock function (1af4:1053) on the PCI
// bus after the NICs, its UDS socket from New to Close, and the Go API;
// DialVsock says the driver is not up in a machine that never ran, and a
// machine without Vsock has none of it.
func TestVsockOnPCIBus(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "hello")
	uds := filepath.Join(t.TempDir(), "v.sock")
	m, err := New(Config{Kernel: k, Memory: 64 << 20, Vsock: &Vsock{CID: 7, UDSPath: uds}})
	if err != nil {
		t.Fatal(err)
	}
	if id := readPCIConfig(m, 1, 0); id != 0x1053_1af4 {
		t.Errorf("slot 1 vendor/device %#x, want 0x10531af4 (virtio-vsock)", id)
	}
	if _, err := os.Stat(uds); err != nil {
		t.Errorf("UDS socket: %v", err)
	}
	if _, err := m.DialVsock(context.Background(), 1); !errors.Is(err, vsock.ErrNotRunning) {
		t.Errorf("DialVsock before the driver: %v", err)
	}
	l, err := m.ListenVsock(80)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if _, err := os.Stat(uds); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("UDS socket after Close: %v", err)
	}

	m, err = New(Config{Kernel: k, Memory: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.DialVsock(context.Background(), 1); !errors.Is(err, ErrNoVsock) {
		t.Errorf("DialVsock without Vsock: %v", err)
	}
	if _, err := m.ListenVsock(1); !errors.Is(err, ErrNoVsock) {
		t.Errorf("ListenVsock without Vsock: %v", err)
	}
	if id := readPCIConfig(m, 1, 0); id&0xffff == 0x1af4 {
		t.Errorf("slot 1 holds %#x without any device configured", id)
	}
}
