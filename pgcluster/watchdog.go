package pgcluster

import (
	"context"
	"fmt"
	"os"
)

// watchdogScript waits for EOF on stdin, then stops the cluster if it still
// runs. Its stdin is the read end of a pipe whose only write end the
// maestro process holds, so EOF comes when maestro closes it (orderly
// Stop, after PostgreSQL is already down) or when maestro dies for any
// reason, kill -9 included: the kernel closes a dead process's files.
//
// A pipe rather than a parent-death signal: PR_SET_PDEATHSIG fires when the
// *thread* that forked the child exits, and Go threads come and go, and
// pg_ctl daemonises the postmaster anyway, so no signal could reach it.
//
// $1 is pg_ctl, $2 the data directory. fd 3 is the cluster's lock file: the
// watchdog holds the flock until PostgreSQL is stopped, so the next Start on
// this directory waits for it instead of racing the shutdown.
//
// The stop waits at most 20 s (-t 20), less than Start's lockWait: a
// restart right after a crash then never times out behind a slow shutdown;
// if PostgreSQL is still up when the watchdog gives up, that Start finds it
// and stops it itself.
//
// The wait is the shell's own `read` (nothing is ever written, so it returns
// only at EOF), not `cat`: an external command may be missing from PATH, and
// a watchdog that went straight on would exit at once or stop the server
// while it starts.
const watchdogScript = `while read -r _; do :; done
if "$1" status -D "$2" >/dev/null 2>&1; then
	exec "$1" stop -m fast -w -t 20 -D "$2"
fi`

// watchdog is the running watchdog process of a Cluster.
type watchdog struct {
	w    *os.File // write end of its stdin; only this process holds it
	pid  int      // also its process group
	done chan struct{}
}

// startWatchdog starts the watchdog before the postmaster, so there is no
// moment when a postmaster runs unwatched. It runs as the user PostgreSQL
// runs as (pg_ctl refuses root), in its own process group (a Ctrl-C on
// maestro's terminal must not kill it), and without ctx: it must outlive
// any start deadline.
func (c *Cluster) startWatchdog() (*watchdog, error) {
	r, w, err := os.Pipe() // both ends close-on-exec: no other child inherits w
	if err != nil {
		return nil, fmt.Errorf("pgcluster: watchdog pipe: %w", err)
	}
	defer r.Close()
	// The server binaries' directory, environment, process group and user;
	// a context that is never cancelled.
	cmd := c.command(context.Background(), "/bin/sh", "-c", watchdogScript, "maestro-pg-watchdog", c.bins.pgCtl, c.dataDir)
	cmd.Stdin = r
	cmd.ExtraFiles = []*os.File{c.lock}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("pgcluster: starting the watchdog: %w", err)
	}
	wd := &watchdog{w: w, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // reap it; its outcome is PostgreSQL's state, checked elsewhere
		close(wd.done)
	}()
	return wd, nil
}

// release closes the pipe, which makes the watchdog stop PostgreSQL if it
// still runs, and waits (bounded by ctx) for it to exit.
func (wd *watchdog) release(ctx context.Context) {
	if wd == nil {
		return
	}
	_ = wd.w.Close()
	select {
	case <-wd.done:
	case <-ctx.Done():
	}
}
