package artifacts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/maestro-ml/maestro/internal/durable"
)

// FS stores blobs as files under a data directory:
// dir/blobs/sha256/ab/<hex> (the two-character fan-out keeps directories small
// enough to list), uploads in progress in dir/tmp. Both live on one file system,
// so publishing a blob is an atomic rename: a reader sees all of it or nothing.
type FS struct {
	blobs string // dir/blobs/sha256
	tmp   string // dir/tmp
}

var _ Store = (*FS)(nil)

// copyBufSize is the one buffer an upload or a Throughput read holds; large
// enough that the per-read overhead vanishes next to hashing.
const copyBufSize = 1 << 20

// NewFS opens (creating if needed) a blob store in dir and removes temporary
// files that a crashed process left behind more than an hour ago.
func NewFS(dir string) (*FS, error) {
	s := &FS{blobs: filepath.Join(dir, "blobs", "sha256"), tmp: filepath.Join(dir, "tmp")}
	// 0700: artifacts may be proprietary models, and nothing but this process
	// needs to read them directly.
	for _, d := range []string{s.blobs, s.tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("artifacts: create %s: %w", d, err)
		}
	}
	if err := s.cleanTemp(time.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

// cleanTemp removes abandoned uploads. Another process sharing the directory
// may be uploading right now, so only files idle longer than tempMaxAge go.
func (s *FS) cleanTemp(now time.Time) error {
	entries, err := os.ReadDir(s.tmp)
	if err != nil {
		return fmt.Errorf("artifacts: list %s: %w", s.tmp, err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) || (err == nil && !info.Mode().IsRegular()) {
			continue
		}
		if err != nil {
			return fmt.Errorf("artifacts: stat temp file %s: %w", e.Name(), err)
		}
		if now.Sub(info.ModTime()) <= tempMaxAge {
			continue
		}
		if err := os.Remove(filepath.Join(s.tmp, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("artifacts: remove abandoned temp file: %w", err)
		}
	}
	return nil
}

func (s *FS) path(d Digest) string {
	h := d.Hex()
	return filepath.Join(s.blobs, h[:2], h)
}

// writerOnly hides *os.File's ReadFrom so io.CopyBuffer uses our buffer
// instead of the 32 KiB one os.File's generic fallback would allocate.
type writerOnly struct{ io.Writer }

// Put writes the body to a temporary file while hashing it, makes the file
// durable, and renames it to its content address.
func (s *FS) Put(ctx context.Context, r io.Reader, maxBytes int64, want Digest) (_ Digest, _ int64, err error) {
	if want != "" {
		if err := want.valid(); err != nil {
			return "", 0, err
		}
	}
	f, err := os.CreateTemp(s.tmp, "put-*") // mode 0600
	if err != nil {
		return "", 0, fmt.Errorf("artifacts: create temp file: %w", err)
	}
	tmp := f.Name()
	published := false
	defer func() {
		if f != nil {
			f.Close()
		}
		if !published {
			// Also right after a successful rename fails half-way: the name
			// is gone then and Remove's error is irrelevant.
			os.Remove(tmp)
		}
	}()

	m := newMeter(ctx, r, maxBytes)
	if _, err := io.CopyBuffer(writerOnly{f}, m, make([]byte, copyBufSize)); err != nil {
		return "", 0, fmt.Errorf("artifacts: store upload: %w", m.cause(err))
	}
	d, err := m.check(want)
	if err != nil {
		return "", 0, err
	}
	// The event naming this blob may be recorded the moment Put returns, so
	// the bytes must be on disk before the name is.
	if err := f.Sync(); err != nil {
		return "", 0, fmt.Errorf("artifacts: sync temp file: %w", err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return "", 0, fmt.Errorf("artifacts: close temp file: %w", err)
	}
	// A caller that gave up will record no event; don't publish for it.
	if err := ctx.Err(); err != nil {
		return "", 0, fmt.Errorf("artifacts: store upload: %w", err)
	}

	target := s.path(d)
	// Same content already stored: refresh its time instead of rewriting it,
	// so GC's grace period protects it until the caller's event exists. If GC
	// removed it in between, Chtimes fails and the rename below restores it.
	now := time.Now()
	if err := os.Chtimes(target, now, now); err == nil {
		return d, m.n, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", 0, fmt.Errorf("artifacts: refresh %s: %w", d, err)
	}
	fan := filepath.Dir(target)
	if err := mkdirSynced(fan); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp, target); err != nil {
		return "", 0, fmt.Errorf("artifacts: publish %s: %w", d, err)
	}
	published = true
	// The rename is durable only once the directory entry is.
	if err := syncDir(fan); err != nil {
		return "", 0, err
	}
	return d, m.n, nil
}

// mkdirSynced creates a fan-out directory and makes its entry durable, so a
// crash cannot keep a blob whose directory vanished.
func mkdirSynced(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("artifacts: create %s: %w", dir, err)
	}
	return syncDir(filepath.Dir(dir))
}

// syncDir makes a directory's new entries durable.
func syncDir(dir string) error {
	if err := durable.SyncDir(dir); err != nil {
		return fmt.Errorf("artifacts: sync %s: %w", dir, err)
	}
	return nil
}

// fsBlob is an open blob file with its size taken at open time.
type fsBlob struct {
	*os.File
	size int64
}

func (b *fsBlob) Size() int64 { return b.size }

// Open opens the blob file; the file stays readable even if GC unlinks it
// while a download is in progress.
func (s *FS) Open(ctx context.Context, d Digest) (Blob, error) {
	if err := d.valid(); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("artifacts: open %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("artifacts: open %s: %w", d, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("artifacts: stat %s: %w", d, err)
	}
	return &fsBlob{File: f, size: info.Size()}, nil
}

// Delete unlinks the blob file.
func (s *FS) Delete(ctx context.Context, d Digest) error {
	if err := d.valid(); err != nil {
		return err
	}
	if err := os.Remove(s.path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("artifacts: delete %s: %w", d, err)
	}
	return nil
}

// Walk visits the fan-out directories in lexical order. Files whose names are
// not digests (or sit in the wrong fan-out directory) are not blobs and are
// skipped, so GC never deletes what it did not write.
func (s *FS) Walk(ctx context.Context, fn func(d Digest, size int64, modified time.Time) error) error {
	fans, err := os.ReadDir(s.blobs)
	if err != nil {
		return fmt.Errorf("artifacts: list %s: %w", s.blobs, err)
	}
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(s.blobs, fan.Name()))
		if err != nil {
			return fmt.Errorf("artifacts: list %s: %w", fan.Name(), err)
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			d, err := ParseDigest(digestPrefix + e.Name())
			if err != nil || d.Hex()[:2] != fan.Name() || !e.Type().IsRegular() {
				continue
			}
			// Info stats now, not when the directory was listed, so the time
			// GC judges is as fresh as it can be.
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted since the listing
			}
			if err != nil {
				return fmt.Errorf("artifacts: stat %s: %w", d, err)
			}
			if err := fn(d, info.Size(), info.ModTime()); err != nil {
				return err
			}
		}
	}
	return nil
}
