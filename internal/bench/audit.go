package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/projections"
)

// benchAudit fills a stream as the rebuild scenario does (RebuildEvents,
// runners off), builds the audit trail alone (the hash chain's cost rides
// on it), seals it, and measures `maestro audit verify`'s work
// (projections.VerifyAudit: the stream read, every entry rebuilt and
// canonicalised, compared with its stored row and chained), the export,
// and the offline verification of the export file.
func (r *runner) benchAudit(ctx context.Context) error {
	memstat.ResetPeakRSS()
	p, err := r.env.startPlatform(ctx, false, false, false)
	if err != nil {
		return err
	}
	defer stopPlatform(p)
	users := max(1, r.cfg.RebuildEvents/4)
	r.logf("audit: filling %d events", users*4)
	if err := fill(ctx, p, users, r.cfg.FillWorkers); err != nil {
		return err
	}
	last, err := p.Store.LastSequence(ctx)
	if err != nil {
		return err
	}

	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	start := time.Now()
	run := projections.NewRunner(p.Pool, p.Store, projections.Audit{}, projections.RunnerConfig{})
	wg.Go(func() { _ = run.Run(rctx) })
	for {
		var cp int64
		if err := p.Pool.QueryRow(ctx, "SELECT COALESCE((SELECT last_seq FROM projection_checkpoints WHERE name = 'audit'), 0)").Scan(&cp); err != nil {
			return err
		}
		if uint64(cp) >= last {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	build := time.Since(start)
	r.add(Row{Name: "Audit trail build from empty (hash chain, audit runner alone)", Fsync: "off", N: int(last), Total: build,
		Rate: float64(last) / build.Seconds(), Unit: "ev/s", Allocs: -1, Bytes: -1, PeakRSS: memstat.PeakRSS(), Note: "per event"})

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	sealer := projections.NewAuditSealer(p.Pool, projections.AuditSealerConfig{Key: priv, KeyID: auth.KeyID(priv.Public().(ed25519.PublicKey))})
	if sealed, err := sealer.Seal(ctx); err != nil || sealed != last {
		return fmt.Errorf("seal the trail at %d: sealed %d, %v", last, sealed, err)
	}

	memstat.ResetPeakRSS()
	var meter allocMeter
	meter.start()
	start = time.Now()
	res, err := projections.VerifyAudit(ctx, p.Pool, projections.AuditVerifyConfig{Events: p.Store})
	if err != nil {
		return err
	}
	took := time.Since(start)
	meter.stop(int(last))
	if !res.OK() || uint64(res.Events) != last {
		return fmt.Errorf("audit verify of an intact trail: %d problems, %d events read of %d", res.Count, res.Events, last)
	}
	al, by := meter.perOp()
	r.add(Row{Name: "audit verify (stream → entries → chain, vs stored rows)", Fsync: "off", N: int(res.Events), Total: took,
		Rate: float64(res.Events) / took.Seconds(), Unit: "ev/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(), Note: "per event"})

	file, err := r.env.tempDir("audit-export-")
	if err != nil {
		return err
	}
	path := filepath.Join(file, "audit.jsonl")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	start = time.Now()
	if _, err := projections.ExportAudit(ctx, p.Pool, f, projections.AuditExportOptions{}); err != nil {
		f.Close()
		return err
	}
	took = time.Since(start)
	st, _ := f.Stat()
	if err := f.Close(); err != nil {
		return err
	}
	r.add(Row{Name: "audit export (JSON Lines)", Fsync: "off", N: int(last), Total: took, Rate: float64(last) / took.Seconds(), Unit: "ev/s",
		Allocs: -1, Bytes: -1, Note: fmt.Sprintf("%.1f MB file", float64(st.Size())/1e6)})

	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	start = time.Now()
	vr, err := projections.VerifyAuditExport(io.Reader(in), nil, 0)
	if err != nil {
		return err
	}
	took = time.Since(start)
	if !vr.OK() || uint64(vr.Entries) != last {
		return fmt.Errorf("offline verify of the export: %d problems, %d entries of %d", vr.Count, vr.Entries, last)
	}
	r.add(Row{Name: "audit verify --file (offline, chain + signature)", N: vr.Entries, Total: took, Rate: float64(vr.Entries) / took.Seconds(),
		Unit: "ev/s", Allocs: -1, Bytes: -1, Note: "per entry"})
	return nil
}
