package ctrdtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BusyboxPath is Debian's busybox-static binary, the image's only program.
const BusyboxPath = "/bin/busybox"

// ImageRef is the name the test image is imported as. A name with a
// domain, so that containerd's and the CRI plugin's reference
// normalisation leave it as it is.
const ImageRef = "corral.test/busybox:latest"

// Applets are the busybox applets the image links into /bin: what the
// tests and a shell session need.
var Applets = []string{
	"sh", "ash", "cat", "echo", "env", "false", "hostname", "id", "kill", "ls",
	"mkdir", "mount", "ps", "pwd", "rm", "sleep", "test", "touch", "true", "uname", "wc",
}

// DefaultCmd is the image's command: sleep for ever, so the image can also
// be the CRI plugin's sandbox (pause) image.
var DefaultCmd = []string{"sleep", "2147483647"}

// epoch fixes every timestamp, so the same busybox gives the same image.
var epoch = time.Unix(0, 0).UTC()

// WriteImage writes an OCI image layout tarball (oci-layout, index.json,
// blobs/sha256/...) of one linux/amd64 image named ref to w: one gzip
// layer holding busybox (the bytes given), its applet links, /etc/passwd
// and /etc/group, and the empty directories a root file system needs.
func WriteImage(w io.Writer, ref string, busybox []byte) error {
	layer, diffID, err := busyboxLayer(busybox)
	if err != nil {
		return err
	}
	cfg := ocispec.Image{
		Created:  &epoch,
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config: ocispec.ImageConfig{
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Cmd:        DefaultCmd,
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("ctrdtest: image config: %w", err)
	}
	cfgDesc := descriptor(ocispec.MediaTypeImageConfig, cfgJSON)
	layerDesc := descriptor(ocispec.MediaTypeImageLayerGzip, layer)
	man := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	}
	manJSON, err := json.Marshal(man)
	if err != nil {
		return fmt.Errorf("ctrdtest: image manifest: %w", err)
	}
	manDesc := descriptor(ocispec.MediaTypeImageManifest, manJSON)
	manDesc.Platform = &ocispec.Platform{Architecture: "amd64", OS: "linux"}
	// containerd takes the full name from its own annotation; other tools
	// read the OCI one.
	manDesc.Annotations = map[string]string{
		ocispec.AnnotationRefName:  ref,
		"io.containerd.image.name": ref,
	}
	idx := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manDesc},
	}
	idxJSON, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("ctrdtest: image index: %w", err)
	}
	tw := tar.NewWriter(w)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Mode: 0o755, ModTime: epoch, Typeflag: tar.TypeDir}); err != nil {
			return fmt.Errorf("ctrdtest: image tarball: %w", err)
		}
	}
	files := []struct {
		name string
		data []byte
	}{
		{ocispec.ImageLayoutFile, []byte(`{"imageLayoutVersion":"` + ocispec.ImageLayoutVersion + `"}`)},
		{"index.json", idxJSON},
		{blobPath(cfgDesc), cfgJSON},
		{blobPath(layerDesc), layer},
		{blobPath(manDesc), manJSON},
	}
	for _, f := range files {
		if err := add(f.name, f.data); err != nil {
			return fmt.Errorf("ctrdtest: image tarball %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("ctrdtest: image tarball: %w", err)
	}
	return nil
}

// WriteImageFile writes the image of ref, made from the busybox at
// busyboxPath, to the file path.
func WriteImageFile(path, ref, busyboxPath string) error {
	bb, err := os.ReadFile(busyboxPath)
	if err != nil {
		return fmt.Errorf("ctrdtest: busybox for the test image (apt-get install -y busybox-static): %w", err)
	}
	var buf bytes.Buffer
	if err := WriteImage(&buf, ref, bb); err != nil {
		return err
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("ctrdtest: %w", err)
	}
	return nil
}

func descriptor(mediaType string, data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

func blobPath(d ocispec.Descriptor) string {
	return "blobs/" + d.Digest.Algorithm().String() + "/" + d.Digest.Encoded()
}

// busyboxLayer returns the gzip layer and its diff ID (the digest of the
// uncompressed tar).
func busyboxLayer(busybox []byte) (layer []byte, diffID digest.Digest, err error) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.ModTime = epoch
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, h))
	hdr := func(hd *tar.Header) error {
		hd.ModTime, hd.Uid, hd.Gid, hd.Format = epoch, 0, 0, tar.FormatPAX
		return tw.WriteHeader(hd)
	}
	file := func(name string, mode int64, data []byte) error {
		if err := hdr(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	write := func() error {
		for _, d := range []struct {
			name string
			mode int64
		}{{"bin/", 0o755}, {"dev/", 0o755}, {"etc/", 0o755}, {"proc/", 0o555}, {"root/", 0o700},
			{"run/", 0o755}, {"sys/", 0o555}, {"tmp/", 0o1777}, {"usr/", 0o755}, {"usr/bin/", 0o755}, {"var/", 0o755}} {
			if err := hdr(&tar.Header{Name: d.name, Mode: d.mode, Typeflag: tar.TypeDir}); err != nil {
				return err
			}
		}
		if err := file("bin/busybox", 0o755, busybox); err != nil {
			return err
		}
		for _, a := range Applets {
			if err := hdr(&tar.Header{Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, Typeflag: tar.TypeSymlink}); err != nil {
				return err
			}
		}
		if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")); err != nil {
			return err
		}
		if err := file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n")); err != nil {
			return err
		}
		return tw.Close()
	}
	if err := write(); err != nil {
		return nil, "", fmt.Errorf("ctrdtest: image layer: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("ctrdtest: image layer: %w", err)
	}
	return gz.Bytes(), digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil))), nil
}
