package artifacts

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type fsFixture struct {
	s   *FS
	dir string
}

func (f fsFixture) leftovers(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(f.dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func (f fsFixture) putAt(t *testing.T, data []byte, at time.Time) Digest {
	t.Helper()
	d := mustPut(t, f.s, data)
	if err := os.Chtimes(f.s.path(d), at, at); err != nil {
		t.Fatal(err)
	}
	return d
}

func openFS(t *testing.T) (Store, fixture) {
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatalf("NewFS: %v", err)
	}
	return s, fsFixture{s: s, dir: dir}
}

func TestFSContract(t *testing.T) {
	runContract(t, backend{name: "fs", open: openFS})
}

// Artifacts may be proprietary models: nobody but the server's user reads them.
func TestFSPermissions(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := mustPut(t, s, []byte("weights"))
	checks := map[string]os.FileMode{
		s.path(d):                   0o600,
		filepath.Dir(s.path(d)):     0o700,
		filepath.Join(dir, "blobs"): 0o700,
		filepath.Join(dir, "tmp"):   0o700,
	}
	for p, want := range checks {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s: mode %v, want at most %v", p, got, want)
		}
	}
}

// A crashed upload's temp file goes on the next start, a live one stays.
func TestFSCleansAbandonedTempFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewFS(dir); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	abandoned, live := filepath.Join(tmp, "put-abandoned"), filepath.Join(tmp, "put-live")
	for _, p := range []string{abandoned, live} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(abandoned, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFS(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(abandoned); !os.IsNotExist(err) {
		t.Errorf("abandoned temp file still there (%v)", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live temp file removed: %v", err)
	}
}

// Walk reports blobs only: stray files are neither listed nor collected.
func TestFSWalkSkipsStrayFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := mustPut(t, s, []byte("model"))
	hex := d.Hex()
	strays := []string{
		filepath.Join(dir, "blobs", "sha256", hex[:2], "notes.txt"),
		filepath.Join(dir, "blobs", "sha256", "zz", hex), // wrong fan-out directory
	}
	for _, p := range strays {
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got := blobs(t, s)
	if len(got) != 1 || got[d] != 5 {
		t.Errorf("Walk = %v, want only %s", got, d)
	}
	if _, err := GC(context.Background(), s, func(Digest) bool { return false }, 0, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, p := range strays {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("GC touched %s: %v", p, err)
		}
	}
	if _, _, err := s.Put(context.Background(), bytes.NewReader(nil), -1, "sha256:nope"); err == nil {
		t.Error("Put accepted a malformed expected digest")
	}
}
