package projections

import (
	"fmt"
	"math"
	"time"

	"github.com/maestro-ml/maestro/events"
)

// Users is the read model of accounts (no credentials).
type Users struct{}

// Name implements Projection.
func (Users) Name() string { return "users" }

// Tables implements Projection.
func (Users) Tables() []string { return []string{"users"} }

// Aggregates implements Projection.
func (Users) Aggregates() []string { return []string{events.AggUser} }

// Handles implements Projection.
func (Users) Handles(t string) bool {
	switch t {
	case events.UserRegistered, events.UserRoleChanged, events.UserDeactivated, events.UserReactivated:
		return true
	}
	return false
}

// Queue implements Projection. Consecutive registrations (a rebuild's
// batches are mostly those) are one INSERT from arrays (unnest); the other
// events are a statement each, in stream order.
func (Users) Queue(b *Batch, evs []events.Envelope) error {
	var regs userRows
	for _, e := range evs {
		if e.Type != events.UserRegistered {
			regs.queue(b)
		}
		switch e.Type {
		case events.UserRegistered:
			var d events.UserRegisteredData
			if err := e.Decode(&d); err != nil {
				return err
			}
			kind := "user"
			if d.Kind == events.KindServiceAccount {
				kind = d.Kind
			}
			regs.add(d, kind, e)
			b.Invalidate("user", d.UserID)
		case events.UserRoleChanged:
			var d events.UserRoleChangedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE users SET role = $2, updated_at = $3, updated_seq = $4 WHERE id = $1`, d.UserID, d.To, e.Time, int64(e.Sequence))
			b.Invalidate("user", d.UserID)
		case events.UserDeactivated, events.UserReactivated:
			var d events.UserActivationData
			if err := e.Decode(&d); err != nil {
				return err
			}
			b.Queue(`UPDATE users SET active = $2, updated_at = $3, updated_seq = $4,
				deactivated_at = CASE WHEN $2 THEN deactivated_at ELSE $3 END WHERE id = $1`,
				d.UserID, e.Type == events.UserReactivated, e.Time, int64(e.Sequence))
			b.Invalidate("user", d.UserID)
		}
	}
	regs.queue(b)
	return nil
}

// userRows gathers consecutive registrations for one INSERT.
type userRows struct {
	id, email, name, role, kind []string
	at                          []time.Time
	seq                         []int64
}

func (u *userRows) add(d events.UserRegisteredData, kind string, e events.Envelope) {
	u.id, u.email, u.name, u.role, u.kind = append(u.id, d.UserID), append(u.email, d.Email), append(u.name, d.Name), append(u.role, d.Role), append(u.kind, kind)
	u.at, u.seq = append(u.at, e.Time), append(u.seq, int64(e.Sequence))
}

// queue queues the gathered rows, if any, and starts afresh.
func (u *userRows) queue(b *Batch) {
	if len(u.id) == 0 {
		return
	}
	b.Queue(`INSERT INTO users (id, email, name, role, active, kind, created_at, updated_at, created_seq, updated_seq)
		SELECT id, NULLIF(em, ''), nm, ro, true, k, t, t, s, s
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::bigint[]) AS x(id, em, nm, ro, k, t, s)`,
		u.id, u.email, u.name, u.role, u.kind, u.at, u.seq)
	*u = userRows{}
}

// Sessions is the read model the authenticator checks on every request.
type Sessions struct{}

// Name implements Projection.
func (Sessions) Name() string { return "sessions" }

// Tables implements Projection.
func (Sessions) Tables() []string { return []string{"sessions"} }

// Aggregates implements Projection.
func (Sessions) Aggregates() []string { return []string{events.AggSession, events.AggUser} }

// Handles implements Projection.
func (Sessions) Handles(t string) bool {
	switch t {
	case events.SessionStarted, events.SessionRefreshed, events.SessionRevoked, events.UserDeactivated:
		return true
	}
	return false
}

// Queue implements Projection. Logins and refreshes (most of a rebuild)
// are gathered into one INSERT and one UPDATE from arrays (unnest) until an
// event that does not commute with them comes (a revocation, a
// deactivation, or a login of a session a gathered refresh names): the
// inserts go first — other sessions' refreshes do not touch their rows — and
// of several refreshes of one session the last is kept, as applying them in
// turn would leave it. Every other event is a statement of its own, in
// stream order.
func (Sessions) Queue(b *Batch, evs []events.Envelope) error {
	var g sessionRows
	for _, e := range evs {
		switch e.Type {
		case events.SessionStarted:
			var d events.SessionStartedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			if _, ok := g.refreshed[d.SessionID]; ok {
				g.queue(b)
			}
			g.id, g.user, g.at = append(g.id, d.SessionID), append(g.user, d.UserID), append(g.at, e.Time)
			g.ip, g.agent = append(g.ip, d.ClientIP), append(g.agent, d.UserAgent)
		case events.SessionRefreshed:
			var d events.SessionRefreshedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			if d.Generation < math.MinInt32 || d.Generation > math.MaxInt32 {
				// Checked here, not left to the column: only the last
				// refresh of a session in a batch is sent, so whether an
				// earlier one failed would depend on batch boundaries.
				return fmt.Errorf("%w: session generation %d is beyond the column's range", ErrUndecodable, d.Generation)
			}
			if g.refreshed == nil {
				g.refreshed = map[string]refresh{}
			}
			if _, ok := g.refreshed[d.SessionID]; !ok {
				g.order = append(g.order, d.SessionID)
			}
			g.refreshed[d.SessionID] = refresh{d.Generation, e.Time}
		case events.SessionRevoked:
			var d events.SessionRevokedData
			if err := e.Decode(&d); err != nil {
				return err
			}
			g.queue(b)
			b.Queue(`UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL`, d.SessionID, e.Time, d.Reason)
			b.Invalidate("session", d.SessionID)
		case events.UserDeactivated:
			// Deactivation ends every session of the user at once.
			var d events.UserActivationData
			if err := e.Decode(&d); err != nil {
				return err
			}
			g.queue(b)
			b.Queue(`UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL`,
				d.UserID, e.Time, events.RevokedUserDisabled)
			b.Invalidate("user", d.UserID)
		}
	}
	g.queue(b)
	return nil
}

// sessionRows gathers logins (rows to insert, in order) and refreshes (the
// last one of each session) for Sessions.Queue.
type sessionRows struct {
	id, user, ip, agent []string
	at                  []time.Time
	refreshed           map[string]refresh
	order               []string // refreshed sessions, first refresh first
}

type refresh struct {
	generation int
	at         time.Time
}

// queue queues what was gathered, if anything, and starts afresh.
func (g *sessionRows) queue(b *Batch) {
	if len(g.id) > 0 {
		b.Queue(`INSERT INTO sessions (id, user_id, generation, started_at, last_refreshed_at, client_ip, user_agent)
			SELECT id, u, 1, t, t, ip, ua FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[]) AS x(id, u, t, ip, ua)`,
			g.id, g.user, g.at, g.ip, g.agent)
	}
	if len(g.order) > 0 {
		gens, ats := make([]int, len(g.order)), make([]time.Time, len(g.order))
		for i, id := range g.order {
			gens[i], ats[i] = g.refreshed[id].generation, g.refreshed[id].at
		}
		b.Queue(`UPDATE sessions SET generation = x.g, last_refreshed_at = x.t
			FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS x(id, g, t) WHERE sessions.id = x.id`,
			g.order, gens, ats)
	}
	*g = sessionRows{}
}
