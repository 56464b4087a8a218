package proto

import (
	"encoding/binary"
	"reflect"
	"strings"
	"testing"
)

func TestExecResolvedRoundTrip(t *testing.T) {
	for _, e := range []*Exec{
		{Path: "true", Env: []string{"PATH=/usr/bin:/bin"}, Resolved: "/bin/true", Visited: []string{"/usr", "/usr/bin", "/usr/bin/true", "/bin", "/bin/true", "/usr/bin/busybox"}},
		{Path: "true", Env: []string{}, Resolved: "/bin/true"}, // nothing visited
		{Path: "true", Env: []string{"PATH=/bin"}},             // no hint: flag clear
	} {
		p, err := e.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		if flag := binary.LittleEndian.Uint32(p[offExecFlags:])&ExecResolved != 0; flag != (e.Resolved != "") {
			t.Errorf("%+v: ExecResolved flag %v", e, flag)
		}
		got, err := ParseExec(p)
		if err != nil {
			t.Fatalf("%+v: %v", e, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Errorf("decoded %+v, want %+v", got, e)
		}
	}
}

func TestExecResolvedRefused(t *testing.T) {
	if _, err := (&Exec{Path: "true", Resolved: "/bin/true"}).Append(nil); err == nil {
		t.Error("a resolved path without an environment encoded")
	}
	if _, err := (&Exec{Path: "true", Env: []string{}, Visited: []string{"/bin"}}).Append(nil); err == nil {
		t.Error("visited paths without a resolved path encoded")
	}
	if _, err := (&Exec{Path: "true", Env: []string{}, Resolved: "/bin/true", Visited: []string{"/a\x00"}}).Append(nil); err == nil {
		t.Error("a visited path with a NUL encoded")
	}
	ok, err := (&Exec{Path: "true", Env: []string{"A=1"}, Resolved: "/bin/true", Visited: []string{"/bin"}}).Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	noEnv := append([]byte(nil), ok...)
	binary.LittleEndian.PutUint32(noEnv[offExecFlags:], ExecResolved)
	binary.LittleEndian.PutUint32(noEnv[offExecNEnv:], 0)
	hugeCount := append([]byte(nil), ok...)
	// The count sits after Resolved: 4+len("/bin") bytes before the end.
	binary.LittleEndian.PutUint32(hugeCount[len(hugeCount)-8-4:], 1<<30)
	emptyResolved, _ := (&Exec{Path: "true", Env: []string{}}).Append(nil)
	binary.LittleEndian.PutUint32(emptyResolved[offExecFlags:], ExecEnv|ExecResolved)
	emptyResolved = append(emptyResolved, 0, 0, 0, 0, 0, 0, 0, 0)
	for name, tc := range map[string]struct {
		p    []byte
		want string
	}{
		"resolved without env":  {noEnv, "resolved path but no environment flag"},
		"visited count":         {hugeCount, "claims 1073741824 visited paths"},
		"truncated count":       {ok[:len(ok)-8-2], "before its count of visited paths"},
		"truncated visited":     {ok[:len(ok)-1], "visited path of 4 bytes with 3 left"},
		"empty resolved":        {emptyResolved, "empty resolved path"},
		"trailing after visits": {append(append([]byte(nil), ok...), 1), "trailing"},
	} {
		_, err := ParseExec(tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}
