package corral

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/corral-vmm/corral/inventory"
	"golang.org/x/sys/unix"
)

// The inventory records the kernel's SHA-256 on every Start: some 10-40 ms
// for a 17 MB vmlinux on hardware, a slice of `corral exec -- true`'s
// budget. Each exec is a new process, so the digest is kept in a small
// file, keyed by what changes whenever the file's contents can have:
// device, inode, size, mtime and ctime (the last cannot be set back by
// the file's owner). The file is in the state directory: corral exec
// confines itself (Landlock) before Start, and that is the one directory
// it may still write (a user cache directory would be out of reach).

// digestCacheName is the cache file in the state directory.
const digestCacheName = "kernel-sha256"

// digestCacheMax bounds the entries kept (the newest first).
const digestCacheMax = 32

// digestSettle is how old a file's ctime must be for its digest to be
// kept: a write in the same timestamp tick as the one the ctime shows
// would not change it.
const digestSettle = 2 * time.Second

// digestKey identifies a file's contents without reading them.
type digestKey struct {
	dev, ino, size uint64
	mtime, ctime   int64 // ns since the epoch
}

func statKey(st *unix.Stat_t) digestKey {
	return digestKey{
		dev: st.Dev, ino: st.Ino, size: uint64(st.Size),
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}
}

// digestEntry is one line of the cache file: the key's five fields in
// decimal, then the digest in hex.
type digestEntry struct {
	key    digestKey
	digest string
}

// kernelSHA256 returns the SHA-256 of the machine's kernel, from the
// state directory's digest cache when the file has not changed since it
// was hashed there.
func (m *Machine) kernelSHA256() (string, error) {
	state := m.cfg.StateDir
	if state == "" {
		state = inventory.StateDir()
	}
	return cachedSHA256(m.cfg.Kernel, filepath.Join(state, digestCacheName), time.Now, digestSettle)
}

// cachedSHA256 hashes p, looking the digest up in (and adding it to) the
// cache file (none if ""). A cache that cannot be read or written costs
// only the hashing.
func cachedSHA256(p, cache string, now func() time.Time, settle time.Duration) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("corral: kernel digest: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("corral: kernel digest %s: fstat: %w", p, err)
	}
	key := statKey(&st)
	var entries []digestEntry
	if cache != "" {
		if b, err := os.ReadFile(cache); err == nil {
			entries = parseDigestCache(b)
		}
		for _, e := range entries {
			if e.key == key {
				return e.digest, nil
			}
		}
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("corral: kernel digest %s: %w", p, err)
	}
	digest := hex.EncodeToString(h.Sum(nil))
	if cache == "" {
		return digest, nil
	}
	// Keep it only if the file did not change while it was read, and
	// its ctime is old enough that a change would show in it.
	var after unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &after); err != nil || statKey(&after) != key ||
		now().Sub(time.Unix(0, key.ctime)) < settle {
		return digest, nil
	}
	entries = append([]digestEntry{{key, digest}}, entries...)
	writeDigestCache(cache, entries[:min(len(entries), digestCacheMax)])
	return digest, nil
}

// parseDigestCache reads the cache file's lines, skipping any that are
// not an entry (the file is ours, but a torn or foreign one must not
// yield a wrong digest).
func parseDigestCache(b []byte) []digestEntry {
	var out []digestEntry
	for line := range bytes.Lines(b) {
		f := strings.Fields(string(line))
		if len(f) != 6 || len(f[5]) != 2*sha256.Size || len(out) == digestCacheMax {
			continue
		}
		if _, err := hex.DecodeString(f[5]); err != nil || strings.ToLower(f[5]) != f[5] {
			continue
		}
		var u [3]uint64
		var s [2]int64
		ok := true
		for i := range u {
			var err error
			u[i], err = strconv.ParseUint(f[i], 10, 64)
			ok = ok && err == nil
		}
		for i := range s {
			var err error
			s[i], err = strconv.ParseInt(f[3+i], 10, 64)
			ok = ok && err == nil
		}
		if ok {
			out = append(out, digestEntry{digestKey{u[0], u[1], u[2], s[0], s[1]}, f[5]})
		}
	}
	return out
}

func formatDigestCache(entries []digestEntry) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		fmt.Fprintf(&b, "%d %d %d %d %d %s\n", e.key.dev, e.key.ino, e.key.size, e.key.mtime, e.key.ctime, e.digest)
	}
	return b.Bytes()
}

// writeDigestCache replaces the cache file whole (a rename: readers see
// the old file or the new). Two processes writing at once may lose one's
// entry, which is hashed again next time.
func writeDigestCache(cache string, entries []digestEntry) {
	dir := filepath.Dir(cache)
	if os.MkdirAll(dir, 0o700) != nil {
		return
	}
	tmp, err := os.CreateTemp(dir, ".kernel-sha256-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(formatDigestCache(entries))
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), cache) != nil {
		os.Remove(tmp.Name())
	}
}
