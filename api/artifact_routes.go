package api

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/projections"
)

const artifactsBase = "/api/v1/projects/{project}/models/{name}/versions/{version}/artifacts"

// artifactTransferTimeout bounds one artifact upload or download; the
// server's ordinary read/write timeouts are far too short for gigabytes.
const artifactTransferTimeout = 2 * time.Hour

// ArtifactPathParam is the name the OpenAPI document gives the trailing
// chi wildcard ("/*") of the artifact routes: {path}, one or more segments.
const ArtifactPathParam = "path"

// SpecPath maps a route table pattern to its OpenAPI path: a trailing chi
// wildcard "/*" becomes "/{path}" (OpenAPI has no multi-segment parameter,
// so the document describes the artifact path as one parameter).
func SpecPath(pattern string) string {
	if p, ok := strings.CutSuffix(pattern, "/*"); ok {
		return p + "/{" + ArtifactPathParam + "}"
	}
	return pattern
}

func (s *Server) artifactRoutes() []Route {
	return s.artifactRouteSet(artifactsBase, query(s, s.listArtifacts), s.putArtifact, s.getArtifact)
}

// artifactRouteSet is the four routes of an owner of artifacts (a model
// version, a run) under base: the list, and PUT, GET and HEAD of base/*.
func (s *Server) artifactRouteSet(base string, list, put, get routeHandler) []Route {
	// The body limit sits one byte above the artifact limit so that the
	// store, not the MaxBytesReader, is what notices an oversized upload.
	maxBody := s.deps.ArtifactMaxBytes
	if maxBody < math.MaxInt64 {
		maxBody++
	}
	return []Route{
		{Method: "GET", Pattern: base, handle: list},
		// Not a Command route: the body is streamed, never buffered for an
		// idempotency record; PUT of the same bytes is a no-op by itself.
		{Method: "PUT", Pattern: base + "/*", MaxBody: maxBody, Timeout: artifactTransferTimeout, handle: put},
		{Method: "GET", Pattern: base + "/*", Timeout: artifactTransferTimeout, handle: get},
		// HEAD tells size and digest without the bytes (http.ServeContent
		// answers HEAD without a body).
		{Method: "HEAD", Pattern: base + "/*", Timeout: artifactTransferTimeout, handle: get},
	}
}

// ArtifactResponse is one artifact of a model version or a run.
type ArtifactResponse struct {
	Path        string    `json:"path"`
	Digest      string    `json:"digest"`
	Size        int64     `json:"size"`
	ContentType string    `json:"content_type"`
	RecordedAt  time.Time `json:"recorded_at"`
}

// ArtifactList is the body of GET .../artifacts (a run's without ?path=):
// a page in path order.
type ArtifactList struct {
	Items         []ArtifactResponse `json:"items"`
	NextPageToken string             `json:"next_page_token,omitempty"`
}

// artifactPathParam is the artifact path: chi's wildcard, decoded. chi
// matches against the escaped path when the request's escaping is not the
// canonical one (RawPath set), so the wildcard is decoded here, before
// validation: "a%2Fb" names "a/b" and "%2E%2E" is "..", refused.
func artifactPathParam(r *http.Request) (string, error) {
	p := chi.URLParam(r, "*")
	if r.URL.RawPath != "" {
		var err error
		if p, err = url.PathUnescape(p); err != nil {
			p = ""
		}
	}
	if !registry.ValidArtifactPath(p) {
		return "", registry.ErrArtifactPath()
	}
	return p, nil
}

// contentDigest reads an RFC 9530 Content-Digest header's sha-256 value.
func contentDigest(h string) (artifacts.Digest, error) {
	if h == "" {
		return "", nil
	}
	for _, part := range strings.Split(h, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), "sha-256") {
			continue
		}
		// A structured-field byte sequence: ":" base64 ":" (RFC 8941 3.3.5).
		v = strings.TrimSpace(v)
		b64, ok := strings.CutPrefix(v, ":")
		if ok {
			b64, ok = strings.CutSuffix(b64, ":")
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if !ok || err != nil || len(raw) != 32 {
			return "", problem("validation-failed", "Content-Digest sha-256 must be :<base64 of 32 bytes>:")
		}
		return artifacts.ParseDigest("sha256:" + hex.EncodeToString(raw))
	}
	return "", problem("validation-failed", "Content-Digest must include sha-256")
}

func (s *Server) putArtifact(w http.ResponseWriter, r *http.Request) error {
	authorize, record, err := s.versionArtifactWriter(r)
	if err != nil {
		return err
	}
	return s.uploadArtifact(w, r, authorize, record)
}

// versionArtifactWriter is what storing an artifact of the request's model
// version needs: the check that the caller may write it, and the record of
// the stored blob (registry.DecideRecordArtifact) with whether the path
// held an artifact before.
func (s *Server) versionArtifactWriter(r *http.Request) (func() error, func(registry.Artifact) (registry.Artifact, bool, uint64, error), error) {
	v, err := versionParam(r)
	if err != nil {
		return nil, nil, err
	}
	project, name := chi.URLParam(r, "project"), chi.URLParam(r, "name")
	p, _ := principal(r.Context())
	return func() error {
			_, _, err := s.deps.Registry.AuthorizeModelWrite(r.Context(), p, project, name, v)
			return err
		}, func(art registry.Artifact) (registry.Artifact, bool, uint64, error) {
			existed := false
			m, seq, err := s.deps.Registry.UpdateModelFunc(r.Context(), meta(r), p, project, name, authz.ModelWrite,
				func(_ registry.ProjectState, m registry.ModelState) ([]handlers.Change, error) {
					ver, _ := m.Version(v)
					_, existed = ver.Artifacts[art.Path]
					return registry.DecideRecordArtifact(m, v, art)
				})
			if err != nil {
				return registry.Artifact{}, false, 0, err
			}
			ver, _ := m.Version(v)
			return ver.Artifacts[art.Path], existed, seq, nil
		}, nil
}

// uploadArtifact is an artifact PUT, of a model version's or a run's: the
// body is streamed into the content-addressed store (hashed, size-limited,
// checked against Content-Digest, its type sniffed if need be), then
// record appends the event naming it and returns the artifact as recorded,
// whether the path held one before, and the sequence. authorize runs
// before a byte is read: nobody may fill the store unasked.
func (s *Server) uploadArtifact(w http.ResponseWriter, r *http.Request, authorize func() error,
	record func(registry.Artifact) (rec registry.Artifact, existed bool, seq uint64, err error)) error {
	apath, err := artifactPathParam(r)
	if err != nil {
		return err
	}
	rec, existed, seq, err := s.storeArtifact(w, r, apath, authorize, record)
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if existed {
		status = http.StatusOK
	}
	s.respondCommand(w, r, status, seq, ArtifactResponse{Path: rec.Path, Digest: rec.Digest, Size: rec.Size,
		ContentType: rec.ContentType, RecordedAt: apiTime(rec.RecordedAt)})
	return nil
}

// storeArtifact is uploadArtifact up to the answer, for the upload of
// apath (the MLflow artifact proxy answers in its own way).
func (s *Server) storeArtifact(w http.ResponseWriter, r *http.Request, apath string, authorize func() error,
	record func(registry.Artifact) (rec registry.Artifact, existed bool, seq uint64, err error)) (registry.Artifact, bool, uint64, error) {
	want, err := contentDigest(r.Header.Get("Content-Digest"))
	if err != nil {
		return registry.Artifact{}, false, 0, err
	}
	ct, sniff, err := artifactContentType(r.Header.Get("Content-Type"), apath)
	if err != nil {
		return registry.Artifact{}, false, 0, err
	}
	if err := authorize(); err != nil {
		return registry.Artifact{}, false, 0, err
	}
	// A declared length over the limit is refused without reading a byte.
	if r.ContentLength > s.deps.ArtifactMaxBytes {
		return registry.Artifact{}, false, 0, problem("payload-too-large", "the artifact exceeds the configured maximum size")
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(artifactTransferTimeout))
	_ = rc.SetWriteDeadline(time.Now().Add(artifactTransferTimeout))
	body := &clientBody{Reader: r.Body}
	var stored io.Reader = body
	if path.Base(apath) == explain.FileName {
		doc, err := readExplanationUpload(body)
		if err != nil {
			s.m.addArtifactBytes("in", body.n)
			return registry.Artifact{}, false, 0, err
		}
		stored = bytes.NewReader(doc)
	}
	var head *sniffHead
	if sniff {
		head = &sniffHead{}
		stored = io.TeeReader(body, head)
	}
	digest, size, err := s.deps.Blobs.Put(r.Context(), stored, s.deps.ArtifactMaxBytes, want)
	s.m.addArtifactBytes("in", body.n)
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
	case errors.Is(err, artifacts.ErrTooLarge), errors.As(err, &mbe):
		return registry.Artifact{}, false, 0, problem("payload-too-large", "the artifact exceeds the configured maximum size")
	case errors.Is(err, artifacts.ErrDigestMismatch):
		return registry.Artifact{}, false, 0, problem("digest-mismatch", "the uploaded bytes do not match Content-Digest; nothing was stored")
	case body.err != nil:
		// The client went away mid-body (or sent a broken chunked body):
		// its problem, not a server fault, and it will most likely never
		// read this answer.
		return registry.Artifact{}, false, 0, problem("validation-failed", "the upload ended before the body was complete; nothing was stored")
	case errors.Is(err, syscall.ENOSPC):
		return registry.Artifact{}, false, 0, problem("insufficient-storage", "the artifact store is out of space; nothing was stored")
	default:
		// Every fault of the client's is handled above: what is left is the
		// store's (a directory that cannot be written, an S3 endpoint that
		// is down). Nothing was recorded, so the upload may be retried.
		s.deps.Logger.WarnContext(r.Context(), "artifact store failed an upload", "request_id", requestID(r.Context()), "err", err)
		return registry.Artifact{}, false, 0, &problemError{code: "artifact-store-unavailable",
			detail: "the artifact store cannot take the upload right now; nothing was stored", retryAfter: 5 * time.Second}
	}
	if head != nil {
		ct = head.contentType()
	}
	return record(registry.Artifact{Path: apath, Digest: string(digest), Size: size, ContentType: ct})
}

// readExplanationUpload buffers the upload of an explanation.json (at most
// explain.MaxBytes: it is validated whole before a byte is stored) and
// validates it: 400 invalid-explanation naming the JSON pointer of the
// error, 413 beyond the limit. Every other file streams.
func readExplanationUpload(body *clientBody) ([]byte, error) {
	doc, err := io.ReadAll(io.LimitReader(body, explain.MaxBytes+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, problem("payload-too-large", "the artifact exceeds the configured maximum size")
	case err != nil:
		return nil, problem("validation-failed", "the upload ended before the body was complete; nothing was stored")
	case len(doc) > explain.MaxBytes:
		return nil, problem("payload-too-large", fmt.Sprintf("an %s is at most %d bytes; nothing was stored", explain.FileName, explain.MaxBytes))
	}
	if err := explain.Validate(doc); err != nil {
		var xe *explain.Error
		if !errors.As(err, &xe) {
			return nil, err
		}
		return nil, problem("invalid-explanation", fmt.Sprintf("%s does not match its schema (/api/v1/schemas/explanation.json) at %s; nothing was stored",
			explain.FileName, xe.Error()))
	}
	return doc, nil
}

// readableVersion resolves a live version of a readable model.
func (s *Server) readableVersion(r *http.Request) (projections.Model, int, error) {
	m, err := s.readableModel(r)
	if err != nil {
		return m, 0, err
	}
	v, err := versionParam(r)
	if err != nil {
		return m, 0, err
	}
	ver, err := s.deps.Queries.Version(r.Context(), m.ID, v)
	if errors.Is(err, projections.ErrNotFound) || (err == nil && (ver.Deleted || m.Deleted)) {
		return m, 0, versionMissing()
	}
	return m, v, err
}

func (s *Server) listArtifacts(c *call, q pageQuery) (ArtifactList, error) {
	m, v, err := s.readableVersion(c.r)
	if err != nil {
		return ArtifactList{}, err
	}
	page, err := s.deps.Queries.ListArtifacts(c.ctx, m.ID, v, q.token, q.size)
	if err != nil {
		return ArtifactList{}, pageError(err)
	}
	return ArtifactList(pageOf(page, artifactFromProjection)), nil
}

func artifactFromProjection(a projections.ArtifactEntry) ArtifactResponse {
	return ArtifactResponse{Path: a.Path, Digest: a.Digest, Size: a.Size, ContentType: a.ContentType, RecordedAt: apiTime(a.RecordedAt)}
}

func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request) error {
	return s.downloadArtifact(w, r, func(apath string) (projections.ArtifactEntry, error) {
		m, v, err := s.readableVersion(r)
		if err != nil {
			return projections.ArtifactEntry{}, err
		}
		return s.deps.Queries.Artifact(r.Context(), m.ID, v, apath)
	})
}

// downloadArtifact is an artifact GET or HEAD, of a model version's or a
// run's: find resolves the readable owner and looks the path up in the
// read model (ErrNotFound: the path holds nothing), and the blob is served
// by http.ServeContent (Range, ETag = digest, conditional requests) as an
// attachment in a sandbox.
func (s *Server) downloadArtifact(w http.ResponseWriter, r *http.Request, find func(apath string) (projections.ArtifactEntry, error)) error {
	if err := s.awaitMinSequence(r); err != nil {
		return err
	}
	apath, err := artifactPathParam(r)
	if err != nil {
		return err
	}
	a, err := find(apath)
	if errors.Is(err, projections.ErrNotFound) {
		return problem("not-found", "artifact not found")
	}
	if err != nil {
		return err
	}
	blob, err := s.deps.Blobs.Open(r.Context(), artifacts.Digest(a.Digest))
	if errors.Is(err, artifacts.ErrNotFound) {
		return err // a recorded blob that is gone is a server fault (500, logged), not a 404
	}
	if err != nil {
		s.deps.Logger.WarnContext(r.Context(), "artifact store failed a download", "request_id", requestID(r.Context()), "err", err)
		return &problemError{code: "artifact-store-unavailable", detail: "the artifact store cannot serve the artifact right now", retryAfter: 5 * time.Second}
	}
	defer blob.Close()
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(artifactTransferTimeout))
	out := &contentProblems{ResponseWriter: w, r: r}
	defer func() { s.m.addArtifactBytes("out", out.sent) }()
	w = out
	h := w.Header()
	h.Set("ETag", `"`+a.Digest+`"`)
	h.Set("Content-Type", a.ContentType)
	h.Set("Cache-Control", "private, no-cache")
	// User content served from the API origin must never run as a page.
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(a.Path)}))
	http.ServeContent(w, r, "", a.RecordedAt, blob)
	return nil
}

// artifactContentType is the media type to record for an upload. A type
// the client names is kept, except the ones that say nothing about the
// bytes: none at all, and application/x-www-form-urlencoded, which curl
// --data-binary sends unasked. For those the type comes from the path's
// extension, or else (sniff) from the first 512 bytes of the body, read on
// the way into the store, never buffered whole.
func artifactContentType(header, apath string) (ct string, sniff bool, err error) {
	if header != "" {
		mt, _, err := mime.ParseMediaType(header)
		if err != nil || len(header) > 255 || !handlers.PlainText(header) {
			return "", false, problem("validation-failed", "Content-Type must be a valid media type of at most 255 characters")
		}
		if mt != "application/x-www-form-urlencoded" {
			return header, false, nil
		}
	}
	if ext := path.Ext(apath); ext != "" {
		if t := mime.TypeByExtension(ext); t != "" {
			return t, false, nil
		}
	}
	return "", true, nil
}

// sniffHead keeps the first 512 bytes written to it (what
// http.DetectContentType looks at) and discards the rest.
type sniffHead struct{ b []byte }

func (h *sniffHead) Write(p []byte) (int, error) {
	if room := 512 - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// contentType is the sniffed type; bytes it cannot name are
// application/octet-stream, as are empty bodies.
func (h *sniffHead) contentType() string {
	if len(h.b) == 0 {
		return "application/octet-stream"
	}
	return http.DetectContentType(h.b)
}

// clientBody remembers how reading the request body failed, so that a
// client that went away mid-upload is told apart from a store that failed,
// and counts the bytes read (maestro_artifact_bytes_total, direction in).
type clientBody struct {
	io.Reader
	err error
	n   int64
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.Reader.Read(p)
	b.n += int64(n)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// contentProblems turns the bare error answers of http.ServeContent (416
// for a Range it cannot serve, 412 for a failed If-Match or
// If-Unmodified-Since, both text or empty) into problem responses like
// every other error of the API, and drops the text ServeContent writes.
type contentProblems struct {
	http.ResponseWriter
	r       *http.Request
	replied bool
	// sent counts the artifact's bytes written (maestro_artifact_bytes_total,
	// direction out); a problem's body is not the artifact's.
	sent int64
}

func (c *contentProblems) WriteHeader(code int) {
	var pe *problemError
	switch code {
	case http.StatusRequestedRangeNotSatisfiable:
		pe = &problemError{code: "range-not-satisfiable", detail: "the Range header is malformed or lies outside the artifact"}
	case http.StatusPreconditionFailed:
		pe = &problemError{code: "precondition-failed", detail: "If-Match or If-Unmodified-Since does not hold for the artifact"}
	default:
		c.ResponseWriter.WriteHeader(code)
		return
	}
	c.replied = true
	c.Header().Del("Content-Disposition")
	writeProblem(c.ResponseWriter, c.r, pe)
}

func (c *contentProblems) Write(b []byte) (int, error) {
	if c.replied {
		return len(b), nil
	}
	n, err := c.ResponseWriter.Write(b)
	c.sent += int64(n)
	return n, err
}

// Unwrap keeps http.ResponseController working through the wrapper.
func (c *contentProblems) Unwrap() http.ResponseWriter { return c.ResponseWriter }
