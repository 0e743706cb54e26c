package runner

import (
	"archive/tar"
	"archive/zip"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// UnpackLimits bounds what Unpack writes; a zero field takes its default.
type UnpackLimits struct {
	// MaxFiles bounds the entries (files and directories); default 10,000.
	MaxFiles int
	// MaxTotalBytes bounds the uncompressed bytes of all files; default 2 GiB.
	MaxTotalBytes int64
	// MaxFileBytes bounds the uncompressed bytes of one file; default
	// MaxTotalBytes.
	MaxFileBytes int64
}

// Default unpack limits.
const (
	DefaultUnpackMaxFiles      = 10_000
	DefaultUnpackMaxTotalBytes = 2 << 30
)

func (l UnpackLimits) withDefaults() UnpackLimits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultUnpackMaxFiles
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = DefaultUnpackMaxTotalBytes
	}
	if l.MaxFileBytes <= 0 || l.MaxFileBytes > l.MaxTotalBytes {
		l.MaxFileBytes = l.MaxTotalBytes
	}
	return l
}

// Unpack unpacks the archive r into dst (created if missing), choosing the
// format by name's suffix: .tar.gz or .tgz, or .zip. Archives are untrusted
// (anyone who can log a run artifact can submit one), so it refuses
// absolute paths, paths escaping dst, links of any kind (a link's target is
// a second path to police; jobs don't need them), devices and FIFOs, and
// stops at limits' bounds. Files get mode 0755 if the archive gives them any
// execute bit, else 0644; directories 0755. On error, dst may hold part of
// the archive.
func Unpack(r io.Reader, name string, dst string, limits UnpackLimits) error {
	lower := strings.ToLower(name)
	var unpack func(io.Reader, *unpacker) error
	switch {
	case strings.HasSuffix(lower, ".tar.gz"), strings.HasSuffix(lower, ".tgz"):
		unpack = unpackTarGz
	case strings.HasSuffix(lower, ".zip"):
		unpack = unpackZip
	default:
		return fmt.Errorf("unpack %q: unsupported archive type (want .tar.gz, .tgz or .zip)", name)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	// os.Root keeps every write beneath dst even through a symlink that was
	// already there: a second line behind the name checks below.
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()
	return unpack(r, &unpacker{root: root, limits: limits.withDefaults()})
}

func unpackTarGz(r io.Reader, u *unpacker) error {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return fmt.Errorf("unpack: not a gzip stream: %w", err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unpack: read tar: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // pax metadata for the whole archive, not a file
		}
		rel, err := u.entry(hdr.Name)
		if err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = u.dir(hdr.Name, rel)
		case tar.TypeReg:
			err = u.file(hdr.Name, rel, hdr.FileInfo().Mode(), hdr.Size, tr)
		case tar.TypeSymlink:
			err = entryError(hdr.Name, "symbolic links are not allowed")
		case tar.TypeLink:
			err = entryError(hdr.Name, "hard links are not allowed")
		case tar.TypeChar, tar.TypeBlock:
			err = entryError(hdr.Name, "device files are not allowed")
		case tar.TypeFifo:
			err = entryError(hdr.Name, "FIFOs are not allowed")
		default:
			err = entryError(hdr.Name, fmt.Sprintf("unsupported tar entry type %q", hdr.Typeflag))
		}
		if err != nil {
			return err
		}
	}
}

func unpackZip(r io.Reader, u *unpacker) error {
	ra, size, done, err := readerAt(r, u.limits)
	if err != nil {
		return err
	}
	defer done()
	zr, err := zip.NewReader(ra, size)
	// ErrInsecurePath (GODEBUG zipinsecurepath=0) comes with a usable
	// reader; the names are checked below either way.
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		return fmt.Errorf("unpack: read zip: %w", err)
	}
	for _, f := range zr.File {
		rel, err := u.entry(f.Name)
		if err != nil {
			return err
		}
		mode := f.Mode()
		switch {
		case mode&fs.ModeSymlink != 0:
			err = entryError(f.Name, "symbolic links are not allowed")
		case mode&(fs.ModeDevice|fs.ModeCharDevice) != 0:
			err = entryError(f.Name, "device files are not allowed")
		case mode&(fs.ModeNamedPipe|fs.ModeSocket) != 0:
			err = entryError(f.Name, "FIFOs and sockets are not allowed")
		case mode.IsDir():
			err = u.dir(f.Name, rel)
		case mode.IsRegular():
			err = u.zipFile(f, rel)
		default:
			err = entryError(f.Name, fmt.Sprintf("unsupported zip entry mode %v", mode))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// readerAt gives zip the random access it needs, spooling r to a temporary
// file unless it already offers it. The spool is bounded: compressed data
// is never much larger than what it unpacks to, so an archive far over the
// total limit is refused before it fills the disk.
func readerAt(r io.Reader, limits UnpackLimits) (io.ReaderAt, int64, func(), error) {
	if s, ok := r.(interface {
		io.ReaderAt
		Size() int64
	}); ok {
		return s, s.Size(), func() {}, nil
	}
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			return f, fi.Size(), func() {}, nil
		}
	}
	tmp, err := os.CreateTemp("", "maestro-unpack-*.zip")
	if err != nil {
		return nil, 0, nil, fmt.Errorf("unpack: spool zip: %w", err)
	}
	done := func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}
	limit := limits.MaxTotalBytes + 64<<20 // headers and deflate overhead
	n, err := io.Copy(tmp, io.LimitReader(r, limit+1))
	if err != nil {
		done()
		return nil, 0, nil, fmt.Errorf("unpack: spool zip: %w", err)
	}
	if n > limit {
		done()
		return nil, 0, nil, fmt.Errorf("unpack: zip archive is over %d bytes", limit)
	}
	return tmp, n, done, nil
}

// unpacker writes entries beneath root and keeps count against the limits.
type unpacker struct {
	root   *os.Root
	limits UnpackLimits
	files  int
	total  int64
}

func entryError(name, msg string) error {
	return fmt.Errorf("unpack: entry %q: %s", name, msg)
}

func wrapEntry(name string, err error) error {
	return fmt.Errorf("unpack: entry %q: %w", name, err)
}

// entry checks an entry's name and counts it; it returns the path relative
// to the destination ("." for the destination itself).
func (u *unpacker) entry(name string) (string, error) {
	switch {
	case name == "":
		return "", entryError(name, "empty name")
	case strings.ContainsRune(name, 0):
		return "", entryError(name, "NUL in name")
	case strings.HasPrefix(name, "/"):
		return "", entryError(name, "absolute path")
	}
	rel := path.Clean(name)
	if !filepath.IsLocal(rel) && rel != "." {
		return "", entryError(name, "path escapes the destination")
	}
	u.files++
	if u.files > u.limits.MaxFiles {
		return "", fmt.Errorf("unpack: more than %d entries", u.limits.MaxFiles)
	}
	return rel, nil
}

func (u *unpacker) dir(name, rel string) error {
	if err := u.root.MkdirAll(rel, 0o755); err != nil {
		return wrapEntry(name, err)
	}
	return nil
}

func (u *unpacker) zipFile(f *zip.File, rel string) error {
	if f.UncompressedSize64 > uint64(u.limits.MaxFileBytes) {
		return entryError(f.Name, fmt.Sprintf("file is over the %d-byte limit", u.limits.MaxFileBytes))
	}
	rc, err := f.Open()
	if err != nil {
		return wrapEntry(f.Name, err)
	}
	defer rc.Close()
	return u.file(f.Name, rel, f.Mode(), int64(f.UncompressedSize64), rc)
}

// file writes one regular file. The size an archive declares is checked
// first for a quick refusal, but the bytes actually written are what is
// counted: a zip's declared size can lie.
func (u *unpacker) file(name, rel string, mode fs.FileMode, size int64, r io.Reader) error {
	if rel == "." {
		return entryError(name, "not a file name")
	}
	if size > u.limits.MaxFileBytes {
		return entryError(name, fmt.Sprintf("file is over the %d-byte limit", u.limits.MaxFileBytes))
	}
	if size > u.limits.MaxTotalBytes-u.total {
		return fmt.Errorf("unpack: archive is over the %d-byte total limit", u.limits.MaxTotalBytes)
	}
	perm := fs.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	if dir := path.Dir(rel); dir != "." {
		if err := u.root.MkdirAll(dir, 0o755); err != nil {
			return wrapEntry(name, err)
		}
	}
	f, err := u.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return wrapEntry(name, err)
	}
	room := min(u.limits.MaxFileBytes, u.limits.MaxTotalBytes-u.total)
	n, err := io.Copy(f, io.LimitReader(r, room+1))
	u.total += n
	if err == nil && n > room {
		f.Close()
		if n > u.limits.MaxFileBytes {
			return entryError(name, fmt.Sprintf("file is over the %d-byte limit", u.limits.MaxFileBytes))
		}
		return fmt.Errorf("unpack: archive is over the %d-byte total limit", u.limits.MaxTotalBytes)
	}
	if err == nil {
		// Chmod rather than OpenFile's perm alone: the umask would
		// otherwise decide, and an existing file keeps its old mode.
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return wrapEntry(name, err)
	}
	return nil
}
