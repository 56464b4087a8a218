/*
 * PVH entry and long-mode switch shared by every Corral test guest.
 *
 * The VMM (Corral or QEMU) enters pvh_start32 in 32-bit protected mode,
 * paging off, flat CS/DS/ES/SS, interrupts off, EBX = physical address of
 * struct hvm_start_info. Nothing else is promised: no stack, no GDT we may
 * keep, no IDT. This file
 *   1. prints "corral-guest: ready" from 32-bit code (no stack needed), so the
 *      first serial byte marks the earliest point the guest runs;
 *   2. loads its own GDT, enables PAE, loads the static identity-mapped page
 *      tables (0-1 GiB and 3-4 GiB with 2 MiB pages), sets EFER.LME and
 *      CR0.PG, and far-jumps to 64-bit code;
 *   3. calls guest_main(start_info_paddr) on a private stack and passes its
 *      return value to guest_exit (debug-exit port 0xf4).
 * enter_long_mode is also used by application processors (smp_trampoline.S).
 */

#define COM1_THR        0x3f8
#define COM1_LSR        0x3fd
#define LSR_THRE        0x20

#define SEL_CODE32      0x08
#define SEL_DATA        0x10
#define SEL_CODE64      0x18

#define CR0_PE          0x00000001
#define CR0_PG          0x80000000
#define CR4_PAE         0x00000020
#define MSR_EFER        0xc0000080
#define EFER_LME        0x00000100

#define PTE_P           0x001
#define PTE_RW          0x002
#define PTE_PWT         0x008
#define PTE_PCD         0x010
#define PTE_PS          0x080

#define BSP_STACK_SIZE  16384

/*
 * Xen PVH note: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY (18), a 32-bit
 * physical entry address. It is followed by an empty note (namesz = descsz =
 * type = 0) so that the four bytes after the entry address are zero: QEMU 7.2
 * reads the descriptor of a 64-bit ELF as a 64-bit word.
 */
	.section .note.Xen, "a"
	.p2align 2
	.long 4                 /* namesz: "Xen\0" */
	.long 4                 /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_start32
	.long 0, 0, 0           /* empty note, see above */

	.section .text.entry, "ax"
	.code32
	.globl pvh_start32
pvh_start32:
	cli
	cld
	mov	%ebx, %esi              /* keep start_info in ESI until C */

	/* "corral-guest: ready\n" straight from 32-bit code. */
	mov	$ready_msg, %edi
1:	movb	(%edi), %cl
	testb	%cl, %cl
	jz	3f
	mov	$COM1_LSR, %dx
2:	inb	%dx, %al
	testb	$LSR_THRE, %al
	jz	2b
	mov	$COM1_THR, %dx
	movb	%cl, %al
	outb	%al, %dx
	inc	%edi
	jmp	1b
3:
	lgdt	gdt_ptr
	mov	$SEL_DATA, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	ljmp	$SEL_CODE32, $4f
4:	mov	$bsp_stack_top, %esp
	mov	$bsp_entry64, %edi
	jmp	enter_long_mode

/*
 * enter_long_mode: 32-bit protected mode, paging off, our GDT loaded.
 * In: EDI = 64-bit code address to jump to. Preserves ESI, EBX, EBP, ESP.
 * Uses no stack.
 */
	.globl enter_long_mode
enter_long_mode:
	mov	%cr4, %eax
	or	$CR4_PAE, %eax
	mov	%eax, %cr4
	mov	$pml4, %eax
	mov	%eax, %cr3
	mov	$MSR_EFER, %ecx
	rdmsr
	or	$EFER_LME, %eax
	wrmsr
	mov	%cr0, %eax
	or	$(CR0_PG | CR0_PE), %eax
	mov	%eax, %cr0
	ljmp	$SEL_CODE64, $long_mode64

	.code64
long_mode64:
	mov	$SEL_DATA, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	%edi, %edi              /* zero-extend the target */
	jmp	*%rdi

bsp_entry64:
	mov	$bsp_stack_top, %rsp
	xor	%ebp, %ebp
	mov	%esi, %edi              /* guest_main(start_info paddr) */
	call	guest_main
	mov	%eax, %edi
	call	guest_exit
5:	cli
	hlt
	jmp	5b

	.section .rodata
ready_msg:
	.asciz "corral-guest: ready\n"

	.p2align 3
	.globl gdt
gdt:
	.quad 0                         /* 0x00 null */
	.quad 0x00cf9a000000ffff        /* 0x08 code, 32-bit, flat */
	.quad 0x00cf92000000ffff        /* 0x10 data, flat */
	.quad 0x00af9a000000ffff        /* 0x18 code, 64-bit */
gdt_end:
	/* smp_trampoline.S hard-codes this size in its own GDT pointer. */
	.if (gdt_end - gdt) != 32
	.error "GDT size changed: update GDT_LIMIT in smp_trampoline.S"
	.endif

	.p2align 3
	.globl gdt_ptr
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

/*
 * Identity map: PML4[0] -> PDPT; PDPT[0] -> 0-1 GiB (write-back),
 * PDPT[3] -> 3-4 GiB (uncached: LAPIC at 0xfee00000, IOAPIC at 0xfec00000).
 * Static data, so the guest spends no instructions building them.
 */
	.section .data.pagetables, "aw"
	.p2align 12
	.globl pml4
pml4:
	.quad pdpt + (PTE_P | PTE_RW)
	.fill 511, 8, 0

	.p2align 12
pdpt:
	.quad pd_low + (PTE_P | PTE_RW)
	.quad 0
	.quad 0
	.quad pd_high + (PTE_P | PTE_RW)
	.fill 508, 8, 0

	.p2align 12
pd_low:
	.set i, 0
	.rept 512
	.quad (i << 21) + (PTE_P | PTE_RW | PTE_PS)
	.set i, i + 1
	.endr

	.p2align 12
pd_high:
	.set i, 0
	.rept 512
	.quad 0xc0000000 + (i << 21) + (PTE_P | PTE_RW | PTE_PWT | PTE_PCD | PTE_PS)
	.set i, i + 1
	.endr

	.section .bss
	.p2align 4
bsp_stack:
	.skip BSP_STACK_SIZE
bsp_stack_top:

	.section .note.GNU-stack, "", @progbits
