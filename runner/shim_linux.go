//go:build linux

package runner

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/maestro-ml/maestro/runner/internal/jobshim"
)

// The runner's side of the job shim (runner/internal/jobshim, which says
// why there is one): its own small package, so that its init, which turns
// a re-executed binary into the shim, runs before the heavy packages'
// (client-go's alone take ~5 ms): a shim starts in ~3.5 ms, not ~15.
const (
	shimArg0        = jobshim.Arg0
	shimEnv         = jobshim.Env
	shimEnvValue    = jobshim.EnvValue
	shimExe         = jobshim.Exe
	shimDeathSignal = jobshim.DeathSignal
	shimUsage       = jobshim.Usage
)

var shimEnvPayload = jobshim.EnvPayload

// The runner's side.

// shimSocket returns the runner's end of a new control socket and the end
// the shim gets as its fd 3 (which the runner closes once the shim runs).
func shimSocket() (*net.UnixConn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("shim socket: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "maestro-job-shim control")
	c, err := net.FileConn(ours) // a pollable duplicate: deadlines, concurrent Close
	ours.Close()
	theirs := os.NewFile(uintptr(fds[1]), "maestro-job-shim control")
	if err != nil {
		theirs.Close()
		return nil, nil, fmt.Errorf("shim socket: %w", err)
	}
	return c.(*net.UnixConn), theirs, nil
}

// shimCommand is the shim's command line for running prog with argv.
func shimCommand(prog string, argv []string) []string {
	return append([]string{shimArg0, strconv.Itoa(os.Getpid()), prog}, argv...)
}

// shimProg is the program a shim command line starts.
func shimProg(args []string) string { return args[2] }

// shimSendEnv sends the job's environment, then the end of the stream. A
// failure shows as the shim's: it cannot start the command without it.
func shimSendEnv(ctl *net.UnixConn, env []string) {
	if _, err := ctl.Write(shimEnvPayload(env)); err == nil {
		_ = ctl.CloseWrite()
	}
}

// errShimEnded is shimStarted's error when the shim said nothing.
var errShimEnded = errors.New("job shim ended before starting the command")

// shimStarted reads the shim's first answer: nil once the command runs.
// prog is the program it was to start, for the error.
func shimStarted(ctl *bufio.Reader, prog string) error {
	line, err := ctl.ReadString('\n')
	if err != nil {
		return fmt.Errorf("%w (%w)", errShimEnded, err)
	}
	line = strings.TrimSuffix(line, "\n")
	if line == "started" {
		return nil
	}
	if rest, ok := strings.CutPrefix(line, "error "); ok {
		num, msg, _ := strings.Cut(rest, " ")
		if n, err := strconv.Atoi(num); err == nil && n != 0 {
			// What os/exec would have returned had the runner started it.
			return &os.PathError{Op: "fork/exec", Path: prog, Err: syscall.Errno(n)}
		}
		return errors.New("job shim: " + msg)
	}
	return fmt.Errorf("job shim said %q", line)
}

// shimExit reads how the command ended, as the shim saw it. False if the
// shim did not say (it was killed before it could).
func shimExit(ctl *bufio.Reader) (syscall.WaitStatus, bool) {
	line, err := ctl.ReadString('\n')
	if err != nil {
		return 0, false
	}
	rest, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "exit ")
	if !ok {
		return 0, false
	}
	ws, err := strconv.ParseUint(rest, 10, 32)
	if err != nil {
		return 0, false
	}
	return syscall.WaitStatus(ws), true
}
