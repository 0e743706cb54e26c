//go:build linux

package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"
	"unsafe"
)

// LocalConfig tunes the local executor.
type LocalConfig struct {
	// WorkDir is where an attempt without a working directory gets its
	// fresh one ("" = os.TempDir()).
	WorkDir string
	// DrainTimeout bounds how long output is still read once the attempt's
	// process group is dead (0 = 2s). It only matters when a process that
	// left the group (setsid) still holds the output pipes: without a bound
	// it would keep the attempt alive for as long as it runs.
	DrainTimeout time.Duration
}

const (
	defaultGrace        = 10 * time.Second
	defaultDrainTimeout = 2 * time.Second
	// defaultPath is used only when the runner itself has no PATH, so that
	// a job can still find sh, python and the like.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// readBufSize is the pipe reader's buffer: large enough that a normal
	// line is one ReadSlice, and bigger than MaxLineBytes so a cut line is
	// found in at most two reads.
	readBufSize = 64 << 10
)

// Local runs each attempt as its own process group on this machine.
type Local struct {
	cfg LocalConfig
}

var _ Executor = (*Local)(nil)

// NewLocal returns a local executor.
func NewLocal(cfg LocalConfig) *Local {
	if cfg.WorkDir == "" {
		cfg.WorkDir = os.TempDir()
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = defaultDrainTimeout
	}
	return &Local{cfg: cfg}
}

// Name is "local".
func (l *Local) Name() string { return "local" }

// Start starts spec.Command in a new process group whose leader is a small
// supervisor, the job shim (shim_linux.go): should the runner die, even by
// SIGKILL, the shim kills the whole group. ctx only bounds the start
// itself: the attempt then runs until it ends or Stop is called, so a
// caller's short-lived context cannot kill a training run.
// Calls to logs are serialized (never concurrent) and none happen after
// Wait has returned.
func (l *Local) Start(ctx context.Context, spec Spec, logs LogSink) (Handle, error) {
	h, err := l.start(ctx, spec, logs)
	if err != nil {
		return nil, fmt.Errorf("local: start job %s attempt %d: %w", spec.JobID, spec.Attempt, err)
	}
	return h, nil
}

func (l *Local) start(ctx context.Context, spec Spec, logs LogSink) (*LocalHandle, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(spec.Command) == 0 || spec.Command[0] == "" {
		return nil, errors.New("empty command")
	}
	if err := checkEnv(spec.Env); err != nil {
		return nil, err
	}
	if logs == nil {
		logs = func(Line) {}
	}

	dir, temp, err := l.workingDir(spec)
	if err != nil {
		return nil, err
	}
	// Everything below that fails must leave no directory behind.
	ok := false
	defer func() {
		if !ok && temp {
			removeAll(dir)
		}
	}()

	env := childEnv(spec.Env, dir)
	prog, err := lookPath(spec.Command[0], envValue(env, "PATH"), dir)
	if err != nil {
		return nil, err
	}

	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}

	ctl, shimCtl, err := shimSocket()
	if err != nil {
		outR.Close()
		outW.Close()
		errR.Close()
		errW.Close()
		return nil, err
	}

	// The group's leader is the job shim (shim_linux.go), which starts the
	// command in the group with env, in dir, with these stdout and stderr.
	cmd := &exec.Cmd{
		Path:       shimExe,
		Args:       shimCommand(prog, spec.Command),
		Env:        []string{shimEnv + "=" + shimEnvValue},
		Dir:        dir,
		Stdout:     outW,
		Stderr:     errW,
		ExtraFiles: []*os.File{shimCtl},
		SysProcAttr: &syscall.SysProcAttr{
			// pgid = the shim's pid, so Stop reaches everything it forks.
			Setpgid: true,
			// If the runner dies, the shim kills the whole group rather
			// than leaving an unsupervised training run behind.
			Pdeathsig: shimDeathSignal,
		},
	}

	grace := spec.Grace
	if grace <= 0 {
		grace = defaultGrace
	}
	h := &LocalHandle{
		logs:           logs,
		grace:          grace,
		readersStarted: make(chan struct{}),
		done:           make(chan struct{}),
	}
	started := make(chan error, 1)
	go h.run(cmd, ctl, shimCtl, env, started, [2]*os.File{outR, errR}, dir, temp, l.cfg.DrainTimeout)
	err = <-started
	// The child holds its own copies of the write ends now; ours must go
	// or the readers would never see EOF.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("run %q: %w", spec.Command[0], err)
	}
	ok = true
	h.readers.Add(2)
	go h.read(outR, Stdout)
	go h.read(errR, Stderr)
	close(h.readersStarted)
	return h, nil
}

// workingDir returns the directory the attempt runs in and whether it is a
// fresh one the attempt owns (and removes).
func (l *Local) workingDir(spec Spec) (string, bool, error) {
	if spec.WorkingDir != "" {
		dir, err := filepath.Abs(spec.WorkingDir)
		if err != nil {
			return "", false, fmt.Errorf("working dir %q: %w", spec.WorkingDir, err)
		}
		fi, err := os.Stat(dir)
		if err != nil {
			return "", false, fmt.Errorf("working dir: %w", err)
		}
		if !fi.IsDir() {
			return "", false, fmt.Errorf("working dir %q is not a directory", dir)
		}
		return dir, false, nil
	}
	pattern := "maestro-" + safeName(spec.JobID) + "-a" + strconv.Itoa(spec.Attempt) + "-*"
	dir, err := os.MkdirTemp(l.cfg.WorkDir, pattern)
	if err != nil {
		return "", false, fmt.Errorf("working dir: %w", err)
	}
	// MkdirTemp may return a relative path (relative WorkDir); HOME and the
	// child's cwd should not depend on the runner's cwd.
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return dir, true, nil
}

// safeName keeps a job id usable as part of a file name.
func safeName(s string) string {
	if s == "" {
		return "job"
	}
	b := []byte(s)
	if len(b) > 64 {
		b = b[:64]
	}
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// checkEnv refuses variables execve would reject or misread, so the error
// names the variable instead of a bare EINVAL.
func checkEnv(env map[string]string) error {
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("invalid environment variable name %q", k)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Errorf("environment variable %s: value contains a NUL byte", k)
		}
	}
	return nil
}

// childEnv is the job's whole environment: spec.Env plus PATH and HOME,
// nothing of the runner's own (it may hold the runner's credentials).
// Sorted so that the same spec always gives the same environment.
func childEnv(specEnv map[string]string, dir string) []string {
	env := make([]string, 0, len(specEnv)+2)
	for k, v := range specEnv {
		env = append(env, k+"="+v)
	}
	if _, ok := specEnv["PATH"]; !ok {
		path := os.Getenv("PATH")
		if path == "" {
			path = defaultPath
		}
		env = append(env, "PATH="+path)
	}
	if _, ok := specEnv["HOME"]; !ok {
		env = append(env, "HOME="+dir)
	}
	slices.Sort(env)
	return env
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// lookPath resolves the program the way the child's shell would: with the
// child's PATH (not the runner's), and a name with a slash relative to the
// working directory. Relative PATH entries are skipped, as os/exec refuses
// them (ErrDot): they would resolve inside the job's own files.
func lookPath(name, path, dir string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("command %q: %w", name, err)
		}
		return p, nil
	}
	for _, d := range filepath.SplitList(path) {
		if !filepath.IsAbs(d) {
			continue
		}
		p := filepath.Join(d, name)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q: %w in PATH %q", name, exec.ErrNotFound, path)
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return fmt.Errorf("%s is a directory", p)
	}
	if fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

// LocalHandle is a started local attempt. Besides Handle it tells the
// process group's id, which a runner can record to kill a group it left
// behind (the shim kills it when the runner dies, but a group whose shim
// was killed as well is left to that).
type LocalHandle struct {
	logs  LogSink
	grace time.Duration
	pid   int

	sinkMu         sync.Mutex // serializes logs calls from the two readers
	readers        sync.WaitGroup
	readersStarted chan struct{}

	mu       sync.Mutex
	stopping bool
	// exited is set once the leader is dead; from then on the group is
	// not signalled again, because once the leader is reaped its pid (the
	// pgid) may be reused by an unrelated process.
	exited bool
	killer *time.Timer

	done   chan struct{}
	result Result
}

var _ Handle = (*LocalHandle)(nil)

// PID is the process id of the attempt's leader, its job shim, which is
// also its process group id.
func (h *LocalHandle) PID() int { return h.pid }

// Wait blocks until the attempt's process group has ended and all its
// output was delivered, and returns how the command ended.
func (h *LocalHandle) Wait() Result {
	<-h.done
	return h.result
}

// Stop sends SIGTERM to the process group and SIGKILL after the grace
// period. It does not block; calling it again, or after the end, is a no-op.
func (h *LocalHandle) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopping || h.exited {
		return
	}
	h.stopping = true
	h.signalLocked(syscall.SIGTERM)
	h.killer = time.AfterFunc(h.grace, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if !h.exited {
			h.signalLocked(syscall.SIGKILL)
		}
	})
}

// signalLocked signals the whole group; h.mu is held and h.exited false.
func (h *LocalHandle) signalLocked(sig syscall.Signal) {
	// ESRCH: the group is already gone. Nothing else is actionable here
	// (EPERM would mean a member changed credentials); Wait reports the end.
	_ = syscall.Kill(-h.pid, sig)
}

// run starts the shim, which starts the command, and supervises it to the
// end. It runs on a goroutine locked to its OS thread for the shim's whole
// life: Pdeathsig fires when the thread that forked the shim exits, and an
// unlocked goroutine's thread may be retired by the Go runtime at any time,
// killing a healthy job. The goroutine returns without unlocking, so the
// thread exits only after the shim is reaped.
func (h *LocalHandle) run(cmd *exec.Cmd, ctl *net.UnixConn, shimCtl *os.File, env []string, started chan<- error, pipes [2]*os.File, dir string, temp bool, drain time.Duration) {
	runtime.LockOSThread()
	defer ctl.Close()
	// Concurrently: an environment larger than the socket's buffer is only
	// read once the shim runs.
	go shimSendEnv(ctl, env)
	err := cmd.Start()
	// The shim holds its own copy of its end now: ours must go, or a shim
	// that dies before it answers (no memory for its runtime, killed)
	// would leave the read below waiting for ever.
	shimCtl.Close()
	if err != nil {
		started <- err
		return
	}
	pid := cmd.Process.Pid
	status := bufio.NewReader(ctl)
	if err := shimStarted(status, shimProg(cmd.Args)); err != nil {
		// The shim is not reaped yet, so its pid cannot have been reused:
		// make sure nothing of the group is left, then reap it.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = cmd.Wait()
		if errors.Is(err, errShimEnded) && cmd.ProcessState != nil {
			err = fmt.Errorf("%w: %v", err, cmd.ProcessState)
		}
		started <- err
		return
	}
	h.pid = pid // before started: Start and Stop read it after that
	started <- nil

	// Wait for the leader to die without reaping it: while it is a zombie
	// its pid stays reserved, so killing the group by that id cannot hit
	// another process. Members that outlive the leader (a background
	// process still holding stdout) are killed now, or Wait would last as
	// long as they do.
	var werr error
	if err := waitExited(pid); err != nil {
		// Not expected. Without knowing the leader is dead the group must
		// not be killed; reap it instead and let the drain bound the rest.
		werr = cmd.Wait()
		h.markExited(false)
	} else {
		h.markExited(true)
		werr = cmd.Wait()
	}
	res := resultOf(cmd.ProcessState, werr)
	// The shim is dead, so what it said is all there is to read; the
	// deadline only guards against a descriptor that leaked.
	_ = ctl.SetReadDeadline(time.Now().Add(time.Second))
	if ws, ok := shimExit(status); ok {
		// The command's own end. Without it (the shim was killed too),
		// the shim's stands for it: SIGKILL after the grace period.
		res = statusResult(ws)
	}

	// The group is dead, so the pipes close as soon as their data is read,
	// except when a process escaped the group (setsid) and still holds
	// them: bound the drain for that case.
	<-h.readersStarted
	deadline := time.Now().Add(drain)
	for _, p := range pipes {
		_ = p.SetReadDeadline(deadline) // pipes are pollable on Linux
	}
	h.readers.Wait()
	for _, p := range pipes {
		p.Close()
	}
	if temp {
		removeAll(dir)
	}
	h.result = res
	close(h.done)
}

// markExited records that the leader is dead, killing what is left of its
// group first if killGroup.
func (h *LocalHandle) markExited(killGroup bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if killGroup {
		h.signalLocked(syscall.SIGKILL)
	}
	h.exited = true
	if h.killer != nil {
		h.killer.Stop()
	}
}

// pWaitPID is waitid's P_PID idtype (not exported by package syscall).
const pWaitPID = 1

// waitExited blocks until process pid has exited, leaving it unreaped.
func waitExited(pid int) error {
	var info [16]uint64 // siginfo_t, 128 bytes; only needed as a buffer
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_WAITID, pWaitPID, uintptr(pid),
			uintptr(unsafe.Pointer(&info)), syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return fmt.Errorf("waitid %d: %w", pid, e)
		}
		return nil
	}
}

// resultOf turns what exec reports into a Result.
func resultOf(state *os.ProcessState, err error) Result {
	if state == nil {
		return Result{ExitCode: -1, Err: fmt.Errorf("wait: %w", err)}
	}
	if ws, ok := state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return statusResult(ws)
	}
	res := Result{ExitCode: state.ExitCode()}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		// The program's end was seen but something around it failed.
		res.Err = fmt.Errorf("wait: %w", err)
	}
	return res
}

// statusResult is the Result of a command that ended with wait status ws.
func statusResult(ws syscall.WaitStatus) Result {
	if ws.Signaled() {
		return Result{ExitCode: 128 + int(ws.Signal()), Signal: signalName(ws.Signal())}
	}
	return Result{ExitCode: ws.ExitStatus()}
}

// signalNames are the conventional names (kill -l); syscall.Signal's own
// String is the description ("killed"), which is not what people grep for.
var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP:    "SIGHUP",
	syscall.SIGINT:    "SIGINT",
	syscall.SIGQUIT:   "SIGQUIT",
	syscall.SIGILL:    "SIGILL",
	syscall.SIGTRAP:   "SIGTRAP",
	syscall.SIGABRT:   "SIGABRT",
	syscall.SIGBUS:    "SIGBUS",
	syscall.SIGFPE:    "SIGFPE",
	syscall.SIGKILL:   "SIGKILL",
	syscall.SIGUSR1:   "SIGUSR1",
	syscall.SIGSEGV:   "SIGSEGV",
	syscall.SIGUSR2:   "SIGUSR2",
	syscall.SIGPIPE:   "SIGPIPE",
	syscall.SIGALRM:   "SIGALRM",
	syscall.SIGTERM:   "SIGTERM",
	syscall.SIGCHLD:   "SIGCHLD",
	syscall.SIGCONT:   "SIGCONT",
	syscall.SIGSTOP:   "SIGSTOP",
	syscall.SIGTSTP:   "SIGTSTP",
	syscall.SIGTTIN:   "SIGTTIN",
	syscall.SIGTTOU:   "SIGTTOU",
	syscall.SIGURG:    "SIGURG",
	syscall.SIGXCPU:   "SIGXCPU",
	syscall.SIGXFSZ:   "SIGXFSZ",
	syscall.SIGVTALRM: "SIGVTALRM",
	syscall.SIGPROF:   "SIGPROF",
	syscall.SIGWINCH:  "SIGWINCH",
	syscall.SIGIO:     "SIGIO",
	syscall.SIGPWR:    "SIGPWR",
	syscall.SIGSYS:    "SIGSYS",
}

func signalName(sig syscall.Signal) string {
	if name, ok := signalNames[sig]; ok {
		return name
	}
	return "SIG" + strconv.Itoa(int(sig))
}

// read delivers one stream line by line until EOF (or the drain deadline).
// It reads with bufio.Reader.ReadSlice rather than a Scanner, which gives up
// on a token over 64 KiB and then leaves the pipe undrained, so the child
// blocks writing. It never stops reading before the end for the same reason.
func (h *LocalHandle) read(r *os.File, stream Stream) {
	defer h.readers.Done()
	br := bufio.NewReaderSize(r, readBufSize)
	line := make([]byte, 0, 256)
	cut := false // the line reached MaxLineBytes: drop the rest of it
	for {
		chunk, err := br.ReadSlice('\n')
		end := err == nil // chunk ends with the newline
		if end {
			chunk = chunk[:len(chunk)-1]
		}
		if !cut {
			if room := MaxLineBytes - len(line); len(chunk) > room {
				line = append(line, chunk[:room]...)
				line = line[:runeBoundary(line)]
				cut = true
			} else {
				line = append(line, chunk...)
			}
		}
		if end {
			h.emit(stream, line)
			line, cut = line[:0], false
			continue
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		// EOF, the drain deadline or a read error: the stream is over. A
		// last line without its newline is still a line.
		if len(line) > 0 {
			h.emit(stream, line)
		}
		return
	}
}

// runeBoundary is len(b) shortened so a cut does not split the last rune.
func runeBoundary(b []byte) int {
	for i := len(b) - 1; i >= 0 && i >= len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if utf8.FullRune(b[i:]) {
				return len(b)
			}
			return i
		}
	}
	return len(b)
}

// emit hands one line to the sink. The text is made valid UTF-8 without NUL
// bytes so that it survives JSON and Postgres text (which refuses \u0000).
func (h *LocalHandle) emit(stream Stream, b []byte) {
	now := time.Now().UTC()
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	text := strings.ToValidUTF8(string(b), "\uFFFD")
	if strings.IndexByte(text, 0) >= 0 {
		text = strings.ReplaceAll(text, "\x00", "\uFFFD")
	}
	if len(text) > MaxLineBytes {
		// A replacement character is 3 bytes where the bad byte was 1.
		text = text[:runeBoundary([]byte(text[:MaxLineBytes]))]
	}
	h.sinkMu.Lock()
	defer h.sinkMu.Unlock()
	h.logs(Line{Time: now, Stream: stream, Text: text})
}

// removeAll removes an attempt's directory even if the job left parts of it
// read-only. A failure is not the attempt's: its result stands, and the
// directory is only left behind in the executor's work dir.
func removeAll(dir string) {
	if os.RemoveAll(dir) == nil {
		return
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	_ = os.RemoveAll(dir)
}
