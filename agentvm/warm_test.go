package agentvm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral"
)

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// age sets path's mtime an hour back, so fileHash records its hash.
func age(t *testing.T, path string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
}

// TestWarmKey: every input of the snapshot changes the key; what the
// snapshot does not hold (share directories, the root's path) does not.
func TestWarmKey(t *testing.T) {
	dir := t.TempDir()
	kernel, initrd, agentBin := filepath.Join(dir, "kernel"), filepath.Join(dir, "initrd"), filepath.Join(dir, "agent")
	writeFile(t, kernel, "kernel v1")
	writeFile(t, initrd, "initrd v1")
	writeFile(t, agentBin, "agent v1")
	vmm := filepath.Join(dir, "corral")
	writeFile(t, vmm, "corral v1")
	for _, f := range []string{kernel, initrd, agentBin, vmm} {
		age(t, f)
	}
	ids := filepath.Join(dir, "ids")
	empty := filepath.Join(dir, "empty")
	base := func() Config {
		return Config{
			Machine: corral.Config{Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0", CPUs: 2, Memory: 512 << 20},
			Root:    RootHost(),
			Shares:  []Share{{Host: dir, Guest: "/src"}},
		}
	}
	key := func(cfg Config, version string) string {
		t.Helper()
		p, err := cfg.warmPlan(empty)
		if err != nil {
			t.Fatal(err)
		}
		k, err := warmKey(ids, version, vmm, agentBin, &p.mc)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k0 := key(base(), "v1")
	if k := key(base(), "v1"); k != k0 {
		t.Fatalf("same inputs, keys %s and %s", k0, k)
	}
	same := map[string]func(*Config){
		"share directory":  func(c *Config) { c.Shares[0].Host = t.TempDir() },
		"share guest path": func(c *Config) { c.Shares[0].Guest = "/elsewhere" },
		"root directory":   func(c *Config) { c.Root = RootDir(t.TempDir()) },
		"initramfs root":   func(c *Config) { c.Root = RootInitrd() },
		"console":          func(c *Config) { c.Machine.Console = os.Stderr },
		"name":             func(c *Config) { c.Machine.Name = "other" },
	}
	for name, change := range same {
		c := base()
		change(&c)
		if k := key(c, "v1"); k != k0 {
			t.Errorf("%s changed the key", name)
		}
	}
	differ := map[string]func(*Config){
		"cpus":       func(c *Config) { c.Machine.CPUs = 1 },
		"memory":     func(c *Config) { c.Machine.Memory = 256 << 20 },
		"cmdline":    func(c *Config) { c.Machine.Cmdline += " quiet" },
		"no ACPI":    func(c *Config) { c.Machine.NoACPI = true },
		"no initrd":  func(c *Config) { c.Machine.Initrd = "" },
		"read-only":  func(c *Config) { c.Shares[0].ReadOnly = true },
		"two shares": func(c *Config) { c.Shares = append(c.Shares, Share{Host: dir, Guest: "/b"}) },
	}
	seen := map[string]string{k0: "base"}
	for name, change := range differ {
		c := base()
		change(&c)
		k := key(c, "v1")
		if other, ok := seen[k]; ok {
			t.Errorf("%s: same key as %s", name, other)
		}
		seen[k] = name
	}
	if k := key(base(), "v2"); seen[k] != "" {
		t.Errorf("version: same key as %s", seen[k])
	}
	// File contents: a rewrite of the same size is seen, even within one
	// tick of a coarse clock (tmpfs): a file changed just now is hashed.
	for _, f := range []string{kernel, initrd, agentBin, vmm} {
		old, _ := os.ReadFile(f)
		writeFile(t, f, strings.Replace(string(old), "v1", "v2", 1))
		k := key(base(), "v1")
		if other, ok := seen[k]; ok {
			t.Errorf("new %s: same key as %s", filepath.Base(f), other)
		}
		seen[k] = f
		writeFile(t, f, string(old))
		if k := key(base(), "v1"); k != k0 {
			t.Errorf("%s back as it was: key %s, want %s", filepath.Base(f), k, k0)
		}
	}
	if ents, _ := os.ReadDir(ids); len(ents) == 0 {
		t.Error("no file hashes recorded")
	}
}

// TestFileHashRecord: a recorded hash is used while the file's identity
// holds (the record, not the file, answers).
func TestFileHashRecord(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	writeFile(t, f, "hello")
	ids := filepath.Join(dir, "ids")
	if _, err := fileHash(ids, f); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(ids); len(ents) != 0 {
		t.Fatalf("the hash of a file changed just now was recorded: %v", ents)
	}
	age(t, f)
	h1, err := fileHash(ids, f)
	if err != nil || h1 != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Fatalf("fileHash = %s, %v", h1, err)
	}
	ents, _ := os.ReadDir(ids)
	if len(ents) != 1 {
		t.Fatalf("%d records", len(ents))
	}
	fake := strings.Repeat("ab", 32)
	writeFile(t, filepath.Join(ids, ents[0].Name()), fake)
	if h, _ := fileHash(ids, f); h != fake {
		t.Errorf("recorded hash not used: %s", h)
	}
	if _, err := fileHash(ids, filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestWarmPlan(t *testing.T) {
	empty := t.TempDir()
	a, b := t.TempDir(), t.TempDir()
	cfg := Config{
		Machine: corral.Config{Kernel: "k", Cmdline: "console=ttyS0"},
		Root:    RootHost(),
		Shares:  []Share{{Host: a, Guest: "/a/"}, {Host: b, ReadOnly: true}},
	}
	p, err := cfg.warmPlan(empty)
	if err != nil {
		t.Fatal(err)
	}
	want := []corral.Share{
		{Path: "/", Tag: "corral-root", ReadOnly: true, Empty: emptyDirs},
		{Path: a, Tag: "corral-share0"},
		{Path: b, Tag: "corral-share1", ReadOnly: true},
		{Path: empty, Tag: "corral-share2", ReadOnly: true},
		{Path: empty, Tag: "corral-share3", ReadOnly: true},
	}
	if fmt.Sprint(p.mc.Shares) != fmt.Sprint(want) {
		t.Errorf("shares %+v\nwant %+v", p.mc.Shares, want)
	}
	if p.mc.Cmdline != "tsc=nowatchdog console=ttyS0 corral.setup=deferred" || p.mc.Vsock == nil {
		t.Errorf("cmdline %q, vsock %v", p.mc.Cmdline, p.mc.Vsock)
	}
	if p.setup.Root != "9p:corral-root" || fmt.Sprint(p.setup.Shares) != fmt.Sprint([]string{"corral-share0:/a", "corral-share1:" + b + ":ro"}) {
		t.Errorf("setup %q %q", p.setup.Root, p.setup.Shares)
	}
	cfg.Root = RootInitrd()
	if p, _ := cfg.warmPlan(empty); p.setup.Root != "" || p.mc.Shares[0].Path != empty {
		t.Errorf("initramfs root: setup %q, root share %+v", p.setup.Root, p.mc.Shares[0])
	}
	cfg.Shares[0].Guest = "/a b"
	if _, err := cfg.warmPlan(empty); !errors.Is(err, ErrConfig) {
		t.Errorf("guest path with a space: %v", err)
	}

	for why, c := range map[string]Config{
		"image":      {Root: RootImage("/img")},
		"5 shares":   {Shares: make([]Share, WarmSlots+1)},
		"disks":      {Machine: corral.Config{Disks: []corral.Disk{{Path: "/d"}}}},
		"nets":       {Machine: corral.Config{Nets: []corral.Net{{}}}},
		"vsock":      {Machine: corral.Config{Vsock: &corral.Vsock{}}},
		"own shares": {Machine: corral.Config{Shares: []corral.Share{{Path: "/", Tag: "x"}}}},
	} {
		if c.coldReason() == "" {
			t.Errorf("%s: no reason to boot cold", why)
		}
	}
	if r := (&Config{Root: RootHost(), Shares: make([]Share, WarmSlots)}).coldReason(); r != "" {
		t.Errorf("%d shares: cold because %s", WarmSlots, r)
	}
}

// fakeSnap stands in for a snapshot: a marker file written by the build.
type fakeSnap struct {
	restored string // the marker read back, "" when built
}

// fakeBuilder counts builds and restores against a cache directory.
type fakeBuilder struct {
	builds, restores atomic.Int32
	buildTime        time.Duration
	marker           string
	damage           error // restore fails with this once
	damageOnce       sync.Once
}

func (f *fakeBuilder) restore(snap string) (fakeSnap, error) {
	var err error
	f.damageOnce.Do(func() { err = f.damage })
	if err != nil {
		return fakeSnap{}, err
	}
	b, err := os.ReadFile(filepath.Join(snap, "marker"))
	if err != nil {
		return fakeSnap{}, err
	}
	f.restores.Add(1)
	return fakeSnap{restored: string(b)}, nil
}

func (f *fakeBuilder) build(tmp string, commit func() error) (fakeSnap, error) {
	f.builds.Add(1)
	time.Sleep(f.buildTime)
	if err := os.WriteFile(filepath.Join(tmp, "marker"), []byte(f.marker), 0o644); err != nil {
		return fakeSnap{}, err
	}
	return fakeSnap{}, commit()
}

func testCache(t *testing.T) (*warmCache, *strings.Builder) {
	var log strings.Builder
	var mu sync.Mutex
	h := slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return log.Write(p) }), nil)
	return &warmCache{dir: t.TempDir(), log: slog.New(h)}, &log
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }

// TestWarmGetConcurrent: two first callers at once: one builds, the
// other waits for it and restores what it built.
func TestWarmGetConcurrent(t *testing.T) {
	c, log := testCache(t)
	f := &fakeBuilder{buildTime: 300 * time.Millisecond, marker: "built"}
	var wg sync.WaitGroup
	results := make([]fakeSnap, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = warmGet(context.Background(), c, "k", f.restore, f.build)
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("errors %v", errs)
	}
	if f.builds.Load() != 1 || f.restores.Load() != 1 {
		t.Errorf("%d builds, %d restores; want 1 and 1", f.builds.Load(), f.restores.Load())
	}
	if results[0].restored+results[1].restored != "built" {
		t.Errorf("results %+v: want one built, one restoring the build", results)
	}
	for _, want := range []string{"warm: built " + filepath.Join(c.dir, "k"), "warm: waiting for another corral"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	// A later caller restores.
	if r, err := warmGet(context.Background(), c, "k", f.restore, f.build); err != nil || r.restored != "built" || f.builds.Load() != 1 {
		t.Errorf("third call: %+v, %v, %d builds", r, err, f.builds.Load())
	}
	if tmps, _ := filepath.Glob(filepath.Join(c.dir, "k.tmp-*")); len(tmps) != 0 {
		t.Errorf("left %q", tmps)
	}
}

// TestWarmGetDamaged: a snapshot that fails to restore is removed and
// built again, with a log line; any other restore error is the caller's
// and leaves the snapshot alone.
func TestWarmGetDamaged(t *testing.T) {
	c, log := testCache(t)
	snap := filepath.Join(c.dir, "k")
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(snap, "marker"), "old")
	writeFile(t, filepath.Join(snap, "junk"), "x")
	f := &fakeBuilder{marker: "new", damage: &damagedError{errors.New("bad section")}}
	r, err := warmGet(context.Background(), c, "k", f.restore, f.build)
	if err != nil || f.builds.Load() != 1 {
		t.Fatalf("%+v, %v, %d builds", r, err, f.builds.Load())
	}
	if _, err := os.Stat(filepath.Join(snap, "junk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused snapshot was not replaced: %v", err)
	}
	if !strings.Contains(log.String(), "refused; building it again") || !strings.Contains(log.String(), "bad section") {
		t.Errorf("log:\n%s", log)
	}

	plain := errors.New("no confinement today")
	f2 := &fakeBuilder{marker: "newer", damage: plain}
	if _, err := warmGet(context.Background(), c, "k", f2.restore, f2.build); !errors.Is(err, plain) || f2.builds.Load() != 0 {
		t.Errorf("plain error: %v, %d builds", err, f2.builds.Load())
	}
	if b, _ := os.ReadFile(filepath.Join(snap, "marker")); string(b) != "new" {
		t.Errorf("snapshot now %q", b)
	}
}

// TestWarmGetStaleTmp: what a builder that died left is removed by the
// next build, and a failed build leaves nothing.
func TestWarmGetStaleTmp(t *testing.T) {
	c, _ := testCache(t)
	stale := filepath.Join(c.dir, "k.tmp-123")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boot failed")
	_, err := warmGet(context.Background(), c, "k", (&fakeBuilder{}).restore, func(tmp string, commit func() error) (fakeSnap, error) {
		os.RemoveAll(tmp) // builds clean up after themselves
		return fakeSnap{}, boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("err %v", err)
	}
	if ents, _ := os.ReadDir(c.dir); len(ents) != 1 || ents[0].Name() != "k.lock" {
		t.Errorf("cache holds %v", ents)
	}
}

// TestWarmGetWaitCanceled: a caller waiting for a builder gives up with
// its context.
func TestWarmGetWaitCanceled(t *testing.T) {
	c, _ := testCache(t)
	lf, err := os.OpenFile(filepath.Join(c.dir, "k.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	f := &fakeBuilder{}
	if _, err := warmGet(ctx, c, "k", f.restore, f.build); !errors.Is(err, context.DeadlineExceeded) || f.builds.Load() != 0 {
		t.Errorf("err %v, %d builds", err, f.builds.Load())
	}
}

// TestWarmTrim: building a snapshot removes the least recently used ones
// beyond WarmKeep, keeping the new one, one another corral is restoring
// (its lock held shared) and the lock files; a restore counts as a use.
func TestWarmTrim(t *testing.T) {
	c, log := testCache(t)
	base := time.Unix(1_000_000, 0) // any times: only their order counts
	// Five snapshots as builds leave them, oldest first.
	for i, k := range []string{"a", "b", "c", "d", "e"} {
		dir := filepath.Join(c.dir, k)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "marker"), []byte(k), 0o600)
		os.WriteFile(dir+".lock", nil, 0o600)
		at := base.Add(time.Duration(i) * time.Hour)
		os.Chtimes(dir, at, at)
	}
	// a is the oldest, but in use: another corral restores it.
	lf, err := os.Open(filepath.Join(c.dir, "a.lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	// A restore of b makes it the most recently used.
	f := &fakeBuilder{}
	if r, err := warmGet(context.Background(), c, "b", f.restore, f.build); err != nil || r.restored != "b" {
		t.Fatalf("restore of b: %+v, %v", r, err)
	}
	// Building f trims to WarmKeep: f, b, e, d stay; c goes; a is in use.
	if _, err := warmGet(context.Background(), c, "f", (&fakeBuilder{marker: "f"}).restore, (&fakeBuilder{marker: "f"}).build); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"a": true, "b": true, "c": false, "d": true, "e": true, "f": true} {
		_, err := os.Stat(filepath.Join(c.dir, k))
		if got := err == nil; got != want {
			t.Errorf("snapshot %s kept %v, want %v", k, got, want)
		}
		if _, err := os.Stat(filepath.Join(c.dir, k+".lock")); err != nil {
			t.Errorf("lock file of %s: %v", k, err)
		}
	}
	if !strings.Contains(log.String(), "removed the least recently used snapshot") {
		t.Errorf("log lacks the removal:\n%s", log)
	}
	// Once a is no longer in use, the next build removes it.
	unix.Flock(int(lf.Fd()), unix.LOCK_UN)
	if _, err := warmGet(context.Background(), c, "g", (&fakeBuilder{marker: "g"}).restore, (&fakeBuilder{marker: "g"}).build); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "a")); err == nil {
		t.Error("a kept after its user let go and another build")
	}
	if n, _ := filepath.Glob(filepath.Join(c.dir, "[a-g]")); len(n) != WarmKeep {
		t.Errorf("%d snapshots left (%q), want WarmKeep=%d", len(n), n, WarmKeep)
	}
}
