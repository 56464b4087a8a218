package ctrdtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/testenv"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestDaemonEnv(t *testing.T) {
	got := DaemonEnv([]string{"A=1", "PATH=/bin:/usr/bin", "CORRAL_STATE_DIR=/old"}, "/shim", "/st")
	want := []string{"A=1", "PATH=/shim:/bin:/usr/bin", "CORRAL_STATE_DIR=/st"}
	if !slices.Equal(got, want) {
		t.Fatalf("DaemonEnv = %q, want %q", got, want)
	}
}

// readTar returns the regular files and the symlinks of a tar stream.
func readTar(t *testing.T, r io.Reader) (files map[string][]byte, links map[string]string) {
	t.Helper()
	files, links = map[string][]byte{}, map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files, links
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		case tar.TypeSymlink:
			links[h.Name] = h.Linkname
		}
	}
}

func blob(t *testing.T, files map[string][]byte, d ocispec.Descriptor) []byte {
	t.Helper()
	b, ok := files[blobPath(d)]
	if !ok {
		t.Fatalf("no blob %s", d.Digest)
	}
	sum := sha256.Sum256(b)
	if "sha256:"+hex.EncodeToString(sum[:]) != d.Digest.String() || int64(len(b)) != d.Size {
		t.Fatalf("blob %s: digest or size (%d, want %d) wrong", d.Digest, len(b), d.Size)
	}
	return b
}

// TestWriteImage reads the image layout back: index, manifest, config and
// layer chain by digest, the name is annotated, and the layer holds
// busybox with its applets and /etc/passwd.
func TestWriteImage(t *testing.T) {
	bb := []byte("\x7fELF not really busybox")
	var buf bytes.Buffer
	if err := WriteImage(&buf, ImageRef, bb); err != nil {
		t.Fatal(err)
	}
	files, _ := readTar(t, bytes.NewReader(buf.Bytes()))
	if !strings.Contains(string(files["oci-layout"]), `"imageLayoutVersion":"1.0.0"`) {
		t.Fatalf("oci-layout = %q", files["oci-layout"])
	}
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %v, %d manifests", err, len(idx.Manifests))
	}
	md := idx.Manifests[0]
	if md.Annotations[ocispec.AnnotationRefName] != ImageRef || md.Platform == nil || md.Platform.Architecture != "amd64" {
		t.Fatalf("manifest descriptor %+v", md)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(blob(t, files, md), &man); err != nil || len(man.Layers) != 1 {
		t.Fatalf("manifest: %v, %+v", err, man)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(blob(t, files, man.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || !slices.Equal(cfg.Config.Cmd, DefaultCmd) || len(cfg.RootFS.DiffIDs) != 1 {
		t.Fatalf("config %+v", cfg)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(t, files, man.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(raw); "sha256:"+hex.EncodeToString(sum[:]) != cfg.RootFS.DiffIDs[0].String() {
		t.Fatalf("diff ID %s is not the uncompressed layer's digest", cfg.RootFS.DiffIDs[0])
	}
	lf, links := readTar(t, bytes.NewReader(raw))
	if !bytes.Equal(lf["bin/busybox"], bb) || links["bin/sh"] != "busybox" || links["bin/sleep"] != "busybox" {
		t.Fatalf("layer: busybox %q, sh -> %q", lf["bin/busybox"], links["bin/sh"])
	}
	if !strings.HasPrefix(string(lf["etc/passwd"]), "root:x:0:0:") {
		t.Fatalf("etc/passwd = %q", lf["etc/passwd"])
	}
	var again bytes.Buffer
	if err := WriteImage(&again, ImageRef, bb); err != nil || !bytes.Equal(again.Bytes(), buf.Bytes()) {
		t.Fatalf("a second image of the same busybox differs (%v)", err)
	}
}

// TestDaemonImportImage proves the harness without the shim: a private
// containerd starts, the image imports into two namespaces and is listed
// and unpacked, the CRI plugin and the native snapshotter loaded, and
// nothing is left after the daemon stops.
func TestDaemonImportImage(t *testing.T) {
	testenv.MustHaveRoot(t)
	tools := MustHaveContainerd(t)
	MustHaveFile(t, BusyboxPath)
	var dir, sock string
	t.Run("daemon", func(t *testing.T) {
		d := Start(t, Options{Tools: tools})
		dir, sock = d.Dir, d.Address
		if fi, err := os.Stat(d.Address); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("no socket at %s: %v", d.Address, err)
		}
		for _, ns := range []string{"ctrdtest", "k8s.io"} {
			d.ImportImage(t, ns, ImageRef)
			if ls := d.MustCtr(t, ns, "images", "ls", "-q"); !slices.Contains(strings.Fields(ls), ImageRef) {
				t.Fatalf("ctr -n %s images ls -q = %q, want %s", ns, ls, ImageRef)
			}
			if ls := d.MustCtr(t, ns, "snapshots", "--snapshotter", "native", "ls"); len(strings.Split(strings.TrimSpace(ls), "\n")) < 2 {
				t.Fatalf("ctr -n %s snapshots ls: no snapshot after the import:\n%s", ns, ls)
			}
		}
		// The daemon is the one MustHaveContainerd chose
		// ($CORRAL_CONTAINERD_BIN_DIR's), and it took its config.
		if v := serverVersion(d.MustCtr(t, "default", "version")); v != tools.Version {
			t.Errorf("ctr version: server %q, want %q (%s)", v, tools.Version, tools.Containerd)
		}
		plugins := d.MustCtr(t, "default", "plugins", "ls")
		for _, want := range []string{"io.containerd.grpc.v1 cri ok", "io.containerd.snapshotter.v1 native ok"} {
			if !containsFields(plugins, want) {
				t.Errorf("ctr plugins ls has no line %q:\n%s", want, plugins)
			}
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := os.Stat(dir)
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (socket %s) still there after the daemon stopped: %v", dir, sock, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serverVersion returns the Version line of ctr version's Server part.
func serverVersion(out string) string {
	_, server, _ := strings.Cut(out, "Server:")
	for _, l := range strings.Split(server, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// containsFields reports whether some line of ctr plugins ls has want's
// "TYPE ID STATUS" (the platforms column between ID and STATUS ignored).
func containsFields(text, want string) bool {
	w := strings.Fields(want)
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == w[0] && f[1] == w[1] && f[len(f)-1] == w[2] {
			return true
		}
	}
	return false
}

func TestDaemonConfigPaths(t *testing.T) {
	common := []string{`root = "/x/d/root"`, `address = "/x/d/containerd.sock"`, `runtimes.corral]`,
		`runtime_type = "io.containerd.corral.v2"`, `snapshotter = "native"`, `conf_dir = "/x/d/cni/conf"`}
	for _, tc := range []struct {
		major         int
		want, notWant []string
	}{
		{1, []string{"version = 2\n", `sandbox_image = "img:1"`, `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.corral]`},
			[]string{"io.containerd.cri.v1."}},
		{2, []string{"version = 3\n", "[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n    sandbox = \"img:1\"",
			`[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.corral]`, `bin_dirs = ["/x/d/cni/bin"]`,
			"[[plugins.\"io.containerd.transfer.v1.local\".unpack_config]]\n    platform = \"linux/amd64\"\n    snapshotter = \"native\""},
			[]string{"sandbox_image", `"io.containerd.grpc.v1.cri".containerd`, "aufs"}},
	} {
		c := ConfigFor(tc.major, "/x/d", "img:1")
		for _, want := range append(common, tc.want...) {
			if !strings.Contains(c, want) {
				t.Errorf("containerd %d.x config lacks %s:\n%s", tc.major, want, c)
			}
		}
		for _, bad := range tc.notWant {
			if strings.Contains(c, bad) {
				t.Errorf("containerd %d.x config has %s:\n%s", tc.major, bad, c)
			}
		}
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out, version string
		major        int
	}{
		{"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n", "1.6.20~ds1", 1},
		{"containerd github.com/containerd/containerd v1.7.35 corral-build\n", "v1.7.35", 1},
		{"containerd github.com/containerd/containerd/v2 v2.2.9 abc\n", "v2.2.9", 2},
		{"containerd github.com/containerd/containerd/v2 2.2.9\n", "2.2.9", 2},
		{"", "", 0},
		{"runc version 1.1.5\n", "", 0},
		{"containerd x vX.1 y", "", 0},
		{"containerd x 0.9.1", "", 0},
	} {
		v, m, err := ParseVersion(tc.out)
		if v != tc.version || m != tc.major || (err != nil) != (tc.major == 0) {
			t.Errorf("ParseVersion(%q) = %q, %d, %v; want %q, %d", tc.out, v, m, err, tc.version, tc.major)
		}
	}
}
