package console

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	b := NewBuffer(0)
	go func() {
		time.Sleep(10 * time.Millisecond)
		b.Write([]byte("hello "))
		b.Write([]byte("world\n"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.WaitFor(ctx, "o w"); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := b.WaitFor(ctx2, "absent"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitFor absent: %v", err)
	}
}

func TestBound(t *testing.T) {
	b := NewBuffer(4)
	n, err := b.Write([]byte("abcdef"))
	if n != 6 || err != nil || b.String() != "abcd" {
		t.Fatalf("got %d %v %q", n, err, b.String())
	}
}
