package bench

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/internal/memstat"
	"github.com/maestro-ml/maestro/platform"
)

// benchArtifacts uploads and downloads one artifact of cfg.ArtifactMiB
// through the HTTP API (PUT and GET .../artifacts/{path}) on the
// filesystem store, and with -artifact-s3 on S3 as well (gofakes3 in this
// process: its objects live in this heap, so that row's peak RSS includes
// the stored artifact and is not the server's footprint).
func (r *runner) benchArtifacts(ctx context.Context) error {
	if err := r.artifactRows(ctx, "filesystem", "blob fsync'd, then renamed to its digest", "", nil); err != nil {
		return err
	}
	if !r.cfg.ArtifactS3 {
		return nil
	}
	srv := httptest.NewServer(gofakes3.New(s3mem.New()).Server())
	defer srv.Close()
	s3 := artifacts.S3Config{Endpoint: strings.TrimPrefix(srv.URL, "http://"), Bucket: "maestro-bench", Region: "us-east-1",
		AccessKey: "bench", SecretKey: "bench-secret"}
	return r.artifactRows(ctx, "S3: gofakes3, in memory, in process", "multipart to a temp object, then a server-side copy; peak RSS is mostly gofakes3 holding the object (and its parts)",
		"; peak RSS is mostly gofakes3 holding the object",
		func(c *platform.Config) { c.S3 = s3 })
}

func (r *runner) artifactRows(ctx context.Context, store, upNote, downNote string, mod func(*platform.Config)) error {
	mods := []func(*platform.Config){func(c *platform.Config) { c.ArtifactMaxBytes = max(c.ArtifactMaxBytes, r.cfg.ArtifactMiB<<20) }}
	if mod != nil {
		mods = append(mods, mod)
	}
	p, err := r.env.startPlatform(ctx, true, true, true, mods...)
	if err != nil {
		return err
	}
	defer stopPlatform(p)
	c := &artClient{base: p.URL(), hc: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
	defer c.hc.CloseIdleConnections()
	if err := c.setup(ctx, p); err != nil {
		return fmt.Errorf("artifacts (%s): %w", store, err)
	}
	size := r.cfg.ArtifactMiB << 20
	mib := float64(r.cfg.ArtifactMiB)
	label := fmt.Sprintf("%d MiB", r.cfg.ArtifactMiB)
	if r.cfg.ArtifactMiB%1024 == 0 {
		label = fmt.Sprintf("%d GiB", r.cfg.ArtifactMiB/1024)
	}

	var seed [32]byte
	_, _ = crand.Read(seed[:])
	memstat.ResetPeakRSS()
	var meter allocMeter
	meter.start()
	t0 := time.Now()
	if err := c.upload(ctx, size, seed); err != nil {
		return fmt.Errorf("artifacts (%s): upload: %w", store, err)
	}
	up := time.Since(t0)
	meter.stop(1)
	al, by := meter.perOp()
	r.add(Row{Name: fmt.Sprintf("HTTP PUT artifact, %s (%s)", label, store), Fsync: "on", N: 1, Total: up,
		Rate: mib / up.Seconds(), Unit: "MiB/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(),
		Note: "client generates ChaCha8 data; server streams, SHA-256s, stores, records the event; " + upNote + "; allocs = client + server"})

	memstat.ResetPeakRSS()
	meter = allocMeter{}
	meter.start()
	t0 = time.Now()
	n, err := c.download(ctx)
	down := time.Since(t0)
	meter.stop(1)
	if err != nil {
		return fmt.Errorf("artifacts (%s): download: %w", store, err)
	}
	if n != size {
		return fmt.Errorf("artifacts (%s): downloaded %d bytes of %d", store, n, size)
	}
	al, by = meter.perOp()
	r.add(Row{Name: fmt.Sprintf("HTTP GET artifact, %s (%s)", label, store), Fsync: "", N: 1, Total: down,
		Rate: mib / down.Seconds(), Unit: "MiB/s", Allocs: al, Bytes: by, PeakRSS: memstat.PeakRSS(),
		Note: "http.ServeContent from the blob; client discards; allocs = client + server" + downNote})
	return nil
}

// artClient is one editor of one model version, talking HTTP.
type artClient struct {
	base, token string
	hc          *http.Client
}

const benchArtifactPath = "/api/v1/projects/bench/models/weights/versions/1/artifacts/model.bin"

func (c *artClient) setup(ctx context.Context, p *platform.Platform) error {
	if _, err := p.CreateAdmin(ctx, "artifacts@example.com", benchPassword, "Artifacts Bench"); err != nil {
		return err
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := c.json(ctx, "POST", "/api/v1/auth/login", map[string]string{"email": "artifacts@example.com", "password": benchPassword}, 200, &tok); err != nil {
		return err
	}
	c.token = tok.AccessToken
	for _, s := range []struct {
		path string
		body any
	}{
		{"/api/v1/projects", map[string]any{"name": "bench"}},
		{"/api/v1/projects/bench/models", map[string]any{"name": "weights"}},
		{"/api/v1/projects/bench/models/weights/versions", map[string]any{}},
	} {
		if err := c.json(ctx, "POST", s.path, s.body, 201, nil); err != nil {
			return err
		}
	}
	return nil
}

func (c *artClient) json(ctx context.Context, method, path string, body any, want int, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (c *artClient) upload(ctx context.Context, size int64, seed [32]byte) error {
	req, err := http.NewRequestWithContext(ctx, "PUT", c.base+benchArtifactPath, io.LimitReader(rand.NewChaCha8(seed), size))
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("%d %s", resp.StatusCode, raw)
	}
	var rec struct {
		Size int64 `json:"size"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil || rec.Size != size {
		return fmt.Errorf("recorded %s, want %d bytes", raw, size)
	}
	return nil
}

func (c *artClient) download(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+benchArtifactPath, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("%d %s", resp.StatusCode, raw)
	}
	return io.CopyBuffer(io.Discard, resp.Body, make([]byte, 1<<20))
}
