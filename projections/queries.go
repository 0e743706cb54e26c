package projections

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Queries are the read side the API uses; they read Postgres only.
type Queries struct {
	pool *pgxpool.Pool
	// live, when set, says the Waiter feeding the caches listens; the
	// caches are bypassed otherwise (nil: no caching).
	live     func() bool
	sessions *readCache[SessionPrincipal]
	users    *readCache[User]
	projects *readCache[Project]
	models   *readCache[Model]
	tokens   *readCache[TokenPrincipal]
}

// NewQueries returns queries over pool.
func NewQueries(pool *pgxpool.Pool) *Queries { return &Queries{pool: pool} }

// CacheWith makes Session and User answer from memory while w listens for
// the projections' notifications, which drop a cached row in the
// transaction that changes it (InvalidateChannel). A revoked session is then
// refused by this process as soon as the revoking request's wait has seen
// the sessions checkpoint, as without the cache; another API instance
// refuses it as soon as the notification reaches it (milliseconds).
func (q *Queries) CacheWith(w *Waiter) *Queries {
	q.sessions, q.users = newReadCache[SessionPrincipal](), newReadCache[User]()
	q.projects, q.models = newReadCache[Project](), newReadCache[Model]()
	q.tokens = newReadCache[TokenPrincipal]()
	q.live = w.Live
	w.onInvalidate(func(tag string) {
		q.sessions.invalidate(tag)
		q.users.invalidate(tag)
		q.projects.invalidate(tag)
		q.models.invalidate(tag)
		q.tokens.invalidate(tag)
	}, func() {
		q.sessions.reset()
		q.users.reset()
		q.projects.reset()
		q.models.reset()
		q.tokens.reset()
	})
	return q
}

// cachedRead answers key from c while the waiter listens, and otherwise
// (or on a miss) runs read, caching a found row under tags(row).
func cachedRead[V any](q *Queries, c *readCache[V], key string, read func() (V, error), tags func(V) []string) (V, error) {
	if !q.caching() {
		return read()
	}
	v, ok, gen := c.get(key)
	if ok {
		return v, nil
	}
	v, err := read()
	if err == nil {
		c.put(key, v, gen, tags(v)...)
	}
	return v, err
}

func (q *Queries) caching() bool { return q.live != nil && q.live() }

// ErrNotFound is returned when a row does not exist.
var ErrNotFound = errors.New("not found")

// ErrBadPageToken is returned for a page token this server did not issue.
var ErrBadPageToken = errors.New("invalid page_token")

// SessionPrincipal is what the authenticator needs about a token's session.
type SessionPrincipal struct {
	UserID  string
	Email   string
	Role    string
	Active  bool
	Revoked bool
}

// Session looks up a session and its user.
func (q *Queries) Session(ctx context.Context, sessionID string) (SessionPrincipal, error) {
	return cachedRead(q, q.sessions, sessionID, func() (SessionPrincipal, error) {
		var p SessionPrincipal
		err := q.pool.QueryRow(ctx, `SELECT u.id, coalesce(u.email, ''), u.role, u.active, s.revoked_at IS NOT NULL
			FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1`, sessionID).
			Scan(&p.UserID, &p.Email, &p.Role, &p.Active, &p.Revoked)
		if errors.Is(err, pgx.ErrNoRows) {
			return p, ErrNotFound
		}
		return p, err
	}, func(p SessionPrincipal) []string {
		return []string{"session:" + strings.ToLower(sessionID), "user:" + p.UserID}
	})
}

// User is an account as the API shows it.
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Active    bool      `json:"active"`
	Kind      string    `json:"kind"` // "user" or "service_account"
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// userCols reads a service account's missing e-mail as "".
const userCols = "id, coalesce(email, ''), name, role, active, kind, created_at, updated_at"

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Email, &u.Name, &u.Role, &u.Active, &u.Kind, &u.CreatedAt, &u.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return u, ErrNotFound
	}
	return u, err
}

// User returns one user.
func (q *Queries) User(ctx context.Context, id string) (User, error) {
	return cachedRead(q, q.users, strings.ToLower(id), func() (User, error) {
		return scanUser(q.pool.QueryRow(ctx, "SELECT "+userCols+" FROM users WHERE id = $1", id))
	}, func(u User) []string { return []string{"user:" + u.ID} })
}

// UserByEmail returns the user with a (normalised) e-mail address: the web
// UI adds project members by address.
func (q *Queries) UserByEmail(ctx context.Context, email string) (User, error) {
	return scanUser(q.pool.QueryRow(ctx, "SELECT "+userCols+" FROM users WHERE email = $1", email))
}

// Page is a list of items and the token of the next page ("" at the end).
type Page[T any] struct {
	Items         []T    `json:"items"`
	NextPageToken string `json:"next_page_token,omitempty"`
}

// cursor is the position after the last item of a page. Tokens are opaque
// to clients; they are only base64 so nobody mistakes them for an API.
type cursor struct {
	Seq int64  `json:"s,omitempty"`
	Key string `json:"k,omitempty"` // sort key for name-ordered lists
	ID  string `json:"i,omitempty"` // tie-breaker
}

func encodeCursor(c cursor) string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// cursorShape is what one list's tokens carry: the fields it fills when it
// issues a token, which are then all required, and nothing else. Checking
// the shape per list makes a forged token a 400, never a query error: a
// version number beyond int4, a tie-breaker id missing, a key where a
// sequence belongs.
type cursorShape struct {
	seq, key, id bool
	maxSeq       int64 // bound of Seq (0 = int64)
}

// Cursor shapes of the lists.
var (
	seqCursor     = cursorShape{seq: true}                        // users, audit: a stream sequence
	versionCursor = cursorShape{seq: true, maxSeq: math.MaxInt32} // versions: an int4 version number
	keyCursor     = cursorShape{key: true}                        // projects by slug, artifacts by path
	keyIDCursor   = cursorShape{key: true, id: true}              // models by name
	seqIDCursor   = cursorShape{seq: true, id: true}              // models by last update
)

func decodeCursor(token string, shape cursorShape) (cursor, error) {
	var c cursor
	if token == "" {
		return c, nil
	}
	if len(token) > 1024 {
		return c, ErrBadPageToken
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || json.Unmarshal(b, &c) != nil || c.Seq < 0 || !plainKey(c.Key) || (c.ID != "" && !isUUID(c.ID)) {
		return cursor{}, ErrBadPageToken
	}
	if (c.Seq > 0) != shape.seq || (c.Key != "") != shape.key || (c.ID != "") != shape.id ||
		(shape.maxSeq > 0 && c.Seq > shape.maxSeq) {
		return cursor{}, ErrBadPageToken
	}
	return c, nil
}

// ListUsers pages users in registration order.
func (q *Queries) ListUsers(ctx context.Context, pageToken string, limit int) (Page[User], error) {
	c, err := decodeCursor(pageToken, seqCursor)
	if err != nil {
		return Page[User]{}, err
	}
	rows, err := q.pool.Query(ctx, "SELECT "+userCols+", created_seq FROM users WHERE created_seq > $1 ORDER BY created_seq LIMIT $2",
		c.Seq, limit+1)
	if err != nil {
		return Page[User]{}, err
	}
	return collectPage(rows, limit, func(r pgx.Rows) (User, cursor, error) {
		var u User
		var seq int64
		err := r.Scan(&u.ID, &u.Email, &u.Name, &u.Role, &u.Active, &u.Kind, &u.CreatedAt, &u.UpdatedAt, &seq)
		return u, cursor{Seq: seq}, err
	})
}

// collectPage reads the rows of a list query that asked for limit+1: the
// first limit items, and, when the extra row is there, the token of the
// page after the last item kept (its cursor as scan gives it).
func collectPage[T any](rows pgx.Rows, limit int, scan func(pgx.Rows) (T, cursor, error)) (Page[T], error) {
	defer rows.Close()
	page := Page[T]{Items: []T{}}
	var last cursor
	for rows.Next() {
		item, at, err := scan(rows)
		if err != nil {
			return page, err
		}
		if len(page.Items) == limit {
			page.NextPageToken = encodeCursor(last)
			break
		}
		page.Items = append(page.Items, item)
		last = at
	}
	return page, rows.Err()
}

// AuditEntry is one event as the audit trail shows it.
type AuditEntry struct {
	Sequence      uint64          `json:"sequence"`
	EventID       string          `json:"event_id"`
	Time          time.Time       `json:"time"`
	Type          string          `json:"type"`
	Actor         string          `json:"actor"`
	Subject       string          `json:"subject"`
	CorrelationID string          `json:"correlation_id"`
	CausationID   string          `json:"causation_id,omitempty"`
	Summary       string          `json:"summary"`
	Data          json.RawMessage `json:"data"`
	// ProjectID is the project the event concerns ("" for none).
	ProjectID string `json:"project_id,omitempty"`
	// Hash is the entry's link in the hash chain (hex SHA-256).
	Hash string `json:"hash"`
}

// AuditFilter narrows the audit trail; zero fields match everything.
type AuditFilter struct {
	Actor, Type, Subject string
	Since, Until         time.Time
	PageToken            string
	Limit                int

	// Project is a project id; CorrelationID an event's correlation id.
	Project, CorrelationID string
}

// ListAudit pages audit entries newest first.
func (q *Queries) ListAudit(ctx context.Context, f AuditFilter) (Page[AuditEntry], error) {
	c, err := decodeCursor(f.PageToken, seqCursor)
	if err != nil {
		return Page[AuditEntry]{}, err
	}
	var where []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if c.Seq > 0 {
		add("seq < ?", c.Seq)
	}
	if f.Actor != "" {
		add("actor = ?", f.Actor)
	}
	if f.Type != "" {
		add("type = ?", f.Type)
	}
	if f.Subject != "" {
		add("subject = ?", f.Subject)
	}
	if f.Project != "" {
		add("project_id = ?", f.Project)
	}
	if f.CorrelationID != "" {
		add("correlation_id = ?", f.CorrelationID)
	}
	if !f.Since.IsZero() {
		add("time >= ?", f.Since)
	}
	if !f.Until.IsZero() {
		add("time < ?", f.Until)
	}
	sql := "SELECT seq, event_id, time, type, actor, subject, correlation_id, causation_id, summary, data, project_id, hash FROM audit_entries"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	args = append(args, f.Limit+1)
	sql += fmt.Sprintf(" ORDER BY seq DESC LIMIT $%d", len(args))
	rows, err := q.pool.Query(ctx, sql, args...)
	if err != nil {
		return Page[AuditEntry]{}, err
	}
	return collectPage(rows, f.Limit, func(r pgx.Rows) (AuditEntry, cursor, error) {
		var e AuditEntry
		var seq int64
		var hash []byte
		err := r.Scan(&seq, &e.EventID, &e.Time, &e.Type, &e.Actor, &e.Subject, &e.CorrelationID, &e.CausationID, &e.Summary, &e.Data, &e.ProjectID, &hash)
		e.Hash = hex.EncodeToString(hash)
		e.Sequence = uint64(seq)
		return e, cursor{Seq: seq}, err
	})
}

// plainKey refuses cursor keys Postgres would reject (NUL, invalid UTF-8),
// so a forged page token is a 400, not a 500.
func plainKey(k string) bool {
	return utf8.ValidString(k) && !strings.ContainsRune(k, 0)
}
