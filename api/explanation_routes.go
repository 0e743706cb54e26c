package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/maestro-ml/maestro/artifacts"
	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/projections"
)

// Explanations (docs/ARCHITECTURE.md "Explanations"): the explanation
// document's JSON Schema, public like the OpenAPI document, and a model
// version's explanation — its own explanation.json, else its source run's
// (a version carries its run's explanation by reference) — with the
// comparison to the nearest lower version that has one. Where the
// documents are is read from the read models; the documents are blobs.
// Uploads are validated in storeArtifact (readExplanationUpload).

// ExplanationSchemaPath is where the explanation document's schema is served.
const ExplanationSchemaPath = "/api/v1/schemas/explanation.json"

func (s *Server) explanationRoutes() []Route {
	return []Route{
		{Method: "GET", Pattern: ExplanationSchemaPath, Public: true, handle: serveExplanationSchema},
		{Method: "GET", Pattern: "/api/v1/projects/{project}/models/{name}/versions/{version}/explanation", handle: query(s, s.getVersionExplanation)},
	}
}

// explanationSchemaETag is the schema's strong validator (its SHA-256).
var explanationSchemaETag = func() string {
	sum := sha256.Sum256(explain.Schema())
	return `"sha256:` + hex.EncodeToString(sum[:]) + `"`
}()

// serveExplanationSchema answers the schema, cacheable (it changes only
// with the binary; the ETag tells a revalidating cache when it has).
func serveExplanationSchema(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "application/schema+json")
	h.Set("Cache-Control", "public, max-age=3600")
	h.Set("ETag", explanationSchemaETag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(explain.Schema()))
	return nil
}

// ExplanationResponse is GET .../versions/{version}/explanation.
type ExplanationResponse struct {
	Model   string `json:"model"`
	Version int    `json:"version"`
	// Source is "version" (the version's own explanation.json) or "run"
	// (its source run's, which the version carries).
	Source string `json:"source"`
	// RunID is the version's source run ("" when it names none).
	RunID string `json:"run_id"`
	// Digest is the document's content digest.
	Digest      string              `json:"digest"`
	Explanation explain.Explanation `json:"explanation"`
	// Previous is the nearest lower live version with a valid explanation
	// document, or null.
	Previous *ExplanationRef `json:"previous"`
	// Comparison is how each feature's importance moved from Previous
	// (explain.Compare: largest move first); empty without a Previous.
	Comparison []explain.Change `json:"comparison"`
}

// ExplanationRef names another version's explanation.
type ExplanationRef struct {
	Version int    `json:"version"`
	Source  string `json:"source"`
	RunID   string `json:"run_id"`
	Digest  string `json:"digest"`
}

func noExplanation(detail string) error { return problem("no-explanation", detail) }

func (s *Server) getVersionExplanation(c *call, in versionRef) (ExplanationResponse, error) {
	m, v, err := s.readableVersion(c.r)
	if err != nil {
		return ExplanationResponse{}, err
	}
	return s.versionExplanation(c.ctx, m, v)
}

// versionExplanation is version v of m's explanation with its comparison
// (the caller has checked that the version is readable): 404 no-explanation
// when neither the version nor its source run has a valid explanation.json.
func (s *Server) versionExplanation(ctx context.Context, m projections.Model, v int) (ExplanationResponse, error) {
	at, err := s.deps.Queries.VersionExplanation(ctx, m.ProjectID, m.ID, v, explain.FileName)
	if errors.Is(err, projections.ErrNotFound) {
		return ExplanationResponse{}, noExplanation("neither the version nor its source run has an explanation.json")
	}
	if err != nil {
		return ExplanationResponse{}, err
	}
	doc, err := s.readExplanation(ctx, at.Artifact)
	var invalid *explain.Error
	if errors.As(err, &invalid) {
		return ExplanationResponse{}, noExplanation("the " + at.Source + "'s explanation.json is not a valid explanation: " + invalid.Error())
	}
	if err != nil {
		return ExplanationResponse{}, err
	}
	out := ExplanationResponse{Model: m.Name, Version: v, Source: at.Source, RunID: at.RunID, Digest: at.Artifact.Digest,
		Explanation: doc, Comparison: []explain.Change{}}
	prev, err := s.deps.Queries.PreviousVersionExplanation(ctx, m.ProjectID, m.ID, v, explain.FileName)
	if errors.Is(err, projections.ErrNotFound) {
		return out, nil
	}
	if err != nil {
		return ExplanationResponse{}, err
	}
	prevDoc, err := s.readExplanation(ctx, prev.Artifact)
	if errors.As(err, &invalid) {
		return out, nil // a document stored before uploads were validated: nothing to compare with
	}
	if err != nil {
		return ExplanationResponse{}, err
	}
	out.Previous = &ExplanationRef{Version: prev.Version, Source: prev.Source, RunID: prev.RunID, Digest: prev.Artifact.Digest}
	out.Comparison = explain.Compare(prevDoc, doc)
	return out, nil
}

// readExplanation reads and parses a recorded explanation.json blob (an
// *explain.Error: not a valid explanation). A recorded blob that is gone is
// a server fault, as for downloads; a store that cannot serve it now is a
// retryable 503.
func (s *Server) readExplanation(ctx context.Context, a projections.ArtifactEntry) (explain.Explanation, error) {
	return s.explanations.Read(a.Digest, func() (io.ReadCloser, error) {
		blob, err := s.deps.Blobs.Open(ctx, artifacts.Digest(a.Digest))
		if errors.Is(err, artifacts.ErrNotFound) {
			return nil, err
		}
		if err != nil {
			s.deps.Logger.WarnContext(ctx, "artifact store failed a read", "request_id", requestID(ctx), "err", err)
			return nil, &problemError{code: "artifact-store-unavailable", detail: "the artifact store cannot serve the explanation right now", retryAfter: 5 * time.Second}
		}
		return blob, nil
	})
}
