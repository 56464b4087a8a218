package agent

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/corral-vmm/corral/agent/proto"
)

// hostResolved returns e.Resolved when the agent's own PATH search
// (lookPath) would find the same file, without that search's lookups (on
// a 9p root each a round trip to the host: 17 of a warm `corral exec --
// true`'s 36). The caller has checked that the root is an overlay over the
// host's share that no command has written yet (Deferred.pristineRoot);
// the host looked the name up in that share's tree and sent every path it
// examined (e.Visited). The guest sees such a path as the host does unless
// a mount covers it, so the answer is the host's when no visited path is
// at or under one of mounts (the guest's mount points; "/" is the overlay)
// and e.Resolved is the PATH candidate the host says it is, with no
// relative PATH entry before it (those depend on the working directory).
func hostResolved(e *proto.Exec, mounts []string) (string, bool) {
	if e.Resolved == "" || e.Env == nil || strings.Contains(e.Path, "/") {
		return "", false
	}
	found := false
	for _, d := range filepath.SplitList(searchPath(e.Env)) {
		if d == "" || !filepath.IsAbs(d) {
			return "", false
		}
		if filepath.Join(d, e.Path) == e.Resolved {
			found = true
			break
		}
	}
	if !found {
		return "", false
	}
	for _, v := range append([]string{e.Resolved}, e.Visited...) {
		if !filepath.IsAbs(v) || filepath.Clean(v) != v {
			return "", false
		}
		if _, covered := Covering(v, mounts); covered {
			return "", false
		}
	}
	return e.Resolved, true
}

// Covering returns the first of mounts (mount points, clean and absolute;
// "/" is left out) that the clean absolute path p is at or under.
func Covering(p string, mounts []string) (string, bool) {
	for _, m := range mounts {
		if m == "/" {
			continue
		}
		if p == m || strings.HasPrefix(p, m+"/") {
			return m, true
		}
	}
	return "", false
}

// mountPoints returns the mount points a mountinfo file lists (its fifth
// field, with the kernel's octal escapes undone).
func mountPoints(name string) ([]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			return nil, fmt.Errorf("agent: %s: a line of %d fields", name, len(fields))
		}
		mps = append(mps, unescapeMount(fields[4]))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("agent: reading %s: %w", name, err)
	}
	return mps, nil
}

// unescapeMount undoes mountinfo's \ooo escapes (space, tab, newline,
// backslash).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
