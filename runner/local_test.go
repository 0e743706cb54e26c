//go:build linux

package runner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// lineLog is a LogSink that keeps every line.
type lineLog struct {
	mu    sync.Mutex
	lines []Line
}

func (c *lineLog) sink(l Line) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, l)
}

func (c *lineLog) stream(s Stream) []Line {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Line
	for _, l := range c.lines {
		if l.Stream == s {
			out = append(out, l)
		}
	}
	return out
}

func (c *lineLog) texts(s Stream) []string {
	var out []string
	for _, l := range c.stream(s) {
		out = append(out, l.Text)
	}
	return out
}

// waitLine polls until stream s has had n lines and returns the first n texts.
func (c *lineLog) waitLines(t *testing.T, s Stream, n int) []string {
	t.Helper()
	poll(t, 5*time.Second, fmt.Sprintf("%d %s lines", n, s), func() bool { return len(c.stream(s)) >= n })
	return c.texts(s)[:n]
}

// poll fails the test unless cond becomes true before the timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startLocal starts spec and makes sure the attempt is over when the test is.
func startLocal(t *testing.T, cfg LocalConfig, spec Spec, logs LogSink) *LocalHandle {
	t.Helper()
	if spec.JobID == "" {
		spec.JobID = "job-" + strings.ReplaceAll(t.Name(), "/", "_")
	}
	h, err := NewLocal(cfg).Start(context.Background(), spec, logs)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		h.Stop()
		h.Wait()
	})
	return h.(*LocalHandle)
}

// waitResult is Wait with a deadline, so a hang fails instead of timing out
// the whole test binary.
func waitResult(t *testing.T, h Handle, timeout time.Duration) Result {
	t.Helper()
	ch := make(chan Result, 1)
	go func() { ch <- h.Wait() }()
	select {
	case r := <-ch:
		return r
	case <-time.After(timeout):
		t.Fatalf("attempt did not end within %v", timeout)
		return Result{}
	}
}

// gone reports whether pid is dead. A dead process reparented to a PID 1
// that doesn't reap stays a zombie, which still answers kill(pid, 0).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// killLater makes sure a process a test let escape does not outlive it.
func killLater(t *testing.T, pid int) {
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
}

func sh(script string) []string { return []string{"sh", "-c", script} }

func TestLocalName(t *testing.T) {
	t.Parallel()
	if got := NewLocal(LocalConfig{}).Name(); got != "local" {
		t.Fatalf("Name() = %q", got)
	}
}

func TestLocalExitCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		script string
		want   Result
	}{
		{"exit 0", Result{ExitCode: 0}},
		{"exit 3", Result{ExitCode: 3}},
		{"kill -SEGV $$", Result{ExitCode: 128 + int(syscall.SIGSEGV), Signal: "SIGSEGV"}},
	} {
		t.Run(tc.script, func(t *testing.T) {
			t.Parallel()
			h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{Command: sh(tc.script)}, nil)
			if got := waitResult(t, h, 10*time.Second); got != tc.want {
				t.Fatalf("result = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLocalOutputStreams(t *testing.T) {
	t.Parallel()
	var logs lineLog
	before := time.Now()
	h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{
		Command: sh("echo out1; echo err1 >&2; echo out2; echo err2 >&2; echo; printf out3"),
	}, logs.sink)
	if r := waitResult(t, h, 10*time.Second); r.ExitCode != 0 {
		t.Fatalf("result = %+v", r)
	}
	after := time.Now()
	if got, want := logs.texts(Stdout), []string{"out1", "out2", "", "out3"}; !slices.Equal(got, want) {
		t.Errorf("stdout = %q, want %q", got, want)
	}
	if got, want := logs.texts(Stderr), []string{"err1", "err2"}; !slices.Equal(got, want) {
		t.Errorf("stderr = %q, want %q", got, want)
	}
	for _, s := range []Stream{Stdout, Stderr} {
		var prev time.Time
		for _, l := range logs.stream(s) {
			if l.Time.Before(before) || l.Time.After(after) || l.Time.Before(prev) {
				t.Errorf("%s line %q: time %v not in order within [%v, %v]", s, l.Text, l.Time, before, after)
			}
			prev = l.Time
		}
	}
}

// TestLocalLineShapes feeds the reader the lines that break naive capture:
// far over MaxLineBytes, cut inside a rune, CRLF, invalid UTF-8 and NUL,
// exactly MaxLineBytes, and a last line without a newline.
func TestLocalLineShapes(t *testing.T) {
	t.Parallel()
	var in bytes.Buffer
	in.WriteString(strings.Repeat("x", 1<<20) + "\n")
	in.WriteString("next\n")
	in.WriteString("a" + strings.Repeat("é", MaxLineBytes) + "\n")
	in.WriteString("after\r\n")
	in.WriteString("bad\xff\x00end\n")
	in.WriteString(strings.Repeat("z", MaxLineBytes) + "\n")
	in.WriteString(strings.Repeat("\xff\x00", MaxLineBytes) + "\n")
	in.WriteString("last")
	file := filepath.Join(t.TempDir(), "out")
	if err := os.WriteFile(file, in.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	var logs lineLog
	h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{Command: []string{"cat", file}}, logs.sink)
	if r := waitResult(t, h, 10*time.Second); r.ExitCode != 0 {
		t.Fatalf("result = %+v", r)
	}
	got := logs.texts(Stdout)
	want := []string{
		strings.Repeat("x", MaxLineBytes),
		"next",
		"a" + strings.Repeat("é", (MaxLineBytes-1)/2), // the cut "é" is dropped whole
		"after",
		"bad\uFFFD\uFFFDend",
		strings.Repeat("z", MaxLineBytes),
		strings.Repeat("\uFFFD", MaxLineBytes/3),
		"last",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %d bytes %.40q…, want %d bytes %.40q…", i, len(got[i]), got[i], len(want[i]), want[i])
		}
		if !utf8.ValidString(got[i]) || len(got[i]) > MaxLineBytes {
			t.Errorf("line %d: invalid UTF-8 or longer than MaxLineBytes (%d)", i, len(got[i]))
		}
	}
}

// TestLocalFlood checks a child writing ~50 MB as fast as it can is never
// held up by its log capture, even when the sink drops everything.
func TestLocalFlood(t *testing.T) {
	t.Parallel()
	const size = 50 << 20
	for name, script := range map[string]string{
		"lines":    fmt.Sprintf("yes 'the quick brown fox jumps over the lazy dog 0123456789' | head -c %d", size),
		"one line": fmt.Sprintf("head -c %d /dev/zero | tr '\\0' x; echo; echo done", size),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var n atomic.Int64
			var last atomic.Value
			start := time.Now()
			h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{Command: sh(script)}, func(l Line) {
				n.Add(1)
				last.Store(l.Text)
			})
			r := waitResult(t, h, 60*time.Second)
			if r.ExitCode != 0 {
				t.Fatalf("result = %+v", r)
			}
			t.Logf("%d lines in %v", n.Load(), time.Since(start))
			if name == "one line" && (n.Load() != 2 || last.Load() != "done") {
				t.Fatalf("got %d lines ending %q, want the cut line and \"done\"", n.Load(), last.Load())
			}
		})
	}
}

func TestLocalStopTrappedTERM(t *testing.T) {
	t.Parallel()
	var logs lineLog
	h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{
		Command: sh("trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done"),
		Grace:   30 * time.Second,
	}, logs.sink)
	logs.waitLines(t, Stdout, 1)
	h.Stop()
	if r := waitResult(t, h, 10*time.Second); r != (Result{ExitCode: 0}) {
		t.Fatalf("result = %+v, want exit 0", r)
	}
	if got := logs.texts(Stdout); !slices.Equal(got, []string{"ready", "bye"}) {
		t.Fatalf("stdout = %q", got)
	}
}

func TestLocalStopKillsAfterGrace(t *testing.T) {
	t.Parallel()
	var logs lineLog
	const grace = 300 * time.Millisecond
	h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{
		Command: sh("trap '' TERM; echo ready; sleep 100"),
		Grace:   grace,
	}, logs.sink)
	logs.waitLines(t, Stdout, 1)
	stopped := time.Now()
	h.Stop()
	r := waitResult(t, h, 10*time.Second)
	took := time.Since(stopped)
	if r != (Result{ExitCode: 137, Signal: "SIGKILL"}) {
		t.Fatalf("result = %+v, want 137 SIGKILL", r)
	}
	if took < grace {
		t.Fatalf("killed after %v, before the %v grace period", took, grace)
	}
	t.Logf("killed %v after Stop", took)
}

func TestLocalStopIdempotent(t *testing.T) {
	t.Parallel()
	h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{Command: []string{"sleep", "100"}}, nil)
	h.Stop()
	h.Stop()
	want := Result{ExitCode: 128 + int(syscall.SIGTERM), Signal: "SIGTERM"}
	if r := waitResult(t, h, 10*time.Second); r != want {
		t.Fatalf("result = %+v, want %+v", r, want)
	}
	h.Stop() // after the end: harmless
	if r := h.Wait(); r != want {
		t.Fatalf("second Wait = %+v, want %+v", r, want)
	}
}

func TestLocalStopKillsGroup(t *testing.T) {
	t.Parallel()
	var logs lineLog
	h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{
		Command: sh("sleep 1000 & echo $!; wait"),
		Grace:   30 * time.Second,
	}, logs.sink)
	pid, err := strconv.Atoi(logs.waitLines(t, Stdout, 1)[0])
	if err != nil {
		t.Fatal(err)
	}
	killLater(t, pid)
	h.Stop()
	want := Result{ExitCode: 128 + int(syscall.SIGTERM), Signal: "SIGTERM"}
	if r := waitResult(t, h, 10*time.Second); r != want {
		t.Fatalf("result = %+v, want %+v", r, want)
	}
	poll(t, 5*time.Second, "the grandchild to die", func() bool { return gone(pid) })
}

// TestLocalOrphanHoldingPipe: the leader exits while a background child
// still holds stdout; the attempt must end with the leader, not with it.
func TestLocalOrphanHoldingPipe(t *testing.T) {
	t.Parallel()
	var logs lineLog
	// A long drain timeout shows the end comes from killing the group.
	h := startLocal(t, LocalConfig{WorkDir: t.TempDir(), DrainTimeout: time.Minute}, Spec{
		Command: sh("sleep 1000 & echo $!"),
	}, logs.sink)
	pid, err := strconv.Atoi(logs.waitLines(t, Stdout, 1)[0])
	if err != nil {
		t.Fatal(err)
	}
	killLater(t, pid)
	if r := waitResult(t, h, 10*time.Second); r != (Result{ExitCode: 0}) {
		t.Fatalf("result = %+v, want exit 0", r)
	}
	poll(t, 5*time.Second, "the orphan to die", func() bool { return gone(pid) })
}

// TestLocalEscapedHoldingPipe: a process that left the group (setsid) and
// holds stdout cannot be killed by group, so only the drain timeout ends
// the attempt.
func TestLocalEscapedHoldingPipe(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("setsid"); err != nil {
		t.Skip("no setsid")
	}
	dir := t.TempDir()
	// The outer shell exits only once the inner one has escaped and
	// written its pid, so the group kill cannot catch it first.
	script := `setsid sh -c 'echo $$ > pid.tmp && mv pid.tmp pid; exec sleep 1000' & ` +
		`while [ ! -s pid ]; do sleep 0.01; done; echo leader done`
	var logs lineLog
	h := startLocal(t, LocalConfig{DrainTimeout: 300 * time.Millisecond}, Spec{Command: sh(script), WorkingDir: dir}, logs.sink)
	r := waitResult(t, h, 10*time.Second)
	if b, err := os.ReadFile(filepath.Join(dir, "pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if r != (Result{ExitCode: 0}) {
		t.Fatalf("result = %+v, want exit 0", r)
	}
	if got := logs.texts(Stdout); !slices.Equal(got, []string{"leader done"}) {
		t.Fatalf("stdout = %q", got)
	}
}

// TestLocalEnv is not parallel: t.Setenv changes the test process's
// environment, which is exactly what must not reach the child.
func TestLocalEnv(t *testing.T) {
	t.Setenv("MAESTRO_RUNNER_TEST_SECRET", "hunter2")
	runEnv := func(t *testing.T, env map[string]string) ([]string, string) {
		t.Helper()
		var logs lineLog
		dir := t.TempDir()
		h := startLocal(t, LocalConfig{}, Spec{Command: []string{"env"}, Env: env, WorkingDir: dir}, logs.sink)
		if r := waitResult(t, h, 10*time.Second); r.ExitCode != 0 {
			t.Fatalf("result = %+v", r)
		}
		return logs.texts(Stdout), dir
	}

	t.Run("defaults", func(t *testing.T) {
		got, dir := runEnv(t, map[string]string{"B": "two words", "A": "1", "EMPTY": ""})
		path := os.Getenv("PATH")
		if path == "" {
			path = defaultPath
		}
		want := []string{"A=1", "B=two words", "EMPTY=", "HOME=" + dir, "PATH=" + path}
		if !slices.Equal(got, want) {
			t.Fatalf("env = %q, want %q", got, want)
		}
	})
	t.Run("spec sets PATH and HOME", func(t *testing.T) {
		got, _ := runEnv(t, map[string]string{"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"})
		if want := []string{"HOME=/nonexistent", "PATH=/usr/bin:/bin"}; !slices.Equal(got, want) {
			t.Fatalf("env = %q, want %q", got, want)
		}
	})
	t.Run("the shim's variables are the job's own", func(t *testing.T) {
		// Nothing of the shim reaches the job, and the job's environment
		// does not reach the shim (GODEBUG=inittrace=1 would make it print).
		var logs lineLog
		env := map[string]string{shimEnv: "job's", "GODEBUG": "inittrace=1", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
		h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{Command: []string{"env"}, Env: env}, logs.sink)
		if r := waitResult(t, h, 10*time.Second); r.ExitCode != 0 {
			t.Fatalf("result = %+v", r)
		}
		want := []string{"GODEBUG=inittrace=1", "HOME=/nonexistent", shimEnv + "=job's", "PATH=/usr/bin:/bin"}
		if got := logs.texts(Stdout); !slices.Equal(got, want) {
			t.Fatalf("env = %q, want %q", got, want)
		}
		if got := logs.texts(Stderr); len(got) != 0 {
			t.Fatalf("stderr = %q, want none", got)
		}
	})
	t.Run("command looked up in the job's PATH", func(t *testing.T) {
		bin := t.TempDir()
		if err := os.WriteFile(filepath.Join(bin, "only-here"), []byte("#!/bin/sh\necho found\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		var logs lineLog
		h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{
			Command: []string{"only-here"},
			Env:     map[string]string{"PATH": bin + ":/usr/bin:/bin"},
		}, logs.sink)
		if r := waitResult(t, h, 10*time.Second); r.ExitCode != 0 || !slices.Equal(logs.texts(Stdout), []string{"found"}) {
			t.Fatalf("result = %+v, stdout %q", r, logs.texts(Stdout))
		}
	})
}

func TestLocalWorkingDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\npwd -P\necho \"$HOME\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var logs lineLog
	h := startLocal(t, LocalConfig{}, Spec{Command: []string{"./run.sh"}, WorkingDir: dir}, logs.sink)
	if r := waitResult(t, h, 10*time.Second); r.ExitCode != 0 {
		t.Fatalf("result = %+v (stderr %q)", r, logs.texts(Stderr))
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := logs.texts(Stdout); !slices.Equal(got, []string{real, dir}) {
		t.Fatalf("pwd, HOME = %q, want %q", got, []string{real, dir})
	}
	if _, err := os.Stat(filepath.Join(dir, "run.sh")); err != nil {
		t.Fatalf("a given working dir must be left alone: %v", err)
	}
}

func TestLocalTempDirRemoved(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	var logs lineLog
	h := startLocal(t, LocalConfig{WorkDir: work}, Spec{
		JobID:   "job/7",
		Attempt: 2,
		// A read-only subdirectory must not keep the directory alive.
		Command: sh(`pwd; echo "$HOME"; mkdir -p d/e && touch d/e/f && chmod 0500 d/e d`),
	}, logs.sink)
	if r := waitResult(t, h, 10*time.Second); r.ExitCode != 0 {
		t.Fatalf("result = %+v (stderr %q)", r, logs.texts(Stderr))
	}
	out := logs.texts(Stdout)
	if len(out) != 2 || out[0] != out[1] || filepath.Dir(out[0]) != work ||
		!strings.HasPrefix(filepath.Base(out[0]), "maestro-job_7-a2-") {
		t.Fatalf("pwd, HOME = %q: want a fresh maestro-job_7-a2-* dir under %s as both", out, work)
	}
	if entries, err := os.ReadDir(work); err != nil || len(entries) != 0 {
		t.Fatalf("work dir after the attempt: %v, %v; want it empty", entries, err)
	}
}

func TestLocalStartErrors(t *testing.T) {
	t.Parallel()
	files := t.TempDir()
	notExec := filepath.Join(files, "not-exec")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Found and executable, yet the exec fails: only the shim can tell.
	garbage := filepath.Join(files, "garbage")
	if err := os.WriteFile(garbage, []byte("\x00\x01 not a program\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	noInterp := filepath.Join(files, "no-interpreter")
	if err := os.WriteFile(noInterp, []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		spec Spec
		want string
	}{
		{"empty command", nil, Spec{}, "empty command"},
		{"empty program", nil, Spec{Command: []string{""}}, "empty command"},
		{"not found", nil, Spec{Command: []string{"maestro-no-such-command"}}, "executable file not found"},
		{"not found by path", nil, Spec{Command: []string{"./missing.sh"}}, "no such file"},
		{"not executable", nil, Spec{Command: []string{notExec}}, "not executable"},
		{"directory", nil, Spec{Command: []string{files}}, "is a directory"},
		{"exec format error", nil, Spec{Command: []string{garbage}}, "fork/exec " + garbage + ": exec format error"},
		{"missing interpreter", nil, Spec{Command: []string{noInterp}}, "fork/exec " + noInterp + ": no such file"},
		{"missing working dir", nil, Spec{Command: []string{"true"}, WorkingDir: filepath.Join(files, "missing")}, "no such file"},
		{"working dir is a file", nil, Spec{Command: []string{"true"}, WorkingDir: notExec}, "not a directory"},
		{"bad env name", nil, Spec{Command: []string{"true"}, Env: map[string]string{"A=B": "x"}}, "invalid environment variable"},
		{"NUL in env", nil, Spec{Command: []string{"true"}, Env: map[string]string{"A": "x\x00y"}}, "NUL"},
		{"canceled context", canceled, Spec{Command: []string{"true"}}, "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			work := t.TempDir()
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			tc.spec.JobID, tc.spec.Attempt = "j1", 1
			h, err := NewLocal(LocalConfig{WorkDir: work}).Start(ctx, tc.spec, nil)
			if err == nil {
				h.Stop()
				h.Wait()
				t.Fatal("Start succeeded")
			}
			if h != nil {
				t.Errorf("Start returned a handle with its error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "job j1 attempt 1") {
				t.Errorf("error %q: want it to name the job and contain %q", err, tc.want)
			}
			if entries, _ := os.ReadDir(work); len(entries) != 0 {
				t.Errorf("left behind in the work dir: %v", entries)
			}
		})
	}
}

// TestLocalShimSurvivesSignals: signals sent to the shim alone (a job's
// `kill $PPID`) neither end it nor reach the command.
func TestLocalShimSurvivesSignals(t *testing.T) {
	t.Parallel()
	var logs lineLog
	h := startLocal(t, LocalConfig{WorkDir: t.TempDir()}, Spec{
		Command: sh(`for s in HUP INT QUIT TERM USR1 USR2 ABRT SEGV PIPE ALRM TSTP TTIN XCPU; do kill -$s $PPID || exit 1; done; sleep 0.2; echo alive`),
	}, logs.sink)
	if r := waitResult(t, h, 10*time.Second); r != (Result{ExitCode: 0}) {
		t.Fatalf("result = %+v (stderr %q), want exit 0", r, logs.texts(Stderr))
	}
	if got := logs.texts(Stdout); !slices.Equal(got, []string{"alive"}) {
		t.Fatalf("stdout = %q, stderr %q", got, logs.texts(Stderr))
	}
	if got := logs.texts(Stderr); len(got) != 0 {
		t.Fatalf("stderr = %q, want none", got)
	}
}

// TestShimByHand: the shim needs both its argv[0] and its variable, and
// without the runner's control socket it only says so.
func TestShimByHand(t *testing.T) {
	t.Parallel()
	run := func(env []string, args ...string) (string, int) {
		t.Helper()
		cmd := &exec.Cmd{Path: os.Args[0], Args: append([]string{shimArg0}, args...), Env: env}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	if out, code := run([]string{shimEnv + "=" + shimEnvValue}, "1", "/bin/true", "true"); code != shimUsage || !strings.Contains(out, "no control socket") {
		t.Errorf("shim without a socket: exit %d, %q", code, out)
	}
	if out, code := run([]string{shimEnv + "=" + shimEnvValue}); code != shimUsage || !strings.Contains(out, "not to be run by hand") {
		t.Errorf("shim without arguments: exit %d, %q", code, out)
	}
	// Without the variable, argv[0] alone is just a name: the test binary
	// runs its tests.
	if out, code := run(nil, "-test.run=^$"); code != 0 || !strings.Contains(out, "PASS") {
		t.Errorf("argv[0] only: exit %d, %q", code, out)
	}
}

// pdeathsigHelperEnv switches the test binary into the helper of the
// Pdeathsig tests (the os/exec helper-process pattern); its value is the
// helper's work dir. pdeathsigScriptEnv, if set, is a script the attempt
// runs in that dir instead of `sleep 1000`.
const (
	pdeathsigHelperEnv = "MAESTRO_RUNNER_PDEATHSIG_HELPER"
	pdeathsigScriptEnv = "MAESTRO_RUNNER_PDEATHSIG_SCRIPT"
)

// TestLocalPdeathsigHelper is not a test: run by the Pdeathsig tests in a
// child test binary, it starts a local attempt, prints its pid and waits to
// be killed. Like the runner, it is undumpable (see HideFromJobs).
func TestLocalPdeathsigHelper(t *testing.T) {
	work := os.Getenv(pdeathsigHelperEnv)
	if work == "" {
		t.Skip("helper process for the Pdeathsig tests")
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); e != 0 {
		fmt.Println("error", e)
		os.Exit(1)
	}
	spec := Spec{JobID: "pdeathsig", Command: []string{"sleep", "1000"}}
	cfg := LocalConfig{WorkDir: work}
	if script := os.Getenv(pdeathsigScriptEnv); script != "" {
		spec.Command, spec.WorkingDir = sh(script), work
	}
	h, err := NewLocal(cfg).Start(context.Background(), spec, nil)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Printf("pid %d\n", h.(*LocalHandle).PID())
	h.Wait()
	os.Exit(1) // the attempt must not end before the helper is killed
}

// startPdeathsigHelper starts the helper with work as its work dir and
// returns it and its attempt's pid.
func startPdeathsigHelper(t *testing.T, work, script string) (*exec.Cmd, int) {
	t.Helper()
	helper := exec.Command(os.Args[0], "-test.run=^TestLocalPdeathsigHelper$")
	helper.Env = append(os.Environ(), pdeathsigHelperEnv+"="+work, pdeathsigScriptEnv+"="+script)
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = helper.Process.Kill()
		_ = helper.Wait()
	})
	first := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		first <- line
	}()
	var pid int
	select {
	case line := <-first:
		if _, err := fmt.Sscanf(line, "pid %d", &pid); err != nil {
			t.Fatalf("helper said %q", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("helper did not start its attempt")
	}
	killLater(t, pid)
	return helper, pid
}

// TestLocalPdeathsig: when the runner dies without a chance to clean up
// (SIGKILL), its attempts die too.
func TestLocalPdeathsig(t *testing.T) {
	t.Parallel()
	// The killed helper can't remove its attempt's directory: put it where
	// the test cleans up.
	helper, pid := startPdeathsigHelper(t, t.TempDir(), "")
	if gone(pid) {
		t.Fatalf("attempt %d died before its runner", pid)
	}
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	poll(t, 5*time.Second, "the attempt to die with its runner", func() bool { return gone(pid) })
}

// TestLocalPdeathsigGroup: the kernel's parent-death signal reaches one
// process, yet all of a dead runner's attempt must die, not only its
// leader: here a background member of the group and the command itself.
func TestLocalPdeathsigGroup(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	helper, shim := startPdeathsigHelper(t, work,
		`sleep 1000 & echo $! > bgpid.tmp && mv bgpid.tmp bgpid; echo $$ > cmdpid.tmp && mv cmdpid.tmp cmdpid; exec sleep 1000`)
	readPID := func(name string) int {
		var pid int
		poll(t, 10*time.Second, name, func() bool {
			b, err := os.ReadFile(filepath.Join(work, name))
			if err != nil {
				return false
			}
			pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
			return err == nil
		})
		killLater(t, pid)
		return pid
	}
	pids := map[string]int{"shim": shim, "command": readPID("cmdpid"), "background sleep": readPID("bgpid")}
	for what, pid := range pids {
		if gone(pid) {
			t.Fatalf("%s %d died before the runner", what, pid)
		}
		if pgid, err := syscall.Getpgid(pid); err != nil || pgid != shim {
			t.Fatalf("%s %d: process group %d, %v; want %d", what, pid, pgid, err, shim)
		}
	}
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = helper.Wait()
	for what, pid := range pids {
		poll(t, 5*time.Second, fmt.Sprintf("the %s (%d) to die with the runner", what, pid), func() bool { return gone(pid) })
	}
}

// BenchmarkLocalStart measures starting an attempt of `true` and waiting for
// its end: the executor's per-attempt overhead.
func BenchmarkLocalStart(b *testing.B) {
	l := NewLocal(LocalConfig{WorkDir: b.TempDir()})
	for b.Loop() {
		h, err := l.Start(context.Background(), Spec{JobID: "bench", Command: []string{"true"}}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if r := h.Wait(); r.ExitCode != 0 {
			b.Fatalf("result = %+v", r)
		}
	}
}
