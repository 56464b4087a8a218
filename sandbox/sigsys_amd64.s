//go:build linux && amd64

#include "go_asm.h"
#include "textflag.h"

// The SIGSYS handler for SECCOMP_RET_TRAP. The kernel calls it directly
// (SA_SIGINFO|SA_ONSTACK, on the thread's Go signal stack, every signal
// blocked), never the Go runtime, so it uses no Go stack, heap or
// scheduler: it formats one line on stderr,
//	corral: seccomp: forbidden system call NAME (NR), args 0xA0 0xA1; ...
// then dies of SIGSYS (so shells and audit see a signal death), falling
// back to exit_group(159). It never returns.

#define SIGINFO_SYSCALL 24 // siginfo_t._sifields._sigsys._syscall
#define UC_RDI 104         // ucontext_t.uc_mcontext.gregs[REG_RDI]: 40 + 8*8
#define UC_RSI 112         // gregs[REG_RSI]
#define SYS_write 1
#define SYS_rt_sigaction 13
#define SYS_rt_sigprocmask 14
#define SYS_getpid 39
#define SYS_gettid 186
#define SYS_tgkill 234
#define SYS_exit_group 231
#define SIGSYS 31

// COPY appends CX bytes at SI to DI.
#define COPY CLD; REP; MOVSB

DATA prefix<>+0(SB)/8, $"corral: "
DATA prefix<>+8(SB)/8, $"seccomp:"
DATA prefix<>+16(SB)/8, $" forbidd"
DATA prefix<>+24(SB)/8, $"en syste"
DATA prefix<>+32(SB)/8, $"m call  "
GLOBL prefix<>(SB), RODATA, $40
#define PREFIX_LEN 39

DATA suffix<>+0(SB)/8, $"; stoppe"
DATA suffix<>+8(SB)/8, $"d (docs/"
DATA suffix<>+16(SB)/8, $"security"
DATA suffix<>+24(SB)/8, $".md)\n   "
GLOBL suffix<>(SB), RODATA, $32
#define SUFFIX_LEN 29

DATA hexdigits<>+0(SB)/8, $"01234567"
DATA hexdigits<>+8(SB)/8, $"89abcdef"
GLOBL hexdigits<>(SB), RODATA, $16

// func sigsysHandlerAddr() uintptr
TEXT ·sigsysHandlerAddr(SB), NOSPLIT, $0-8
	MOVQ $·sigsysHandler(SB), AX
	MOVQ AX, ret+0(FP)
	RET

// func sigsysHandler()
TEXT ·sigsysHandler(SB), NOSPLIT|NOFRAME, $0
	MOVL SIGINFO_SYSCALL(SI), R12
	MOVQ UC_RDI(DX), R13
	MOVQ UC_RSI(DX), R14
	ANDQ $~15, SP
	SUBQ $256, SP
	MOVQ SP, R15
	MOVQ R15, DI

	LEAQ prefix<>(SB), SI
	MOVQ $PREFIX_LEN, CX
	COPY

	// The name, when the table has one: syscallNames is [N]string.
	CMPQ R12, $const_numSyscallNames
	JAE  number
	MOVQ R12, BX
	SHLQ $4, BX
	LEAQ ·syscallNames(SB), SI
	MOVQ 8(SI)(BX*1), CX
	MOVQ 0(SI)(BX*1), SI
	COPY

number:
	MOVB $' ', (DI)
	MOVB $'(', 1(DI)
	ADDQ $2, DI
	MOVQ R12, AX
	LEAQ 240(R15), R8
	MOVQ $10, R9

decloop:
	XORQ DX, DX
	DIVQ R9
	ADDQ $'0', DX
	DECQ R8
	MOVB DX, (R8)
	TESTQ AX, AX
	JNZ  decloop
	MOVQ R8, SI
	LEAQ 240(R15), CX
	SUBQ R8, CX
	COPY
	MOVB $')', (DI)
	MOVB $',', 1(DI)
	MOVB $' ', 2(DI)
	MOVB $'a', 3(DI)
	MOVB $'r', 4(DI)
	MOVB $'g', 5(DI)
	MOVB $'s', 6(DI)
	MOVB $' ', 7(DI)
	ADDQ $8, DI
	MOVQ R13, AX
	MOVB $'0', (DI)
	MOVB $'x', 1(DI)
	ADDQ $2, DI
	LEAQ 240(R15), R8
	LEAQ hexdigits<>(SB), SI

hexloop1:
	MOVQ AX, BX
	ANDQ $15, BX
	MOVB (SI)(BX*1), BX
	DECQ R8
	MOVB BX, (R8)
	SHRQ $4, AX
	TESTQ AX, AX
	JNZ  hexloop1
	MOVQ R8, SI
	LEAQ 240(R15), CX
	SUBQ R8, CX
	COPY
	MOVB $' ', (DI)
	INCQ DI
	MOVQ R14, AX

	MOVB $'0', (DI)
	MOVB $'x', 1(DI)
	ADDQ $2, DI
	LEAQ 240(R15), R8
	LEAQ hexdigits<>(SB), SI

hexloop2:
	MOVQ AX, BX
	ANDQ $15, BX
	MOVB (SI)(BX*1), BX
	DECQ R8
	MOVB BX, (R8)
	SHRQ $4, AX
	TESTQ AX, AX
	JNZ  hexloop2
	MOVQ R8, SI
	LEAQ 240(R15), CX
	SUBQ R8, CX
	COPY

	LEAQ suffix<>(SB), SI
	MOVQ $SUFFIX_LEN, CX
	COPY

	// write(2, buf, DI-buf)
	MOVQ DI, DX
	SUBQ R15, DX
	MOVQ R15, SI
	MOVQ $2, DI
	MOVQ $SYS_write, AX
	SYSCALL

	// SIGSYS back to its default action, unblocked, and sent to this
	// thread: the process dies of the signal seccomp raised.
	MOVQ $0, 0(R15)  // sa_handler = SIG_DFL
	MOVQ $0, 8(R15)  // sa_flags
	MOVQ $0, 16(R15) // sa_restorer
	MOVQ $0, 24(R15) // sa_mask
	MOVQ $SYS_rt_sigaction, AX
	MOVQ $SIGSYS, DI
	MOVQ R15, SI
	XORQ DX, DX
	MOVQ $8, R10
	SYSCALL
	MOVQ $(1<<(SIGSYS-1)), AX
	MOVQ AX, 32(R15)
	MOVQ $SYS_rt_sigprocmask, AX
	MOVQ $1, DI                  // SIG_UNBLOCK
	LEAQ 32(R15), SI
	XORQ DX, DX
	MOVQ $8, R10
	SYSCALL
	MOVQ $SYS_getpid, AX
	SYSCALL
	MOVQ AX, R12
	MOVQ $SYS_gettid, AX
	SYSCALL
	MOVQ AX, SI
	MOVQ R12, DI
	MOVQ $SIGSYS, DX
	MOVQ $SYS_tgkill, AX
	SYSCALL

	// Not reached unless the signal could not be sent.
	MOVQ $159, DI
	MOVQ $SYS_exit_group, AX
	SYSCALL
	INT  $3
