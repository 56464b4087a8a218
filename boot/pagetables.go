package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/corral-vmm/corral/guestmem"
)

// Page table entry bits.
const (
	pteP  = 1 << 0 // present
	pteRW = 1 << 1 // writable
	ptePS = 1 << 7 // large page (2 MiB in a page directory)

	pageSize      = 0x1000
	largePageSize = 2 << 20
	ptEntries     = 512
	identityPDs   = 4 // page directories: 4 x 1 GiB = the first 4 GiB
)

// writePageTables writes identity page tables mapping guest physical
// [0, 4 GiB) with 2 MiB pages: PML4[0] -> PDPT, PDPT[0..3] -> the page
// directories at PDAddr.
func writePageTables(mem *guestmem.Memory) error {
	var page [pageSize]byte
	binary.LittleEndian.PutUint64(page[0:], PDPTAddr|pteP|pteRW)
	if err := mem.WriteAt(page[:], PML4Addr); err != nil {
		return fmt.Errorf("boot: writing PML4: %w", err)
	}
	clear(page[:])
	for i := range uint64(identityPDs) {
		binary.LittleEndian.PutUint64(page[i*8:], (PDAddr+i*pageSize)|pteP|pteRW)
	}
	if err := mem.WriteAt(page[:], PDPTAddr); err != nil {
		return fmt.Errorf("boot: writing PDPT: %w", err)
	}
	for d := range uint64(identityPDs) {
		for i := range uint64(ptEntries) {
			addr := (d*ptEntries + i) * largePageSize
			binary.LittleEndian.PutUint64(page[i*8:], addr|pteP|pteRW|ptePS)
		}
		if err := mem.WriteAt(page[:], PDAddr+d*pageSize); err != nil {
			return fmt.Errorf("boot: writing page directory %d: %w", d, err)
		}
	}
	return nil
}
