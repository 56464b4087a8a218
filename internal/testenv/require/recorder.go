package require

import (
	"fmt"
	"testing"
)

// Recorder is a testing.TB for testing helpers built on this package: Skip
// and Fatal record the message and end only the function Run called.
// Methods it does not implement panic through the nil embedded TB.
type Recorder struct {
	testing.TB
	SkipMsg string // the Skip message, if the function skipped
	FailMsg string // the Fatal message, if it failed
}

// recorderStop unwinds the function under test, as runtime.Goexit does for a
// real test.
type recorderStop struct{}

// Run calls fn with r and returns once fn returns, skips or fails.
func (r *Recorder) Run(fn func(t testing.TB)) {
	defer func() {
		if v := recover(); v != nil {
			if _, ok := v.(recorderStop); !ok {
				panic(v)
			}
		}
	}()
	fn(r)
}

// Helper does nothing: there is no caller line to attribute.
func (r *Recorder) Helper() {}

// Skip records a skip and stops the function under test.
func (r *Recorder) Skip(args ...any) { r.SkipMsg = fmt.Sprint(args...); panic(recorderStop{}) }

// Skipf records a skip and stops the function under test.
func (r *Recorder) Skipf(format string, args ...any) {
	r.SkipMsg = fmt.Sprintf(format, args...)
	panic(recorderStop{})
}

// Fatal records a failure and stops the function under test.
func (r *Recorder) Fatal(args ...any) { r.FailMsg = fmt.Sprint(args...); panic(recorderStop{}) }

// Fatalf records a failure and stops the function under test.
func (r *Recorder) Fatalf(format string, args ...any) {
	r.FailMsg = fmt.Sprintf(format, args...)
	panic(recorderStop{})
}
