package e2e

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

// blkMQScript reports each disk's blk-mq hardware queues, copies vda onto
// vdb, drops the guest's page cache and reads vdb back.
const blkMQScript = `t() { echo "corral-test: $*"; }
t "vda queues $(ls /sys/block/vda/mq | wc -l)"
t "vdb queues $(ls /sys/block/vdb/mq | wc -l)"
t "vda md5 $(md5sum </dev/vda | cut -d' ' -f1)"
dd if=/dev/vda of=/dev/vdb bs=64k conv=fsync 2>/dev/null
sync
echo 3 >/proc/sys/vm/drop_caches
t "vdb md5 $(md5sum </dev/vdb | cut -d' ' -f1)"
`

// TestBlkMultiqueueDirect boots Linux on smpCPUs vCPUs with two disks: a
// read-only raw image with the default queue count (one per vCPU: the
// kernel must see that many blk-mq hardware queues) and a writable loop
// device opened with O_DIRECT and one queue (a block device takes O_DIRECT
// whatever file system its backing file is on, /tmp's tmpfs included). The
// guest copies the first disk onto the second; the copy must be on the
// host file when the machine has ended.
func TestBlkMultiqueueDirect(t *testing.T) {
	k := setupLinux(t)
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{Script: blkMQScript, NoDHCP: true})
	const size = 1 << 20
	src, sum := writePatternDisk(t, size)
	backing := filepath.Join(t.TempDir(), "copy.img")
	if err := os.WriteFile(backing, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := testenv.LoopDevice(t, backing)
	r := startLinux(t, corral.Config{Kernel: k.needVmlinux(t), Initrd: initrd, CPUs: smpCPUs, Cmdline: k.cmdline,
		Disks: []corral.Disk{{Path: src, ReadOnly: true}, {Path: dst, Direct: true, Queues: 1}}},
		"Linux version", "Run /init", "corral-init: start", "corral-init: exit status", "reboot: Power down")
	r.wait(t)
	r.wantExit(t, corral.ExitPowerOff, 0)
	r.want(t, fmt.Sprintf("corral-test: vda queues %d", smpCPUs), "corral-test: vdb queues 1",
		"corral-test: vda md5 "+sum, "corral-test: vdb md5 "+sum, "corral-init: exit status 0 via poweroff")
	b, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if got := md5.Sum(b); hex.EncodeToString(got[:]) != sum {
		t.Errorf("the loop device's backing file does not hold the copy the guest made")
	}
}
