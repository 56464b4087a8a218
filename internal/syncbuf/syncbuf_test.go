package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// TestConcurrentWrites: every write arrives whole while String is read
// (run with -race).
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				b.Write([]byte("ab\n"))
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	s := b.String()
	if len(s) != 8*100*3 || strings.Count(s, "ab\n") != 800 {
		t.Fatalf("got %d bytes, %d whole writes; want 2400 and 800", len(s), strings.Count(s, "ab\n"))
	}
}
