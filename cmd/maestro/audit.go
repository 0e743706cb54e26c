package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/maestro-ml/maestro/internal/durable"
	"github.com/maestro-ml/maestro/platform"
	"github.com/maestro-ml/maestro/projections"
)

type auditCmd struct {
	Verify auditVerifyCmd `cmd:"" help:"Recompute the audit trail from the event stream and compare it with the stored entries and signed checkpoints, or verify an export offline with --file (exit 0 intact, 1 tampered, 2 failed)."`
	Export auditExportCmd `cmd:"" help:"Write the audit trail as JSON Lines with its hashes and signed checkpoints, for verification offline."`
}

type auditVerifyCmd struct {
	File       string        `name:"file" help:"Verify this export (or - for standard input) from its content alone; no platform is needed."`
	PublicKey  string        `name:"public-key" help:"Trust only this Ed25519 public key (base64 of its 32 bytes, or a JWK's x) for the checkpoints, instead of the keys the export or the database lists."`
	LagTimeout time.Duration `name:"lag-timeout" default:"1m" help:"Wait this long for the audit projection to reach the stream's head before comparing."`
	Show       int           `default:"50" help:"Problems listed (all are counted)."`
}

// Run exits like diff(1): 0 intact, 1 tampered, 2 the verification failed.
func (v auditVerifyCmd) Run(ctx context.Context, c *Common) error {
	if code := v.verify(ctx, c, os.Stdout); code != 0 {
		os.Exit(code)
	}
	return nil
}

func (v auditVerifyCmd) verify(ctx context.Context, c *Common, out io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "maestro: audit verify: %s\n", explain(err))
		return 2
	}
	var trusted map[string]ed25519.PublicKey
	if v.PublicKey != "" {
		id, pub, err := projections.ParsePublicKey(v.PublicKey)
		if err != nil {
			return fail(fmt.Errorf("--public-key: %w", err))
		}
		trusted = map[string]ed25519.PublicKey{id: pub}
	}
	start := time.Now()
	if v.File != "" {
		in := io.Reader(os.Stdin)
		if v.File != "-" {
			f, err := os.Open(v.File)
			if err != nil {
				return fail(err)
			}
			defer f.Close()
			in = f
		}
		res, err := projections.VerifyAuditExport(in, trusted, v.Show)
		if err != nil {
			return fail(err)
		}
		writeProblems(out, res.Problems)
		h := res.Header
		if !res.OK() {
			fmt.Fprintf(out, "TAMPERED: %d problems in the export of %d..%d (%d entries, %d links, %d checkpoints)\n",
				res.Count, h.From, h.To, res.Entries, res.Links, res.Checkpoints)
			return 1
		}
		trust := "keys listed in the file: compare them with GET /api/v1/audit/keys"
		if trusted != nil {
			trust = "the key given by --public-key"
		}
		fmt.Fprintf(out, "verified the export of %d..%d: %d entries, %d links, %d signed checkpoints by %v (%s) in %s: intact\n",
			h.From, h.To, res.Entries, res.Links, res.Checkpoints, res.KeysUsed, trust, time.Since(start).Round(time.Millisecond))
		return 0
	}
	p, err := attach(ctx, c, true)
	if err != nil {
		return fail(err)
	}
	defer shutdown(p)
	if err := awaitAudit(ctx, p, v.LagTimeout); err != nil {
		return fail(err)
	}
	prog := startProgress("audit verify")
	res, err := projections.VerifyAudit(ctx, p.Pool, projections.AuditVerifyConfig{Events: p.Store, Keys: trusted, MaxShown: v.Show, Progress: prog.Set})
	prog.Stop()
	if err != nil {
		return fail(err)
	}
	writeProblems(out, res.Problems)
	took := time.Since(start).Round(time.Millisecond)
	if !res.OK() {
		fmt.Fprintf(out, "TAMPERED: %d problems in the audit trail through sequence %d (%d events read, %d entries compared, %d signed checkpoints)\n",
			res.Count, res.Through, res.Events, res.Entries, res.Checkpoints)
		return 1
	}
	fmt.Fprintf(out, "verified the audit trail through sequence %d against the event stream: %d events read, %d entries, %d signed checkpoints (%d not reached yet), %d quarantined events, in %s: intact\n",
		res.Through, res.Events, res.Entries, res.Checkpoints, res.Pending, res.Quarantined, took)
	return 0
}

func writeProblems(out io.Writer, problems []projections.AuditProblem) {
	if len(problems) == 0 {
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SEQ\tKIND\tDETAIL")
	for _, p := range problems {
		fmt.Fprintf(w, "%d\t%s\t%s\n", p.Seq, p.Kind, p.Detail)
	}
	w.Flush()
}

// awaitAudit waits, up to timeout, until the audit projection has applied
// the stream up to its head as it is now (a private platform's workers
// catch up first; a running serve's are usually there). Past the timeout
// the verification covers what is applied, and says through which sequence.
func awaitAudit(ctx context.Context, p *platform.Platform, timeout time.Duration) error {
	head, err := p.Store.LastSequence(ctx)
	if err != nil {
		return fmt.Errorf("stream head: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for {
		var cp int64
		err := p.Pool.QueryRow(ctx, "SELECT COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = 'audit'), 0)").Scan(&cp)
		if err != nil {
			return fmt.Errorf("audit checkpoint: %w", err)
		}
		if uint64(cp) >= head || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type auditExportCmd struct {
	From    uint64        `name:"from" help:"First sequence (default: the first entry)."`
	To      uint64        `name:"to" help:"Last sequence wanted (default: the newest signed checkpoint); the export runs on to the first signed checkpoint at or after it."`
	Project string        `name:"project" help:"A project id: its entries in full, every other entry as a link (sequence, digest, hash)."`
	Output  string        `name:"output" short:"o" help:"Write to this file (created 0600: entries name people) instead of standard output."`
	Wait    time.Duration `name:"wait" default:"30s" help:"Wait this long for a signed checkpoint to cover the range."`
}

func (x auditExportCmd) Run(ctx context.Context, c *Common) error {
	if x.To > 0 && x.From > x.To {
		return errors.New("--from must not be after --to")
	}
	p, err := attach(ctx, c, true)
	if err != nil {
		return err
	}
	defer shutdown(p)
	if err := awaitAudit(ctx, p, x.Wait); err != nil {
		return err
	}
	opt := projections.AuditExportOptions{From: x.From, To: x.To, Project: x.Project}
	deadline := time.Now().Add(x.Wait)
	for {
		// Nothing is written before the range is known to be sealed, so a
		// retry starts from scratch.
		var h projections.ExportHeader
		if x.Output == "" {
			h, err = projections.ExportAudit(ctx, p.Pool, os.Stdout, opt)
		} else {
			h, err = exportToFile(ctx, p, x.Output, opt)
		}
		if errors.Is(err, projections.ErrNotSealed) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "exported the audit trail %d..%d\n", h.From, h.To)
		return nil
	}
}

// exportToFile writes the export to a temporary file next to path and
// renames it into place once complete, so a failed export leaves no file
// that looks whole.
func exportToFile(ctx context.Context, p *platform.Platform, path string, opt projections.AuditExportOptions) (projections.ExportHeader, error) {
	f, err := os.CreateTemp(filepath.Dir(path), ".audit-export-*.tmp") // 0600
	if err != nil {
		return projections.ExportHeader{}, err
	}
	defer os.Remove(f.Name()) // no-op once renamed
	h, err := projections.ExportAudit(ctx, p.Pool, f, opt)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return h, err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return h, fmt.Errorf("write %s: %w", path, err)
	}
	return h, durable.SyncDir(filepath.Dir(path))
}
