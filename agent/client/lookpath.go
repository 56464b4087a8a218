package client

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxLinks is how many symbolic links one lookup follows, as Linux's
// MAXSYMLINKS: one more is ELOOP.
const maxLinks = 40

// LookPathIn finds file in env's PATH (its last PATH= entry) as the guest
// agent's search (execvp's rules) would in a guest whose root is the host
// directory root: the first PATH entry holding a regular file of that
// name with an execute bit, every symbolic link followed within root. It
// returns that path as the guest names it and every path the lookup
// examined, for the agent to check against its mounts; ok is false when
// the answer could depend on the guest (a relative PATH entry, no PATH in
// env, a name with a slash) or the host gave an error other than "not
// there", and when nothing matched.
func LookPathIn(root, file string, env []string) (path string, visited []string, ok bool) {
	if root == "" || file == "" || strings.Contains(file, "/") {
		return "", nil, false
	}
	search, found := "", false
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			search, found = v, true
		}
	}
	if !found {
		return "", nil, false
	}
	w := &pathWalk{root: root}
	for _, d := range filepath.SplitList(search) {
		if d == "" || !filepath.IsAbs(d) {
			return "", nil, false
		}
		p := filepath.Join(d, file)
		fi, err := w.stat(p)
		switch {
		case err == nil:
			if fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p, w.visited, true
			}
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR),
			errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENAMETOOLONG):
			// The agent's stat fails the same way: on to the next entry.
		default:
			return "", nil, false
		}
	}
	return "", nil, false
}

// pathWalk resolves guest paths in root one name at a time, as the guest
// kernel would, recording each path it looks at.
type pathWalk struct {
	root    string
	visited []string
	links   int
}

// stat returns what the guest path p (absolute, clean) names, every
// symbolic link followed.
func (w *pathWalk) stat(p string) (fs.FileInfo, error) {
	w.links = 0
	cur := "/"
	rest := strings.Split(strings.TrimPrefix(p, "/"), "/")
	var fi fs.FileInfo
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			fi = nil
			continue
		}
		next := filepath.Join(cur, name)
		w.visited = append(w.visited, next)
		host := filepath.Join(w.root, next)
		var err error
		fi, err = os.Lstat(host)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			if w.links++; w.links > maxLinks {
				return nil, &fs.PathError{Op: "lookup", Path: p, Err: syscall.ELOOP}
			}
			target, err := os.Readlink(host)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(target, "/") {
				cur = "/"
			}
			rest = append(strings.Split(target, "/"), rest...)
			fi = nil
			continue
		}
		if !fi.IsDir() && hasName(rest) {
			return nil, &fs.PathError{Op: "lookup", Path: p, Err: syscall.ENOTDIR}
		}
		cur = next
	}
	if fi == nil {
		// The path ended in "..", "." or a link to a directory: stat
		// what it names.
		return os.Stat(filepath.Join(w.root, cur))
	}
	return fi, nil
}

// hasName reports whether rest holds a name still to look up.
func hasName(rest []string) bool {
	for _, n := range rest {
		if n != "" && n != "." {
			return true
		}
	}
	return false
}
