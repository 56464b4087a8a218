/*
 * fault: prints a line, loads an empty IDT and executes ud2. #UD cannot be
 * delivered, nor #GP, nor #DF: the CPU triple-faults, which the VMM sees as a
 * shutdown (KVM_EXIT_SHUTDOWN). If the guest somehow continues it says so and
 * exits with EXIT_FAULT_SURVIVED.
 */
#include "lib.h"

int guest_main(u64 start_info_paddr)
{
	start_info_init(start_info_paddr);
	printf("corral-guest: triple-faulting (ud2, empty IDT)\n");
	struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) idtr = {0, 0};
	__asm__ volatile("lidt %0; ud2" : : "m"(idtr) : "memory");
	printf("corral-guest: survived ud2\n");
	return EXIT_FAULT_SURVIVED;
}
