package gomaxprocs

import (
	"runtime"
	"testing"
)

func TestReserve(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(orig) })
	unset := func(string) (string, bool) { return "", false }

	runtime.GOMAXPROCS(1)
	if got := reserve(2, unset); got != 3 || runtime.GOMAXPROCS(0) != 3 {
		t.Fatalf("GOMAXPROCS 1, 2 vCPUs: Reserve = %d, GOMAXPROCS %d; want 3", got, runtime.GOMAXPROCS(0))
	}
	runtime.GOMAXPROCS(8)
	if got := reserve(2, unset); got != 8 || runtime.GOMAXPROCS(0) != 8 {
		t.Fatalf("GOMAXPROCS 8, 2 vCPUs: Reserve = %d, GOMAXPROCS %d; want 8 (never lowered)", got, runtime.GOMAXPROCS(0))
	}
	runtime.GOMAXPROCS(1)
	set := func(k string) (string, bool) { return "1", k == "GOMAXPROCS" }
	if got := reserve(4, set); got != 1 || runtime.GOMAXPROCS(0) != 1 {
		t.Fatalf("GOMAXPROCS=1 in the environment: Reserve = %d, GOMAXPROCS %d; want 1 (the user's choice)", got, runtime.GOMAXPROCS(0))
	}
}
