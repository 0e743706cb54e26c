package api

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/projections"
)

// The verifiable audit trail's routes (docs/ARCHITECTURE.md, "Audit trail:
// hash chain"): the public keys that sign its checkpoints, and its export.

// auditExportTimeout bounds an export (a whole trail of millions of entries
// is a few hundred megabytes of JSON Lines).
const auditExportTimeout = 10 * time.Minute

// auditKeyJWK is an audit signing key as a JWK (RFC 8037), as
// /.well-known/jwks.json lists the token keys.
type auditKeyJWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// auditKeys answers GET /api/v1/audit/keys: every key that signed a
// checkpoint. Public, like the token JWKS: a public key discloses nothing,
// and a third party verifying an export must be able to compare the
// export's key id with the platform's without an account.
func (s *Server) auditKeys(w http.ResponseWriter, r *http.Request) error {
	keys, err := s.deps.Queries.AuditKeys(r.Context())
	if err != nil {
		return err
	}
	out := struct {
		Keys []auditKeyJWK `json:"keys"`
	}{Keys: []auditKeyJWK{}}
	for _, k := range keys {
		pub, err := base64.StdEncoding.DecodeString(k.PublicKey)
		if err != nil {
			return err
		}
		out.Keys = append(out.Keys, auditKeyJWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(pub),
			Kid: k.KeyID, Alg: "EdDSA", Use: "sig"})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// exportAudit answers GET /api/v1/audit/export: the trail (admins) or a
// project's entries, the others as links (its owners), as JSON Lines with
// hashes and signed checkpoints (projections.ExportAudit).
func (s *Server) exportAudit(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var opt projections.AuditExportOptions
	for name, dst := range map[string]*uint64{"from_seq": &opt.From, "to_seq": &opt.To} {
		if v := q.Get(name); v != "" {
			n, err := strconv.ParseUint(v, 10, 63)
			if err != nil {
				return problem("validation-failed", name+" must be a non-negative integer")
			}
			*dst = n
		}
	}
	if opt.To > 0 && opt.From > opt.To {
		return problem("validation-failed", "from_seq must not be after to_seq")
	}
	if ref := q.Get("project"); ref != "" {
		if len(ref) > 256 || !handlers.PlainText(ref) {
			return problem("validation-failed", "project is a project's slug or id")
		}
		proj, err := s.readableProjectRef(r, ref)
		if err != nil {
			return err
		}
		p, _ := principal(r.Context())
		if !authz.CanInProject(p, proj.ID, authz.ProjectRole(proj.Role), authz.ExportAudit) {
			return problem("forbidden", "exporting a project's audit trail requires the owner role")
		}
		opt.Project = proj.ID
	} else if _, err := s.requireAdmin(r, authz.ExportAudit); err != nil {
		return err
	}
	if err := s.awaitMinSequence(r, projections.Audit{}.Name()); err != nil {
		return err
	}
	lw := &lazyHeaders{w: w, set: func(h http.Header) {
		h.Set("Content-Type", "application/x-ndjson")
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Disposition", `attachment; filename="maestro-audit.jsonl"`)
	}}
	_, err := s.deps.Queries.ExportAudit(r.Context(), lw, opt)
	switch {
	case err == nil:
		return nil
	case lw.started:
		// The answer has begun: a problem appended to it would read as a
		// broken line. Abort the response instead; the truncated file has
		// no final signed checkpoint, so no verifier accepts it.
		s.deps.Logger.WarnContext(r.Context(), "audit export aborted", "request_id", requestID(r.Context()), "err", err)
		panic(http.ErrAbortHandler)
	case errors.Is(err, projections.ErrNotSealed):
		return &problemError{code: "unavailable", detail: "no signed checkpoint covers the requested range yet; retry in a second", retryAfter: time.Second}
	case errors.Is(err, projections.ErrEmptyExport):
		return problem("not-found", "the requested range of the audit trail holds no entry")
	}
	return err
}

// lazyHeaders sets a streamed answer's headers at its first byte, so an
// error found before it can still be a problem response.
type lazyHeaders struct {
	w       http.ResponseWriter
	set     func(http.Header)
	started bool
}

func (l *lazyHeaders) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		l.set(l.w.Header())
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(p)
}
