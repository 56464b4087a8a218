/*
 * halt: prints "corral-guest: halted" and then halts forever with interrupts
 * off (cli; hlt), so a test can check that the VMM stops an idle guest.
 */
#include "lib.h"

int guest_main(u64 start_info_paddr)
{
	start_info_init(start_info_paddr);
	printf("corral-guest: halted\n");
	halt_forever();
}
