package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/events"
)

// Tokens is the read model of API tokens: what the authenticator looks a
// token up by (the hash of its secret) and what a listing shows.
type Tokens struct{}

// Name implements Projection.
func (Tokens) Name() string { return "tokens" }

// Tables implements Projection.
func (Tokens) Tables() []string { return []string{"api_tokens"} }

// Aggregates implements Projection.
func (Tokens) Aggregates() []string { return []string{events.AggToken} }

// Handles implements Projection.
func (Tokens) Handles(t string) bool {
	switch t {
	case events.TokenCreated, events.TokenRevoked, events.TokenUsed:
		return true
	}
	return false
}

// Queue implements Projection.
func (Tokens) Queue(b *Batch, evs []events.Envelope) error {
	for _, e := range evs {
		switch e.Type {
		case events.TokenCreated:
			var d events.TokenCreatedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			var expires *time.Time
			if d.ExpiresAt != "" {
				at, err := time.Parse(time.RFC3339Nano, d.ExpiresAt)
				if err != nil {
					// Not JSON's error: say it is the data's, or the event
					// would be retried for ever rather than quarantined.
					return fmt.Errorf("%w: %s data (seq %d): expires_at: %v", ErrUndecodable, e.Type, e.Sequence, err)
				}
				expires = &at
			}
			var project *string
			if d.ProjectID != "" {
				project = &d.ProjectID
			}
			b.Queue(`INSERT INTO api_tokens (id, user_id, name, prefix, hash, project_id, role, created_at, expires_at, created_seq)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
				d.TokenID, d.UserID, d.Name, d.Prefix, d.Hash, project, d.Role, e.Time, expires, int64(e.Sequence))
		case events.TokenRevoked:
			var d events.TokenRevokedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL`, d.TokenID, e.Time)
			b.Invalidate("token", d.TokenID)
		case events.TokenUsed:
			var d events.TokenUsedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			// The same bounded list the write side folds (identity.TokenAddresses).
			b.Queue(`UPDATE api_tokens SET last_used_at = $2, last_used_ip = $3,
				addresses = (array_remove(addresses, $3) || $3::text)[greatest(1, cardinality(array_remove(addresses, $3)) + 2 - $4):]
				WHERE id = $1`, d.TokenID, e.Time, d.ClientIP, TokenAddresses)
			b.Invalidate("token", d.TokenID)
		}
	}
	return nil
}

// TokenAddresses is identity.TokenAddresses (projections cannot import the
// write side); TestTokenAddressesAgree keeps them equal.
const TokenAddresses = 16

// TokenPrincipal is what the authenticator needs about an API token.
type TokenPrincipal struct {
	TokenID   string
	Hash      string
	UserID    string
	Email     string
	Role      string // the owner's global role
	Active    bool   // the owner is active
	ProjectID string // "" = every project
	Ceiling   string // project-role ceiling, "" = none
	ExpiresAt time.Time
	Revoked   bool
	LastUsed  time.Time
	Addresses []string
}

// TokenByHash looks up an API token and its owner by the hash of its secret.
func (q *Queries) TokenByHash(ctx context.Context, hash string) (TokenPrincipal, error) {
	return cachedRead(q, q.tokens, hash, func() (TokenPrincipal, error) {
		var p TokenPrincipal
		var project *string
		var expires, used *time.Time
		// A token created before its owner's latest deactivation stays
		// dead after a reactivation, as the write side decides (Actor).
		err := q.pool.QueryRow(ctx, `SELECT t.id, t.hash, u.id, coalesce(u.email, ''), u.role, u.active, t.project_id::text, t.role,
				t.expires_at, t.revoked_at IS NOT NULL OR t.created_at <= coalesce(u.deactivated_at, '-infinity'), t.last_used_at, t.addresses
			FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = $1`, hash).
			Scan(&p.TokenID, &p.Hash, &p.UserID, &p.Email, &p.Role, &p.Active, &project, &p.Ceiling, &expires, &p.Revoked, &used, &p.Addresses)
		if errors.Is(err, pgx.ErrNoRows) {
			return p, ErrNotFound
		}
		if project != nil {
			p.ProjectID = *project
		}
		if expires != nil {
			p.ExpiresAt = *expires
		}
		if used != nil {
			p.LastUsed = *used
		}
		return p, err
	}, func(p TokenPrincipal) []string {
		return []string{"token:" + strings.ToLower(p.TokenID), "user:" + p.UserID}
	})
}

// APIToken is a token as a listing shows it: never its secret or hash.
type APIToken struct {
	ID         string     `json:"id"`
	UserID     string     `json:"user_id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix"`
	ProjectID  string     `json:"project_id,omitempty"`
	Role       string     `json:"role,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
	LastUsedIP string     `json:"last_used_ip,omitempty"`
}

// ListTokens pages userID's tokens in creation order, revoked and expired
// ones too unless live is set.
func (q *Queries) ListTokens(ctx context.Context, userID string, live bool, now time.Time, pageToken string, limit int) (Page[APIToken], error) {
	c, err := decodeCursor(pageToken, seqCursor)
	if err != nil {
		return Page[APIToken]{}, err
	}
	rows, err := q.pool.Query(ctx, `SELECT id, user_id, name, prefix, coalesce(project_id::text, ''), role, created_at, expires_at,
			revoked_at, last_used_at, last_used_ip, created_seq
		FROM api_tokens WHERE user_id = $1 AND created_seq > $2 AND (NOT $3 OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $5)))
		ORDER BY created_seq LIMIT $4`, userID, c.Seq, live, limit+1, now)
	if err != nil {
		return Page[APIToken]{}, err
	}
	return collectPage(rows, limit, func(r pgx.Rows) (APIToken, cursor, error) {
		var t APIToken
		var seq int64
		err := r.Scan(&t.ID, &t.UserID, &t.Name, &t.Prefix, &t.ProjectID, &t.Role, &t.CreatedAt, &t.ExpiresAt,
			&t.RevokedAt, &t.LastUsedAt, &t.LastUsedIP, &seq)
		return t, cursor{Seq: seq}, err
	})
}
