package pgcluster

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary a process that starts a cluster and
// then waits to be killed (see TestMain).
const helperEnv = "PGCLUSTER_TEST_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(runClusterHelper(dir))
	}
	os.Exit(m.Run())
}

// helperCluster keeps the helper's Cluster reachable: a collected one
// would have its pipe closed by the *os.File finalizer, and the watchdog
// would stop the server before the test kills the helper.
var helperCluster *Cluster

func runClusterHelper(dir string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := Start(ctx, Options{Dir: dir})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	helperCluster = c
	fmt.Println("ready")
	select {} // until SIGKILL
}

// postmasterPID reads the first line of postmaster.pid.
func postmasterPID(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// alive reports whether pid runs (a zombie does not: whoever adopted it
// may reap it late).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// kill -9 of the process that started the cluster must not leave
// PostgreSQL running: its watchdog stops it, cleanly.
func TestKilledOwnerStopsCluster(t *testing.T) {
	dir := filepath.Join(tempDir(t), "postgres")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && sc.Text() == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("helper exited without starting the cluster")
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("helper did not start the cluster in 2 minutes")
	}
	dataDir := filepath.Join(dir, "data")
	pid := postmasterPID(t, dataDir)
	if !alive(pid) {
		t.Fatalf("postmaster %d is not running", pid)
	}
	t.Cleanup(func() {
		if alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGQUIT) // don't leave it behind if the test failed
		}
	})

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	start := time.Now()
	for deadline := start.Add(30 * time.Second); ; {
		_, pidErr := os.Stat(filepath.Join(dataDir, "postmaster.pid"))
		if !alive(pid) && os.IsNotExist(pidErr) {
			break // stopped, and cleanly: postgres removes its pid file on shutdown
		}
		if time.Now().After(deadline) {
			t.Fatalf("postmaster %d still running (or left postmaster.pid) 30s after its owner was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("postmaster gone %v after SIGKILL of its owner", time.Since(start).Round(time.Millisecond))

	// The directory is free again for the next run.
	c := startCluster(t, dir)
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The watchdog must not depend on PATH: a maestro started with a minimal
// PATH (no cat) still gets a cluster that stops when the owner's end of the
// pipe closes, which is what the owner's death does. A watchdog that ran
// `cat` would fail at once and either exit (the server then outlives its
// owner) or stop the server while it was starting.
func TestWatchdogNeedsNoPATH(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // nothing on it; the binaries come from fallbackGlob
	c := startCluster(t, filepath.Join(tempDir(t), "postgres"))
	pid := postmasterPID(t, c.dataDir)
	select {
	case <-c.watchdog.done:
		t.Fatal("the watchdog exited while its owner lives")
	default:
	}
	if !alive(pid) {
		t.Fatalf("postmaster %d is not running after Start", pid)
	}
	_ = c.watchdog.w.Close() // the owner dies: the kernel closes its files
	select {
	case <-c.watchdog.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the watchdog did not finish within 30s of its owner's death")
	}
	// pg_ctl returns once postmaster.pid is gone; the process itself may
	// take a moment longer to exit.
	for deadline := time.Now().Add(10 * time.Second); alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("postmaster %d still runs 10s after the watchdog finished", pid)
		}
	}
}
