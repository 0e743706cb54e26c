package runner

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// entry is one archive member for the test archives.
type entry struct {
	name string
	mode fs.FileMode // fs.ModeDir, fs.ModeSymlink, … plus permission bits
	body string      // file content, or a link's target
	// typeflag overrides the tar type (hard links, devices, FIFOs).
	typeflag byte
}

func tarGz(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Mode: int64(e.mode.Perm()), Format: tar.FormatPAX}
		switch {
		case e.typeflag != 0:
			hdr.Typeflag = e.typeflag
			hdr.Linkname = e.body
		case e.mode&fs.ModeDir != 0:
			hdr.Typeflag = tar.TypeDir
		case e.mode&fs.ModeSymlink != 0:
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.body
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zipOf(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		fh := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		fh.SetMode(e.mode)
		w, err := zw.CreateHeader(fh)
		if err != nil {
			t.Fatal(err)
		}
		if e.mode&fs.ModeDir == 0 {
			if _, err := io.WriteString(w, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// onlyReader hides everything but Read, so zip must spool.
type onlyReader struct{ io.Reader }

var roundTrip = []entry{
	{name: "code/", mode: fs.ModeDir | 0o700},
	{name: "code/train.py", mode: 0o600, body: "print('hi')\n"},
	{name: "code/run.sh", mode: 0o700, body: "#!/bin/sh\necho run\n"},
	{name: "./top.txt", mode: 0o666, body: "top"},
	{name: "deep/er/file.bin", mode: 0o644, body: strings.Repeat("\x00\x01\xff", 1000)},
	{name: "empty", mode: 0o644},
}

// checkRoundTrip asserts dst holds roundTrip with normalized modes.
func checkRoundTrip(t *testing.T, dst string) {
	t.Helper()
	want := map[string]struct {
		mode fs.FileMode
		body string
	}{
		"code":             {fs.ModeDir | 0o755, ""},
		"code/train.py":    {0o644, "print('hi')\n"},
		"code/run.sh":      {0o755, "#!/bin/sh\necho run\n"},
		"top.txt":          {0o644, "top"},
		"deep":             {fs.ModeDir | 0o755, ""},
		"deep/er":          {fs.ModeDir | 0o755, ""},
		"deep/er/file.bin": {0o644, strings.Repeat("\x00\x01\xff", 1000)},
		"empty":            {0o644, ""},
	}
	got := map[string]bool{}
	err := filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dst {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		got[rel] = true
		w, ok := want[rel]
		if !ok {
			t.Errorf("unexpected %s", rel)
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode() != w.mode {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), w.mode)
		}
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if string(b) != w.body {
				t.Errorf("%s: content differs (%d bytes, want %d)", rel, len(b), len(w.body))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for rel := range want {
		if !got[rel] {
			t.Errorf("missing %s", rel)
		}
	}
}

func TestUnpackRoundTrip(t *testing.T) {
	t.Parallel()
	tgz, zp := tarGz(t, roundTrip), zipOf(t, roundTrip)
	zipFile := filepath.Join(t.TempDir(), "a.zip")
	if err := os.WriteFile(zipFile, zp, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    func() io.Reader
	}{
		{"code.tar.gz", func() io.Reader { return bytes.NewReader(tgz) }},
		{"CODE.TGZ", func() io.Reader { return onlyReader{bytes.NewReader(tgz)} }},
		{"code.zip", func() io.Reader { return bytes.NewReader(zp) }},
		{"spooled.zip", func() io.Reader { return onlyReader{bytes.NewReader(zp)} }},
		{"file.zip", func() io.Reader {
			f, err := os.Open(zipFile)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dst := filepath.Join(t.TempDir(), "dst") // created by Unpack
			if err := Unpack(tc.r(), tc.name, dst, UnpackLimits{}); err != nil {
				t.Fatal(err)
			}
			checkRoundTrip(t, dst)
		})
	}
}

func TestUnpackRefuses(t *testing.T) {
	t.Parallel()
	file := entry{name: "ok.txt", mode: 0o644, body: "ok"}
	for _, tc := range []struct {
		name    string
		entries []entry
		zip     bool // also as a zip (tar-only types can't be)
		want    string
	}{
		{"zip slip", []entry{file, {name: "../x", mode: 0o644, body: "x"}}, true, `unpack: entry "../x": path escapes the destination`},
		{"slip inside a path", []entry{{name: "a/../../x", mode: 0o644, body: "x"}}, true, `entry "a/../../x": path escapes the destination`},
		{"absolute", []entry{{name: "/tmp/x", mode: 0o644, body: "x"}}, true, `entry "/tmp/x": absolute path`},
		{"symlink", []entry{{name: "l", mode: fs.ModeSymlink | 0o777, body: "../x"}}, true, `entry "l": symbolic links are not allowed`},
		{"symlink inside", []entry{file, {name: "l", mode: fs.ModeSymlink | 0o777, body: "ok.txt"}}, true, "symbolic links are not allowed"},
		{"hard link", []entry{file, {name: "h", typeflag: tar.TypeLink, body: "ok.txt"}}, false, `entry "h": hard links are not allowed`},
		{"char device", []entry{{name: "null", typeflag: tar.TypeChar}}, false, "device files are not allowed"},
		{"fifo", []entry{{name: "p", typeflag: tar.TypeFifo}}, false, "FIFOs are not allowed"},
	} {
		for _, format := range []string{"a.tar.gz", "a.zip"} {
			if format == "a.zip" && !tc.zip {
				continue
			}
			t.Run(tc.name+" "+format, func(t *testing.T) {
				t.Parallel()
				var archive []byte
				if format == "a.zip" {
					archive = zipOf(t, tc.entries)
				} else {
					archive = tarGz(t, tc.entries)
				}
				parent := t.TempDir()
				dst := filepath.Join(parent, "dst")
				err := Unpack(bytes.NewReader(archive), format, dst, UnpackLimits{})
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one containing %q", err, tc.want)
				}
				if _, err := os.Lstat(filepath.Join(parent, "x")); !os.IsNotExist(err) {
					t.Fatalf("wrote outside the destination: %v", err)
				}
			})
		}
	}
}

// TestUnpackExistingSymlink: a symlink already in dst that points outside
// must not carry a write out (os.Root's job, behind the name checks).
func TestUnpackExistingSymlink(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	dst, outside := filepath.Join(parent, "dst"), filepath.Join(parent, "outside")
	for _, d := range []string{dst, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dst, "link")); err != nil {
		t.Fatal(err)
	}
	archive := tarGz(t, []entry{{name: "link/x", mode: 0o644, body: "x"}})
	if err := Unpack(bytes.NewReader(archive), "a.tgz", dst, UnpackLimits{}); err == nil {
		t.Fatal("unpacked through a symlink out of the destination")
	}
	if _, err := os.Lstat(filepath.Join(outside, "x")); !os.IsNotExist(err) {
		t.Fatalf("wrote outside the destination: %v", err)
	}
}

func TestUnpackLimits(t *testing.T) {
	t.Parallel()
	sixty := strings.Repeat("6", 60)
	for _, tc := range []struct {
		name    string
		entries []entry
		limits  UnpackLimits
		want    string
	}{
		{"entries", []entry{{name: "d/", mode: fs.ModeDir | 0o755}, {name: "d/a", mode: 0o644}, {name: "b", mode: 0o644}, {name: "c", mode: 0o644}},
			UnpackLimits{MaxFiles: 3}, "unpack: more than 3 entries"},
		{"total", []entry{{name: "a", mode: 0o644, body: sixty}, {name: "b", mode: 0o644, body: sixty}},
			UnpackLimits{MaxTotalBytes: 100}, "archive is over the 100-byte total limit"},
		{"one file", []entry{{name: "a", mode: 0o644, body: sixty}},
			UnpackLimits{MaxFileBytes: 50}, `entry "a": file is over the 50-byte limit`},
	} {
		for _, format := range []string{"a.tar.gz", "a.zip"} {
			t.Run(tc.name+" "+format, func(t *testing.T) {
				t.Parallel()
				archive := tarGz(t, tc.entries)
				if format == "a.zip" {
					archive = zipOf(t, tc.entries)
				}
				err := Unpack(bytes.NewReader(archive), format, t.TempDir(), tc.limits)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want one containing %q", err, tc.want)
				}
			})
		}
	}
	t.Run("within limits", func(t *testing.T) {
		t.Parallel()
		entries := []entry{{name: "a", mode: 0o644, body: sixty}, {name: "b", mode: 0o644, body: sixty}}
		if err := Unpack(bytes.NewReader(tarGz(t, entries)), "a.tgz", t.TempDir(), UnpackLimits{MaxFiles: 2, MaxTotalBytes: 120, MaxFileBytes: 60}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestUnpackZipLyingSize: a zip entry that declares 10 bytes but inflates
// to far more is stopped by what is actually written.
func TestUnpackZipLyingSize(t *testing.T) {
	t.Parallel()
	body := bytes.Repeat([]byte("bomb"), 1<<16)
	var deflated bytes.Buffer
	fw, err := flate.NewWriter(&deflated, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(body)
	fw.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{
		Name: "bomb", Method: zip.Deflate, CRC32: crc32.ChecksumIEEE(body),
		CompressedSize64: uint64(deflated.Len()), UncompressedSize64: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(deflated.Bytes())
	zw.Close()

	dst := t.TempDir()
	if err := Unpack(bytes.NewReader(buf.Bytes()), "a.zip", dst, UnpackLimits{MaxFileBytes: 1000}); err == nil {
		t.Fatal("unpacked a zip entry past its limit")
	}
	if fi, err := os.Stat(filepath.Join(dst, "bomb")); err == nil && fi.Size() > 1001 {
		t.Fatalf("wrote %d bytes", fi.Size())
	}
}

func TestUnpackBadInput(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, data, want string
	}{
		{"a.rar", "", `unpack "a.rar": unsupported archive type`},
		{"a.tar.gz", "not gzip", "unpack: not a gzip stream"},
		{"a.zip", "not zip", "unpack: read zip"},
	} {
		err := Unpack(strings.NewReader(tc.data), tc.name, t.TempDir(), UnpackLimits{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}
