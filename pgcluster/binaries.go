package pgcluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

type binaries struct {
	initdb, pgCtl, postgres string
	// dir holds the three; version is what `initdb --version` reports
	// (or the distribution directory's number when it cannot be run).
	dir     string
	version []int
}

// candidate is one directory holding a complete set of server binaries.
type candidate struct {
	dir     string
	version []int // nil: unknown
}

// findBinaries picks the server binaries to run. Several PostgreSQL
// versions may be installed (Debian keeps one directory per major under
// /usr/lib/postgresql, PATH may name yet another), so the first initdb on
// PATH is not necessarily the one to use:
//   - an existing cluster (PG_VERSION in dataDir) needs binaries of its
//     major version; newer ones refuse its files;
//   - a new cluster gets the newest version found.
//
// Candidates are the PATH directories, then the distribution directories;
// among equal versions the earlier one (PATH, what the admin chose) wins.
func findBinaries(dataDir string) (binaries, error) {
	var cands []candidate
	seen := map[string]bool{}
	dirs := filepath.SplitList(os.Getenv("PATH"))
	fallback, _ := filepath.Glob(fallbackGlob)
	slices.Sort(fallback) // deterministic; the choice itself is by version
	for _, d := range append(dirs, fallback...) {
		if d == "" || !complete(d) {
			continue
		}
		// /usr/local/bin/initdb is often a symlink into a distribution
		// directory: one installation, one candidate.
		real, err := filepath.EvalSymlinks(filepath.Join(d, "initdb"))
		if err != nil || seen[real] {
			continue
		}
		seen[real] = true
		v := initdbVersion(filepath.Join(d, "initdb"))
		if v == nil {
			v = dirVersion(d)
		}
		cands = append(cands, candidate{dir: d, version: v})
	}
	c, err := chooseBinaries(cands, clusterVersion(dataDir))
	if err != nil {
		return binaries{}, err
	}
	return binaries{initdb: filepath.Join(c.dir, "initdb"), pgCtl: filepath.Join(c.dir, "pg_ctl"),
		postgres: filepath.Join(c.dir, "postgres"), dir: c.dir, version: c.version}, nil
}

// chooseBinaries is the decision of findBinaries over candidates in
// preference order: for an existing cluster of major version cluster (nil
// for a new one) the first candidate of that major (else the first of
// unknown version); otherwise the newest, earliest among equals. Unknown
// versions lose to known ones.
func chooseBinaries(cands []candidate, cluster []int) (candidate, error) {
	if len(cands) == 0 {
		return candidate{}, ErrBinariesNotFound
	}
	if cluster != nil {
		for _, c := range cands {
			if slices.Equal(major(c.version), cluster) {
				return c, nil
			}
		}
		// A set whose version could not be read may still be the right
		// one; postgres itself refuses a mismatching data directory.
		for _, c := range cands {
			if c.version == nil {
				return c, nil
			}
		}
		var found []string
		for _, c := range cands {
			found = append(found, fmt.Sprintf("%s (%s)", c.dir, versionString(c.version)))
		}
		return candidate{}, fmt.Errorf("%w: the cluster was initialised by PostgreSQL %s, but only these server binaries were found: %s; "+
			"install PostgreSQL %s's server binaries (or upgrade the cluster with pg_upgrade)",
			ErrBinariesNotFound, versionString(cluster), strings.Join(found, ", "), versionString(cluster))
	}
	best := cands[0]
	for _, c := range cands[1:] {
		if slices.Compare(c.version, best.version) > 0 {
			best = c
		}
	}
	return best, nil
}

// major is the part of a version that must match a cluster's PG_VERSION:
// the first number from PostgreSQL 10 on, the first two before (9.6).
func major(v []int) []int {
	switch {
	case len(v) == 0:
		return nil
	case v[0] >= 10 || len(v) == 1:
		return v[:1]
	default:
		return v[:2]
	}
}

func versionString(v []int) string {
	if v == nil {
		return "unknown"
	}
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ".")
}

// complete reports whether dir holds all three server binaries.
func complete(dir string) bool {
	for _, n := range []string{"initdb", "pg_ctl", "postgres"} {
		if !isExecutable(filepath.Join(dir, n)) {
			return false
		}
	}
	return true
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// initdbVersion runs `initdb --version` ("initdb (PostgreSQL) 16.4 (Debian
// 16.4-1)"); nil if it cannot be run or read. --version is answered before
// initdb's refusal to run as root.
func initdbVersion(initdb string) []int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, initdb, "--version").Output()
	if err != nil {
		return nil
	}
	_, rest, ok := bytes.Cut(out, []byte("(PostgreSQL) "))
	if !ok {
		return nil
	}
	return parseVersion(string(rest))
}

// parseVersion reads the leading dotted numbers of s: "16.4 (Debian)" →
// [16 4], "17beta1" → [17], "9.6.24" → [9 6 24].
func parseVersion(s string) []int {
	var v []int
	for f := range strings.SplitSeq(s, ".") {
		end := strings.IndexFunc(f, func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(f)
		}
		n, err := strconv.Atoi(f[:end])
		if err != nil {
			break
		}
		v = append(v, n)
		if end < len(f) {
			break
		}
	}
	return v
}

// dirVersion reads "16" from /usr/lib/postgresql/16/bin.
func dirVersion(binDir string) []int {
	base := filepath.Base(filepath.Dir(binDir))
	v := parseVersion(base)
	if versionString(v) != base {
		return nil
	}
	return v
}

// clusterVersion reads dataDir/PG_VERSION (e.g. "15", "9.6"); nil when the
// cluster does not exist yet.
func clusterVersion(dataDir string) []int {
	b, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if err != nil {
		return nil
	}
	return parseVersion(strings.TrimSpace(string(b)))
}

// BinDir is the directory of the server binaries the cluster runs.
func (c *Cluster) BinDir() string { return c.bins.dir }

// Version is the PostgreSQL version of those binaries ("15.18"), or
// "unknown".
func (c *Cluster) Version() string { return versionString(c.bins.version) }
