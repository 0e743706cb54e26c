//go:build linux

// Package jobshim is the supervisor the local executor runs between a
// runner and a job's command (see below).
package jobshim

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// The job shim: the supervisor the local executor puts between itself and
// a job's command.
//
// The runner makes the shim the leader of the attempt's process group with
// a parent-death signal. The kernel sends that signal to one process only,
// so without the shim a runner killed with SIGKILL took just the command
// down and left the rest of its group (a background `sleep &`, a data
// loader's workers) running unobserved. The shim catches the signal and
// SIGKILLs the whole group, itself included.
//
// The shim is this very binary re-executed (/proc/self/exe, so a binary
// replaced on disk by an upgrade still runs the same code) with argv[0]
// Arg0 and the environment shimEnv=EnvValue, nothing else: an init
// function of this package runs it in place of the program, so every
// binary that links the package (maestro, the tests of any package using
// Local) can serve as one. It is not a subcommand: both marks are needed,
// and a shim started by hand without the runner's control socket only
// prints an error. Being re-executed, not merely forked, it holds none of
// the runner's memory, credentials or environment.
//
// Its command line is: Arg0 <runner pid> <program path> <argv...>.
// Over the control socket, its fd 3 (FD), the runner sends the job's
// environment (each "KEY=value" followed by a NUL, then one more NUL) and
// shuts its side for writing; the shim answers with lines:
//
//	started                    the command runs
//	error <errno> <message>    it could not be started (errno 0: not a system error)
//	exit <wait status>         the command ended (its raw wait status)
//
// so the runner still fails Start when the exec fails, and reports the
// command's own exit code or signal, whatever becomes of the shim. The
// job's environment travels over the socket rather than in the shim's own
// environment so that it cannot change how the shim itself runs
// (LD_PRELOAD, GODEBUG and the like) and so that nothing of the shim's
// reaches the job.
const (
	Arg0     = "maestro-job-shim"
	Env      = "MAESTRO_JOB_SHIM"
	EnvValue = "1"
	Exe      = "/proc/self/exe"
	FD       = 3
	// DeathSignal is the shim's parent-death signal. Before the shim
	// handles it (the command is not started yet) its default action ends
	// the shim; after, the shim tells it from a Stop's SIGTERM by its
	// parent having changed.
	DeathSignal = syscall.SIGTERM
	// Usage is the exit code of a shim that could not work at all.
	Usage = 125
	// NoStart is its exit code when the command could not be started.
	NoStart = 127
)

func init() {
	if len(os.Args) > 0 && os.Args[0] == Arg0 && os.Getenv(Env) == EnvValue {
		os.Exit(runShim(os.Args[1:]))
	}
}

// runShim is the shim's whole life; it returns the shim's exit code.
func runShim(args []string) int {
	// The command's own parent-death signal (below) is tied to the thread
	// that starts it: init runs on the main thread, which lives until the
	// process exits.
	runtime.LockOSThread()
	if len(args) < 3 {
		fmt.Fprintln(os.Stderr, Arg0+": internal to the maestro runner, not to be run by hand")
		return Usage
	}
	runner, err := strconv.Atoi(args[0])
	if err != nil || runner <= 0 {
		fmt.Fprintln(os.Stderr, Arg0+": bad runner pid", strconv.Quote(args[0]))
		return Usage
	}
	prog, argv := args[1], args[2:]
	if _, err := syscall.Getsockname(FD); err != nil {
		fmt.Fprintln(os.Stderr, Arg0+": no control socket:", err)
		return Usage
	}
	syscall.CloseOnExec(FD) // the job must not get it
	ctl := os.NewFile(FD, "maestro-job-shim control")

	// From here on the runner's death cannot go unnoticed: either its
	// signal reaches the handler, or it came earlier and the parent has
	// already changed.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, shimSignals()...)
	go func() {
		for range sigs {
			// Any other signal (the runner's Stop, a job's `kill 0`) was
			// sent to the group and so reached the command too: how it
			// ends is what counts, and the shim waits for that.
			if os.Getppid() != runner {
				_ = syscall.Kill(0, syscall.SIGKILL)
			}
		}
	}()
	if os.Getppid() != runner {
		return Usage // the runner is gone: start nothing
	}

	env, err := readShimEnv(ctl)
	if err != nil {
		shimSay(ctl, "error 0 "+oneLine(err.Error()))
		return Usage
	}
	p, err := os.StartProcess(prog, argv, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		// Should the shim itself be killed outright, the command goes
		// with it (the group's other members are the runner's to kill).
		Sys: &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		var errno syscall.Errno
		if pe, ok := err.(*os.PathError); ok {
			errno, _ = pe.Err.(syscall.Errno)
		}
		shimSay(ctl, "error "+strconv.Itoa(int(errno))+" "+oneLine(err.Error()))
		return NoStart
	}
	shimSay(ctl, "started")
	state, err := p.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, Arg0+":", err)
		return Usage
	}
	ws := state.Sys().(syscall.WaitStatus)
	shimSay(ctl, "exit "+strconv.FormatUint(uint64(ws), 10))
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// shimSignals are the signals the shim survives: every catchable one that
// would otherwise end or stop it, except those already ignored (they stay
// ignored for the command, as they were before there was a shim).
func shimSignals() []os.Signal {
	var sigs []os.Signal
	for s := syscall.Signal(1); s <= 64; s++ {
		switch s {
		case syscall.SIGKILL, syscall.SIGSTOP, // cannot be caught
			syscall.SIGCHLD, syscall.SIGCONT, syscall.SIGURG, syscall.SIGWINCH, // harmless by default
			syscall.SIGPROF, 32, 33: // the Go runtime's and the C library's
			continue
		}
		if !signal.Ignored(s) {
			sigs = append(sigs, s)
		}
	}
	return sigs
}

// readShimEnv reads the job's environment from the runner.
func readShimEnv(r io.Reader) ([]string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read environment: %w", err)
	}
	// Entries are never empty, so the only empty one is the end mark: a
	// runner that died while writing left none.
	body, ok := bytes.CutSuffix(b, []byte{0})
	if !ok || (len(body) > 0 && !bytes.HasSuffix(body, []byte{0})) {
		return nil, fmt.Errorf("read environment: truncated after %d bytes", len(b))
	}
	env := []string{}
	for len(body) > 0 {
		i := bytes.IndexByte(body, 0)
		env = append(env, string(body[:i]))
		body = body[i+1:]
	}
	return env, nil
}

// EnvPayload is what readShimEnv reads.
func EnvPayload(env []string) []byte {
	n := 1
	for _, e := range env {
		n += len(e) + 1
	}
	b := make([]byte, 0, n)
	for _, e := range env {
		b = append(b, e...)
		b = append(b, 0)
	}
	return append(b, 0)
}

// shimSay sends one line to the runner. A failure is not actionable: the
// runner is gone or will fall back on the shim's own exit status.
func shimSay(ctl *os.File, line string) {
	_, _ = ctl.Write([]byte(line + "\n"))
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
