//go:build linux && amd64

package sandbox

import "golang.org/x/net/bpf"

//go:generate go run gen_program.go

// defaultProgram returns Filter{Mode: mode, Ioctls: DefaultIoctls(), PID:
// pid}.Program() from the table gen_program.go generated, which spares a
// starting VMM the generation (most of Apply's time in a cold process).
// TestDefaultProgramCurrent keeps the table equal to Program's output.
func defaultProgram(mode SeccompMode, pid int) []bpf.RawInstruction {
	prog := make([]bpf.RawInstruction, len(defaultProgramTemplate))
	copy(prog, defaultProgramTemplate[:])
	for _, i := range defaultProgramPIDSlots {
		prog[i].K = uint32(pid)
	}
	deny := mode.denyAction()
	for _, i := range defaultProgramDenySlots {
		prog[i].K = deny
	}
	return prog
}
