package pgcluster

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	for in, want := range map[string][]int{
		"16.4 (Debian 16.4-1.pgdg120+2)\n": {16, 4},
		"15.18":                            {15, 18},
		"17beta1":                          {17},
		"9.6.24":                           {9, 6, 24},
		"18devel":                          {18},
		"":                                 nil,
		"x.1":                              nil,
	} {
		if got := parseVersion(in); !slices.Equal(got, want) {
			t.Errorf("parseVersion(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestChooseBinaries(t *testing.T) {
	pathOld := candidate{dir: "/usr/local/bin", version: []int{15, 18}}
	dist15 := candidate{dir: "/usr/lib/postgresql/15/bin", version: []int{15, 18}}
	dist16 := candidate{dir: "/usr/lib/postgresql/16/bin", version: []int{16, 4}}
	dist17 := candidate{dir: "/usr/lib/postgresql/17/bin", version: []int{17, 0}}
	old96 := candidate{dir: "/opt/pg96/bin", version: []int{9, 6, 24}}
	unknown := candidate{dir: "/opt/custom/bin"}
	tests := []struct {
		name    string
		cands   []candidate
		cluster []int
		want    string
		err     bool
	}{
		{"new cluster: newest wins over PATH order", []candidate{pathOld, dist16, dist17}, nil, dist17.dir, false},
		{"new cluster: equal versions keep PATH first", []candidate{pathOld, dist15}, nil, pathOld.dir, false},
		{"new cluster: 10 is newer than 9.6", []candidate{old96, dist16}, nil, dist16.dir, false},
		{"new cluster: known beats unknown", []candidate{unknown, dist15}, nil, dist15.dir, false},
		{"existing cluster keeps its major", []candidate{dist17, dist16, dist15}, []int{16}, dist16.dir, false},
		{"existing 9.6 cluster matches two numbers", []candidate{dist17, old96}, []int{9, 6}, old96.dir, false},
		{"existing cluster, unknown version may fit", []candidate{dist17, unknown}, []int{15}, unknown.dir, false},
		{"existing cluster, no binaries of its major", []candidate{dist17, dist16}, []int{15}, "", true},
		{"nothing installed", nil, nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := chooseBinaries(tt.cands, tt.cluster)
			if tt.err {
				if !errors.Is(err, ErrBinariesNotFound) {
					t.Fatalf("err = %v, want ErrBinariesNotFound", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.dir != tt.want {
				t.Fatalf("chose %s, want %s", got.dir, tt.want)
			}
		})
	}
}

// fakeInstall makes dir/{initdb,pg_ctl,postgres}; initdb answers --version
// with version, as the real one does.
func fakeInstall(t *testing.T, dir, version string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho 'initdb (PostgreSQL) " + version + " (Fake " + version + "-1)'\n"
	for _, n := range []string{"initdb", "pg_ctl", "postgres"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// With several versions installed, the first initdb on PATH is not the
// choice: a new cluster gets the newest, an existing one its own major.
func TestFindBinariesPrefersNewest(t *testing.T) {
	root := t.TempDir()
	onPath := filepath.Join(root, "path-bin") // what `which initdb` finds first
	fakeInstall(t, onPath, "15.18")
	newer := filepath.Join(root, "opt", "bin") // later on PATH, no version in its name
	fakeInstall(t, newer, "17.2")
	fakeInstall(t, filepath.Join(root, "dist", "16", "bin"), "16.6")
	t.Setenv("PATH", strings.Join([]string{onPath, newer}, string(os.PathListSeparator)))
	old := fallbackGlob
	fallbackGlob = filepath.Join(root, "dist", "*", "bin")
	t.Cleanup(func() { fallbackGlob = old })

	data := filepath.Join(root, "data")
	b, err := findBinaries(data)
	if err != nil {
		t.Fatal(err)
	}
	if b.dir != newer || versionString(b.version) != "17.2" || b.initdb != filepath.Join(newer, "initdb") {
		t.Fatalf("new cluster: chose %s (%s), want %s (17.2)", b.dir, versionString(b.version), newer)
	}

	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	for major, want := range map[string]string{"15": onPath, "16": filepath.Join(root, "dist", "16", "bin")} {
		if err := os.WriteFile(filepath.Join(data, "PG_VERSION"), []byte(major+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := findBinaries(data)
		if err != nil {
			t.Fatal(err)
		}
		if b.dir != want {
			t.Fatalf("cluster of PostgreSQL %s: chose %s, want %s", major, b.dir, want)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "PG_VERSION"), []byte("14\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := findBinaries(data); !errors.Is(err, ErrBinariesNotFound) || !strings.Contains(err.Error(), "PostgreSQL 14") {
		t.Fatalf("cluster of PostgreSQL 14 with only 15-17 installed: %v", err)
	}
}

// Start reports which binaries run the cluster (the serve banner shows it).
func TestClusterNamesItsBinaries(t *testing.T) {
	c := startCluster(t, filepath.Join(tempDir(t), "postgres"))
	if c.BinDir() == "" || !complete(c.BinDir()) {
		t.Fatalf("BinDir %q does not hold the server binaries", c.BinDir())
	}
	if v := initdbVersion(filepath.Join(c.BinDir(), "initdb")); c.Version() != versionString(v) || c.Version() == "unknown" {
		t.Fatalf("Version %q, initdb --version says %v", c.Version(), v)
	}
}
