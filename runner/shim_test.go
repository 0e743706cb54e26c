//go:build linux

package runner

import (
	"bufio"
	"errors"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestShimAnswers(t *testing.T) {
	t.Parallel()
	read := func(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
	if err := shimStarted(read("started\nexit 0\n"), "/bin/x"); err != nil {
		t.Errorf("started: %v", err)
	}
	err := shimStarted(read("error 8 fork/exec /bin/x: exec format error\n"), "/bin/x")
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "fork/exec" || pe.Path != "/bin/x" || !errors.Is(err, syscall.ENOEXEC) ||
		err.Error() != "fork/exec /bin/x: exec format error" {
		t.Errorf("exec error: %#v", err)
	}
	if err := shimStarted(read("error 0 read environment: truncated\n"), "/bin/x"); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("other error: %v", err)
	}
	if err := shimStarted(read(""), "/bin/x"); !errors.Is(err, errShimEnded) || !errors.Is(err, io.EOF) {
		t.Errorf("silent shim: %v", err)
	}
	if err := shimStarted(read("hello\n"), "/bin/x"); err == nil {
		t.Error("nonsense accepted")
	}

	type answer struct {
		ok  bool
		res Result
	}
	for in, want := range map[string]answer{
		"exit 0\n":                             {true, Result{ExitCode: 0}},
		"exit 768\n":                           {true, Result{ExitCode: 3}},
		"exit 9\n":                             {true, Result{ExitCode: 137, Signal: "SIGKILL"}},
		"exit 139\n":                           {true, Result{ExitCode: 139, Signal: "SIGSEGV"}}, // core dumped
		"exit 15":                              {},                                               // cut off: not an answer
		"":                                     {},
		"exit x\n":                             {},
		"started\n":                            {},
		"exit 99999999999999999999999999999\n": {},
	} {
		ws, ok := shimExit(read(in))
		if got := (answer{ok, statusResult(ws)}); ok != want.ok || (ok && got != want) {
			t.Errorf("shimExit(%q) = %+v; want %+v", in, got, want)
		}
	}
}
