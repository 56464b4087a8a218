/*
 * Application-processor start-up path for the smp guest.
 *
 * smp_trampoline_start..smp_trampoline_end is copied by the BSP to a 4 KiB
 * page below 1 MiB (SMP_TRAMPOLINE_PAGE in smp.c); a SIPI with vector
 * page >> 12 starts the AP there in real mode with CS = page >> 4, IP = 0.
 * The trampoline loads the shared GDT (entry.S), sets CR0.PE and far-jumps
 * into ap_start32 in the main image, which reuses enter_long_mode. In 64-bit
 * mode each AP takes its own stack with lock xadd on ap_stack_next and calls
 * ap_main(); APs beyond the stack supply park without a stack.
 */

#define SEL_CODE32     0x08
#define SEL_DATA       0x10
#define AP_STACK_SIZE  4096
#define MAX_APS        63

	.section .rodata.trampoline, "a"
	.code16
	.globl smp_trampoline_start, smp_trampoline_end
smp_trampoline_start:
	cli
	cld
	lgdtl	%cs:TRAMP_GDTR_OFF
	mov	%cr0, %eax
	or	$1, %eax
	mov	%eax, %cr0
	ljmpl	$SEL_CODE32, $ap_start32

	.p2align 3
tramp_gdtr:
	.word GDT_LIMIT
	.long gdt
smp_trampoline_end:

	.set TRAMP_GDTR_OFF, tramp_gdtr - smp_trampoline_start
	/* The GDT in entry.S has four 8-byte descriptors (checked there). */
	.set GDT_LIMIT, 4 * 8 - 1

	.text
	.code32
ap_start32:
	mov	$SEL_DATA, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	$ap_entry64, %edi
	jmp	enter_long_mode

	.code64
ap_entry64:
	mov	$1, %eax
	lock xaddl %eax, ap_stack_next(%rip)
	cmp	$MAX_APS, %eax
	jae	1f
	inc	%eax
	shl	$12, %rax               /* AP_STACK_SIZE */
	add	$ap_stacks, %rax
	mov	%rax, %rsp
	xor	%ebp, %ebp
	call	ap_main
1:	cli
	hlt
	jmp	1b

	.section .bss
	.p2align 2
	.globl ap_stack_next
ap_stack_next:
	.long 0
	.p2align 12
ap_stacks:
	.skip AP_STACK_SIZE * MAX_APS

	.section .note.GNU-stack, "", @progbits
