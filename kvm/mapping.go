package kvm

import "reflect"

// RunMapping returns where this vCPU's kvm_run structure is mapped in the
// process and its length, so leak tests can check that Close unmapped it.
func (v *VCPU) RunMapping() (addr uintptr, size int) {
	return reflect.ValueOf(v.run).Pointer(), len(v.run)
}
