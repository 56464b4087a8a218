/*
 * spin: prints "corral-guest: spinning" and then loops forever on one
 * instruction (jmp .), so a test can check that the VMM stops a busy guest.
 */
#include "lib.h"

int guest_main(u64 start_info_paddr)
{
	start_info_init(start_info_paddr);
	printf("corral-guest: spinning\n");
	for (;;)
		__asm__ volatile("1: jmp 1b");
}
