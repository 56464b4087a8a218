package kvm

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/corral-vmm/corral/internal/testenv/require"
)

// TestABIAgainstHeaders compiles a C program against <linux/kvm.h> and
// compares its request numbers and structure sizes with this package's.
func TestABIAgainstHeaders(t *testing.T) {
	cc, err := exec.LookPath("gcc")
	if err != nil {
		require.Missing(t, require.Tools, "gcc not found to read <linux/kvm.h> (apt-get install -y gcc)")
	}
	if _, err := os.Stat("/usr/include/linux/kvm.h"); err != nil {
		require.Missing(t, require.Tools, "/usr/include/linux/kvm.h missing (apt-get install -y linux-libc-dev)")
	}
	want := map[string]uint64{
		"KVM_GET_API_VERSION": kvmGetAPIVersion, "KVM_CREATE_VM": kvmCreateVM,
		"KVM_GET_MSR_INDEX_LIST": kvmGetMSRIndexList, "KVM_CHECK_EXTENSION": kvmCheckExtension,
		"KVM_GET_VCPU_MMAP_SIZE": kvmGetVCPUMmapSize, "KVM_GET_SUPPORTED_CPUID": kvmGetSupportedCPUID,
		"KVM_CREATE_VCPU": kvmCreateVCPU, "KVM_SET_USER_MEMORY_REGION": kvmSetUserMemoryRegion,
		"KVM_SET_TSS_ADDR": kvmSetTSSAddr, "KVM_SET_IDENTITY_MAP_ADDR": kvmSetIdentityMapAddr,
		"KVM_CREATE_IRQCHIP": kvmCreateIRQChip, "KVM_IRQ_LINE": kvmIRQLine,
		"KVM_SET_GSI_ROUTING": kvmSetGSIRouting, "KVM_IRQFD": kvmIRQFD, "KVM_CREATE_PIT2": kvmCreatePIT2,
		"KVM_IOEVENTFD": kvmIOEventFD, "KVM_SIGNAL_MSI": kvmSignalMSI, "KVM_RUN": kvmRun,
		"KVM_GET_REGS": kvmGetRegs, "KVM_SET_REGS": kvmSetRegs, "KVM_GET_SREGS": kvmGetSregs,
		"KVM_SET_SREGS": kvmSetSregs, "KVM_GET_MSRS": kvmGetMSRs, "KVM_SET_MSRS": kvmSetMSRs,
		"KVM_SET_FPU": kvmSetFPU, "KVM_GET_LAPIC": kvmGetLAPIC, "KVM_SET_LAPIC": kvmSetLAPIC,
		"KVM_SET_CPUID2": kvmSetCPUID2, "KVM_GET_MP_STATE": kvmGetMPState,
		"sizeof(struct kvm_regs)":                  uint64(unsafe.Sizeof(Regs{})),
		"sizeof(struct kvm_sregs)":                 uint64(unsafe.Sizeof(Sregs{})),
		"sizeof(struct kvm_segment)":               uint64(unsafe.Sizeof(Segment{})),
		"sizeof(struct kvm_fpu)":                   uint64(unsafe.Sizeof(FPU{})),
		"sizeof(struct kvm_lapic_state)":           uint64(unsafe.Sizeof(LAPICState{})),
		"sizeof(struct kvm_cpuid_entry2)":          cpuidEntrySize,
		"sizeof(struct kvm_msr_entry)":             msrEntrySize,
		"sizeof(struct kvm_irq_routing_entry)":     routingEntrySize,
		"offsetof(struct kvm_run, exit_reason)":    runExitReason,
		"offsetof(struct kvm_run, io)":             runUnion,
		"offsetof(struct kvm_sregs, efer)":         uint64(unsafe.Offsetof(Sregs{}.EFER)),
		"offsetof(struct kvm_fpu, mxcsr)":          uint64(unsafe.Offsetof(FPU{}.MXCSR)),
		"offsetof(struct kvm_run, immediate_exit)": 1,

		"KVM_GET_CPUID2": kvmGetCPUID2, "KVM_SET_MP_STATE": kvmSetMPState,
		"KVM_GET_VCPU_EVENTS": kvmGetVCPUEvents, "KVM_SET_VCPU_EVENTS": kvmSetVCPUEvents,
		"KVM_GET_DEBUGREGS": kvmGetDebugRegs, "KVM_SET_DEBUGREGS": kvmSetDebugRegs,
		"KVM_GET_TSC_KHZ": kvmGetTSCKHz, "KVM_SET_TSC_KHZ": kvmSetTSCKHz,
		"KVM_GET_XSAVE": kvmGetXSAVE, "KVM_SET_XSAVE": kvmSetXSAVE, "KVM_GET_XSAVE2": kvmGetXSAVE2,
		"KVM_GET_XCRS": kvmGetXCRs, "KVM_SET_XCRS": kvmSetXCRs,
		"KVM_GET_IRQCHIP": kvmGetIRQChip, "KVM_SET_IRQCHIP": kvmSetIRQChip,
		"KVM_GET_PIT2": kvmGetPIT2, "KVM_SET_PIT2": kvmSetPIT2,
		"KVM_GET_CLOCK": kvmGetClock, "KVM_SET_CLOCK": kvmSetClock,
		"KVM_CAP_XSAVE2": uint64(CapXSAVE2), "KVM_CAP_TSC_CONTROL": uint64(CapTSCControl),
		"KVM_CAP_XSAVE": uint64(CapXSAVE), "KVM_CAP_XCRS": uint64(CapXCRs), "KVM_CAP_DEBUGREGS": uint64(CapDebugRegs),
		"KVM_CAP_VCPU_EVENTS": uint64(CapVCPUEvents), "KVM_CAP_ADJUST_CLOCK": uint64(CapAdjustClock),
		"KVM_CAP_GET_TSC_KHZ": uint64(CapGetTSCKHz), "KVM_MP_STATE_SUSPENDED": maxMPState,
		"KVM_VCPUEVENT_VALID_TRIPLE_FAULT": VCPUEventValidTripleFault,
		"KVM_CLOCK_HOST_TSC":               ClockFlagHostTSC, "KVM_PIT_FLAGS_SPEAKER_DATA_ON": PITFlagSpeakerDataOn,
		"sizeof(struct kvm_xsave)":                                xsaveLegacySize,
		"sizeof(struct kvm_xcrs)":                                 xcrsSize,
		"sizeof(struct kvm_xcr)":                                  xcrEntrySize,
		"offsetof(struct kvm_xcrs, xcrs)":                         xcrsOffEntries,
		"offsetof(struct kvm_xcr, value)":                         xcrOffValue,
		"sizeof(struct kvm_debugregs)":                            uint64(unsafe.Sizeof(DebugRegs{})),
		"offsetof(struct kvm_debugregs, flags)":                   uint64(unsafe.Offsetof(DebugRegs{}.Flags)),
		"sizeof(struct kvm_vcpu_events)":                          uint64(unsafe.Sizeof(VCPUEvents{})),
		"offsetof(struct kvm_vcpu_events, sipi_vector)":           uint64(unsafe.Offsetof(VCPUEvents{}.SIPIVector)),
		"offsetof(struct kvm_vcpu_events, flags)":                 uint64(unsafe.Offsetof(VCPUEvents{}.Flags)),
		"offsetof(struct kvm_vcpu_events, smi)":                   uint64(unsafe.Offsetof(VCPUEvents{}.SMISMM)),
		"offsetof(struct kvm_vcpu_events, triple_fault)":          uint64(unsafe.Offsetof(VCPUEvents{}.TripleFaultPending)),
		"offsetof(struct kvm_vcpu_events, exception_has_payload)": uint64(unsafe.Offsetof(VCPUEvents{}.ExceptionHasPayload)),
		"offsetof(struct kvm_vcpu_events, exception_payload)":     uint64(unsafe.Offsetof(VCPUEvents{}.ExceptionPayload)),
		"sizeof(struct kvm_irqchip)":                              irqchipSize,
		"offsetof(struct kvm_irqchip, chip)":                      irqchipOffChip,
		"sizeof(struct kvm_pic_state)":                            uint64(unsafe.Sizeof(PICState{})),
		"offsetof(struct kvm_pic_state, elcr_mask)":               uint64(unsafe.Offsetof(PICState{}.ELCRMask)),
		"sizeof(struct kvm_ioapic_state)":                         uint64(unsafe.Sizeof(IOAPICState{})),
		"offsetof(struct kvm_ioapic_state, redirtbl)":             uint64(unsafe.Offsetof(IOAPICState{}.Redirtbl)),
		"sizeof(struct kvm_pit_channel_state)":                    uint64(unsafe.Sizeof(PITChannelState{})),
		"offsetof(struct kvm_pit_channel_state, gate)":            uint64(unsafe.Offsetof(PITChannelState{}.Gate)),
		"offsetof(struct kvm_pit_channel_state, count_load_time)": uint64(unsafe.Offsetof(PITChannelState{}.CountLoadTime)),
		"sizeof(struct kvm_pit_state2)":                           uint64(unsafe.Sizeof(PITState{})),
		"offsetof(struct kvm_pit_state2, flags)":                  uint64(unsafe.Offsetof(PITState{}.Flags)),
		"sizeof(struct kvm_clock_data)":                           uint64(unsafe.Sizeof(ClockData{})),
		"offsetof(struct kvm_clock_data, realtime)":               uint64(unsafe.Offsetof(ClockData{}.Realtime)),
		"offsetof(struct kvm_clock_data, host_tsc)":               uint64(unsafe.Offsetof(ClockData{}.HostTSC)),
	}
	var src strings.Builder
	src.WriteString("#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\nint main(void){\n")
	for k := range want {
		src.WriteString("printf(\"%s=%llu\\n\", \"" + k + "\", (unsigned long long)(" + k + "));\n")
	}
	src.WriteString("return 0;}\n")
	dir := t.TempDir()
	c := filepath.Join(dir, "abi.c")
	if err := os.WriteFile(c, []byte(src.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "abi")
	if out, err := exec.Command(cc, "-o", bin, c).CombinedOutput(); err != nil {
		t.Fatalf("compiling the ABI probe: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got, _ := strconv.ParseUint(v, 10, 64)
		if want[k] != got {
			t.Errorf("%s: C says %#x, package has %#x", k, got, want[k])
		}
	}
}
