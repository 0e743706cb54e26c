package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/platform"
	"github.com/maestro-ml/maestro/projections"
)

// attach starts a platform for a one-off command. If a `maestro serve` runs
// on the data dir, it connects to that instance's NATS and Postgres (from
// the 0600 run.json it wrote); otherwise it starts them itself, privately.
func attach(ctx context.Context, c *Common, worker bool) (*platform.Platform, error) {
	cfg, err := attachConfig(c, worker)
	if err != nil {
		return nil, err
	}
	return platform.Start(ctx, cfg)
}

// attachConfig is attach's configuration, for commands that need more
// (artifacts gc opens the artifact store).
func attachConfig(c *Common, worker bool) (platform.Config, error) {
	cfg := c.config()
	cfg.API, cfg.Runner = false, false
	cfg.Worker = worker
	cfg.NATSListen = ""
	if cfg.NATSURL == "" || cfg.DatabaseURL == "" {
		if info, err := platform.ReadRunInfo(cfg.DataDir); err == nil && dataDirBusy(cfg.DataDir) {
			if info.NATSURL == "" {
				return cfg, errors.New("maestro serve is running on this data dir with MAESTRO_NATS_LISTEN=off; stop it first or enable the listener")
			}
			cfg.NATSURL, cfg.NATSUser, cfg.NATSPassword = info.NATSURL, info.NATSUser, info.NATSPassword
			cfg.DatabaseURL = info.DatabaseURL
			cfg.Worker = false   // the running serve's workers do the work
			cfg.NATSReplicas = 1 // its embedded server is one node
		}
	}
	return cfg, nil
}

func dataDirBusy(dir string) bool {
	_, err := os.Stat(dir + "/maestro.lock")
	if err != nil {
		return false
	}
	return platform.DataDirBusy(dir)
}

func shutdown(p *platform.Platform) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p.Shutdown(ctx)
}

type adminCmd struct {
	Create adminCreateCmd `cmd:"" help:"Create an admin account."`
}

type adminCreateCmd struct {
	Email         string `required:"" help:"E-mail of the new admin."`
	Name          string `default:"Administrator" help:"Display name."`
	PasswordStdin bool   `name:"password-stdin" required:"" help:"Read the password from standard input (one line)."`
}

func (a *adminCreateCmd) Run(ctx context.Context, c *Common) error {
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return errors.New("--password-stdin: no password on standard input")
	}
	password := strings.TrimRight(line, "\r\n")
	p, err := attach(ctx, c, true)
	if err != nil {
		return err
	}
	defer shutdown(p)
	u, err := p.CreateAdmin(ctx, a.Email, password, a.Name)
	if err != nil {
		return err
	}
	fmt.Printf("admin %s created (id %s)\n", u.Email, u.ID)
	return nil
}

type projectionsCmd struct {
	Status  projStatusCmd  `cmd:"" help:"Show each projection's checkpoint and lag."`
	Rebuild projRebuildCmd `cmd:"" help:"Drop and rebuild every projection from the event stream."`
	Verify  projVerifyCmd  `cmd:"" help:"Rebuild every projection into a scratch schema and compare it row by row with the live read models (exit 0 equal, 1 different, 2 failed)."`
}

type projStatusCmd struct{}

func (projStatusCmd) Run(ctx context.Context, c *Common) error {
	p, err := attach(ctx, c, false)
	if err != nil {
		return err
	}
	defer shutdown(p)
	heads, err := p.Heads(ctx)
	if err != nil {
		return err
	}
	st, err := p.Queries.Statuses(ctx, heads)
	if err != nil {
		return err
	}
	writeStatuses(os.Stdout, heads, st)
	return nil
}

// writeStatuses prints the checkpoints, then, if any projection skipped
// events it cannot store, one line per such projection: how many and the
// latest (sequence, type, SQLSTATE, error; the data is in the stream).
func writeStatuses(out io.Writer, heads projections.Heads, st []projections.Status) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "events stream last sequence\t%d\nmetrics stream last sequence\t%d\n\nPROJECTION\tSTREAM\tCHECKPOINT\tLAG\tUPDATED\n",
		heads.Events, heads.Metrics)
	quarantined := false
	for _, s := range st {
		upd := "-"
		if !s.UpdatedAt.IsZero() {
			upd = s.UpdatedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s\n", s.Name, s.Stream, s.LastSeq, s.Lag, upd)
		quarantined = quarantined || s.Quarantined > 0
	}
	w.Flush()
	if !quarantined {
		return
	}
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "\nQUARANTINED\tEVENTS\tLATEST SEQ\tTYPE\tSQLSTATE\tERROR\n")
	for _, s := range st {
		if s.Quarantined == 0 {
			continue
		}
		q := s.LastQuarantined
		if q == nil {
			q = &projections.QuarantinedEvent{}
		}
		code := q.SQLState
		if code == "" {
			code = "-"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\t%s\n", s.Name, s.Quarantined, q.Seq, q.Type, code, q.Error)
	}
	w.Flush()
	fmt.Fprintln(out, "\nquarantined events were skipped: the projection cannot store them (see the log and the audit trail at their sequences)")
}

type projRebuildCmd struct {
	Timeout time.Duration `default:"1h" help:"Give up if the rebuild takes longer."`
}

func (r projRebuildCmd) Run(ctx context.Context, c *Common) error {
	p, err := attach(ctx, c, true)
	if err != nil {
		return err
	}
	defer shutdown(p)
	heads, err := p.Heads(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := projections.Reset(ctx, p.Pool); err != nil {
		return fmt.Errorf("reset projections: %w", err)
	}
	// Best effort: without it the runners start at their next idle tick.
	_ = projections.Wake(p.Store.Conn())
	// Poll the checkpoints themselves: they are the truth, and a cached
	// pre-reset value must not end the wait early.
	deadline := time.Now().Add(r.Timeout)
	prog := startProgress("rebuild")
	defer prog.Stop()
	for {
		st, err := p.Queries.Statuses(ctx, heads)
		if err != nil {
			return err
		}
		done := true
		var applied, total uint64
		for _, s := range st {
			done = done && s.Lag == 0
			head := heads.Events
			if s.Stream == "metrics" {
				head = heads.Metrics
			}
			applied, total = applied+min(s.LastSeq, head), total+head
		}
		prog.Set(applied, total)
		if done {
			prog.Stop()
			d := time.Since(start)
			writeStatuses(os.Stdout, heads, st)
			n := heads.Events + heads.Metrics
			fmt.Printf("\nrebuilt %d projections from %d events and %d metric batches in %s (%.0f messages/s)\n",
				len(st), heads.Events, heads.Metrics, d.Round(time.Millisecond), float64(n)/d.Seconds())
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("rebuild did not reach event sequence %d and metrics sequence %d within %s", heads.Events, heads.Metrics, r.Timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type projVerifyCmd struct {
	LagTimeout  time.Duration `name:"lag-timeout" default:"1m" help:"Give up if a live projection stays behind the rebuild this long (no worker running?)."`
	Show        int           `default:"50" help:"Differences listed per table (all are counted)."`
	KeepScratch bool          `name:"keep-scratch" help:"Keep the scratch schema for debugging (it is dropped otherwise, also on failure and Ctrl-C)."`
}

// Run exits like diff(1): 0 when the read models equal their rebuild, 1
// when they differ, 2 when the verification itself failed. (Exit inside
// Run, after verify's deferred shutdown: main maps every error to 1.)
func (v projVerifyCmd) Run(ctx context.Context, c *Common) error {
	if code := v.verify(ctx, c); code != 0 {
		os.Exit(code)
	}
	return nil
}

func (v projVerifyCmd) verify(ctx context.Context, c *Common) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "maestro: projections verify: %s\n", explain(err))
		return 2
	}
	// With workers: a platform started privately (no serve on the data
	// dir) must bring its live projections up to the streams itself.
	p, err := attach(ctx, c, true)
	if err != nil {
		return fail(err)
	}
	defer shutdown(p)
	start := time.Now()
	prog := startProgress("verify")
	res, err := projections.Verify(ctx, p.Pool, projections.VerifyConfig{Events: p.Store, Metrics: p.Metrics,
		LagTimeout: v.LagTimeout, MaxShown: v.Show, KeepScratch: v.KeepScratch, Progress: prog.Set})
	prog.Stop()
	if err != nil {
		return fail(err)
	}
	writeVerify(os.Stdout, res, time.Since(start))
	if v.KeepScratch {
		fmt.Printf("scratch schema kept: %s\n", res.Scratch)
	}
	if !res.Equal() {
		return 1
	}
	return 0
}

// writeVerify prints the differences (the first of each table), then one
// summary line.
func writeVerify(out io.Writer, res *projections.VerifyResult, took time.Duration) {
	if res.Equal() {
		fmt.Fprintf(out, "verified %d projections (%d tables, %d rows) against a rebuild from the streams (%d messages applied) in %s: no differences\n",
			res.Projections, res.Tables, res.Rows, res.Messages, took.Round(time.Millisecond))
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PROJECTION\tTABLE\tKEY\tCOLUMN\tLIVE\tREBUILT")
	var rows int64
	for _, d := range res.Diffs {
		rows += d.Rows
		for _, s := range d.Shown {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Projection, s.Table, s.Key, s.Column, s.Live, s.Rebuilt)
		}
	}
	w.Flush()
	fmt.Fprintln(out)
	for _, d := range res.Diffs {
		shown := map[string]bool{}
		for _, s := range d.Shown {
			shown[s.Key] = true
		}
		fmt.Fprintf(out, "%s %s: %d rows differ (%d listed)\n", d.Projection, d.Table, d.Rows, len(shown))
	}
	fmt.Fprintf(out, "DIFFERENT: %d rows in %d tables differ from a rebuild from the streams (%d projections, %d tables, %d rows compared)\n",
		rows, len(res.Diffs), res.Projections, res.Tables, res.Rows)
}

type versionCmd struct{}

func (versionCmd) Run() error {
	fmt.Println("maestro", version)
	return nil
}

type artifactsCmd struct {
	GC artifactsGCCmd `cmd:"" name:"gc" help:"Delete blobs that no recorded artifact references."`
}

type artifactsGCCmd struct {
	Grace  time.Duration `default:"1h" help:"Keep unreferenced blobs younger than this (uploads in flight)."`
	DryRun bool          `name:"dry-run" help:"Report what would be deleted without deleting."`
}

func (g artifactsGCCmd) Run(ctx context.Context, c *Common) error {
	cfg, err := attachConfig(c, true)
	if err != nil {
		return err
	}
	cfg.Blobs = true
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer shutdown(p)
	// The projections recording artifacts (models, runs) must have every
	// artifact event before we judge a blob unreferenced; the references
	// are then read in one snapshot.
	last, err := p.Store.LastSequence(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if !p.Waiter.Wait(wctx, last, projections.ArtifactProjections()...) {
		return fmt.Errorf("the %s projections did not reach sequence %d; is a worker running?", strings.Join(projections.ArtifactProjections(), " and "), last)
	}
	refs, err := p.Queries.ReferencedDigests(ctx, last)
	if err != nil {
		return fmt.Errorf("read artifact references: %w", err)
	}
	referenced := func(d artifacts.Digest) bool { return refs[string(d)] }
	store := p.Blobs
	if g.DryRun {
		store = dryRun{store}
	}
	res, err := artifacts.GC(ctx, store, referenced, g.Grace, time.Now())
	if err != nil {
		return err
	}
	verb := "deleted"
	if g.DryRun {
		verb = "would delete"
	}
	fmt.Printf("scanned %d blobs: %s %d (%d bytes), kept %d\n", res.Scanned, verb, res.Deleted, res.BytesFreed, res.Kept)
	return nil
}

// dryRun is a store whose Delete does nothing.
type dryRun struct{ artifacts.Store }

func (dryRun) Delete(context.Context, artifacts.Digest) error { return nil }
