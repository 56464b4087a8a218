package initrd

import (
	"io"
	"os"
	"sync/atomic"
	"testing"
)

// countingReaderAt counts the bytes read through it.
type countingReaderAt struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// TestCheckAgentAtReadsHeaders: CheckAgentAt judges an executable as
// CheckAgent does, reading only a small part of it (corral exec checks
// its 15 MB agent on every run).
func TestCheckAgentAtReadsHeaders(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	whole, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &countingReaderAt{r: f}
	errAt, errWhole := CheckAgentAt(c), CheckAgent(whole)
	if (errAt == nil) != (errWhole == nil) || errAt != nil && errAt.Error() != errWhole.Error() {
		t.Errorf("CheckAgentAt = %v, CheckAgent = %v; want the same", errAt, errWhole)
	}
	if n := c.n.Load(); n > int64(len(whole))/10 {
		t.Errorf("CheckAgentAt read %d of %d bytes, want only the headers", n, len(whole))
	}
	if err := CheckAgentAt(&countingReaderAt{r: io.NewSectionReader(f, 0, 64)}); err == nil {
		t.Error("CheckAgentAt of a truncated executable: no error")
	}
}
