package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Project is a project as the API shows it.
type Project struct {
	ID          string
	Slug        string
	Name        string
	Description string
	Archived    bool
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Role        string // the asking user's project role, "" if not a member
}

const projectCols = "p.id, p.slug, p.name, p.description, p.archived, p.created_at, p.updated_at, COALESCE(m.role, '')"

func scanProject(row pgx.Row) (Project, error) {
	var p Project
	err := row.Scan(&p.ID, &p.Slug, &p.Name, &p.Description, &p.Archived, &p.CreatedAt, &p.UpdatedAt, &p.Role)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, ErrNotFound
	}
	return p, err
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F'):
			return false
		}
	}
	return true
}

// ListProjects pages the projects userID belongs to (all of them when all
// is set, for admins), ordered by slug; only, when set, is the one project
// id a scoped API token may see.
func (q *Queries) ListProjects(ctx context.Context, userID string, all, includeArchived bool, only, pageToken string, limit int) (Page[Project], error) {
	c, err := decodeCursor(pageToken, keyCursor)
	if err != nil {
		return Page[Project]{}, err
	}
	join := "JOIN"
	if all {
		join = "LEFT JOIN"
	}
	sql := `SELECT ` + projectCols + ` FROM projects p ` + join + ` project_members m ON m.project_id = p.id AND m.user_id = $1
		WHERE p.slug > $2 AND ($3 OR NOT p.archived) AND ($5 = '' OR p.id::text = $5) ORDER BY p.slug LIMIT $4`
	rows, err := q.pool.Query(ctx, sql, userID, c.Key, includeArchived, limit+1, only)
	if err != nil {
		return Page[Project]{}, err
	}
	defer rows.Close()
	page := Page[Project]{Items: []Project{}}
	for rows.Next() {
		p, err := scanProject(rows)
		if err != nil {
			return page, err
		}
		if len(page.Items) == limit {
			page.NextPageToken = encodeCursor(cursor{Key: page.Items[limit-1].Slug})
			break
		}
		page.Items = append(page.Items, p)
	}
	return page, rows.Err()
}

// ProjectByRef finds a project by slug or id, with userID's role in it.
func (q *Queries) ProjectByRef(ctx context.Context, ref, userID string) (Project, error) {
	col := "p.slug"
	if isUUID(ref) {
		col = "p.id"
	}
	if !isUUID(userID) {
		userID = "00000000-0000-0000-0000-000000000000"
	}
	return cachedRead(q, q.projects, ref+"\x00"+userID, func() (Project, error) {
		return scanProject(q.pool.QueryRow(ctx, `SELECT `+projectCols+` FROM projects p
			LEFT JOIN project_members m ON m.project_id = p.id AND m.user_id = $2 WHERE `+col+` = $1`, ref, userID))
	}, func(p Project) []string { return []string{"project:" + p.ID} })
}

// MemberRole is userID's role in a project, "" if not a member.
func (q *Queries) MemberRole(ctx context.Context, projectID, userID string) (string, error) {
	var role string
	err := q.pool.QueryRow(ctx, `SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2`, projectID, userID).Scan(&role)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return role, err
}

// Member is a project member.
type Member struct {
	UserID  string
	Email   string
	Name    string
	Role    string
	AddedAt time.Time
}

// ListMembers lists a project's members by e-mail.
func (q *Queries) ListMembers(ctx context.Context, projectID string) ([]Member, error) {
	rows, err := q.pool.Query(ctx, `SELECT m.user_id, COALESCE(u.email, ''), COALESCE(u.name, ''), m.role, m.added_at
		FROM project_members m LEFT JOIN users u ON u.id = m.user_id WHERE m.project_id = $1 ORDER BY u.email, m.user_id`, projectID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Member, error) {
		var m Member
		err := r.Scan(&m.UserID, &m.Email, &m.Name, &m.Role, &m.AddedAt)
		return m, err
	})
}

// Model is a registered model.
type Model struct {
	ID            string
	ProjectID     string
	Name          string
	Description   string
	Tags          map[string]string
	Deleted       bool
	LatestVersion int
	Aliases       map[string]int
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

const modelCols = `m.id, m.project_id, m.name, m.description, m.tags, m.deleted, m.latest_version,
	COALESCE((SELECT jsonb_object_agg(a.alias, a.version) FROM model_aliases a WHERE a.model_id = m.id), '{}'),
	m.created_at, m.updated_at, m.name_lower, m.updated_seq`

func scanModel(row pgx.Row) (Model, string, int64, error) {
	var m Model
	var nameLower string
	var seq int64
	err := row.Scan(&m.ID, &m.ProjectID, &m.Name, &m.Description, &m.Tags, &m.Deleted, &m.LatestVersion, &m.Aliases,
		&m.CreatedAt, &m.UpdatedAt, &nameLower, &seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, "", 0, ErrNotFound
	}
	return m, nameLower, seq, err
}

// ModelFilter narrows ListModels.
type ModelFilter struct {
	ProjectID      string
	NamePrefix     string // case-insensitive
	TagKey         string
	TagValue       string // with TagKey: exact value; alone: any value
	OrderBy        string // "name" (default) or "updated" (most recent first)
	IncludeDeleted bool
	PageToken      string
	Limit          int
}

func likePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(strings.ToLower(s)) + "%"
}

// ListModels pages a project's models.
func (q *Queries) ListModels(ctx context.Context, f ModelFilter) (Page[Model], error) {
	shape := keyIDCursor
	if f.OrderBy == "updated" {
		shape = seqIDCursor
	}
	c, err := decodeCursor(f.PageToken, shape)
	if err != nil {
		return Page[Model]{}, err
	}
	args := []any{f.ProjectID}
	where := []string{"m.project_id = $1"}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "?", fmt.Sprintf("$%d", len(args))))
	}
	if !f.IncludeDeleted {
		where = append(where, "NOT m.deleted")
	}
	if f.NamePrefix != "" {
		add(`m.name_lower LIKE ? ESCAPE '\'`, likePrefix(f.NamePrefix))
	}
	if f.TagKey != "" {
		if f.TagValue != "" {
			b, _ := json.Marshal(map[string]string{f.TagKey: f.TagValue})
			add("m.tags @> ?::jsonb", string(b))
		} else {
			args = append(args, f.TagKey)
			where = append(where, fmt.Sprintf("m.tags ? $%d", len(args))) // jsonb key exists
		}
	}
	order := "m.name_lower, m.id"
	if f.OrderBy == "updated" {
		order = "m.updated_seq DESC, m.id"
		if c.Seq > 0 {
			args = append(args, c.Seq, c.ID)
			where = append(where, fmt.Sprintf("(m.updated_seq < $%d OR (m.updated_seq = $%d AND m.id > $%d))", len(args)-1, len(args)-1, len(args)))
		}
	} else if c.Key != "" {
		args = append(args, c.Key, c.ID)
		where = append(where, fmt.Sprintf("(m.name_lower, m.id) > ($%d, $%d)", len(args)-1, len(args)))
	}
	args = append(args, f.Limit+1)
	sql := fmt.Sprintf("SELECT %s FROM models m WHERE %s ORDER BY %s LIMIT $%d", modelCols, strings.Join(where, " AND "), order, len(args))
	rows, err := q.pool.Query(ctx, sql, args...)
	if err != nil {
		return Page[Model]{}, err
	}
	defer rows.Close()
	page := Page[Model]{Items: []Model{}}
	var lastKey string
	var lastSeq int64
	for rows.Next() {
		m, key, seq, err := scanModel(rows)
		if err != nil {
			return page, err
		}
		if len(page.Items) == f.Limit {
			prev := page.Items[f.Limit-1]
			if f.OrderBy == "updated" {
				page.NextPageToken = encodeCursor(cursor{Seq: lastSeq, ID: prev.ID})
			} else {
				page.NextPageToken = encodeCursor(cursor{Key: lastKey, ID: prev.ID})
			}
			break
		}
		page.Items = append(page.Items, m)
		lastKey, lastSeq = key, seq
	}
	return page, rows.Err()
}

// Model returns one model by (case-insensitive) name, deleted ones too.
func (q *Queries) Model(ctx context.Context, projectID, name string) (Model, error) {
	lower := strings.ToLower(name)
	return cachedRead(q, q.models, projectID+"\x00"+lower, func() (Model, error) {
		m, _, _, err := scanModel(q.pool.QueryRow(ctx, "SELECT "+modelCols+" FROM models m WHERE m.project_id = $1 AND m.name_lower = $2",
			projectID, lower))
		return m, err
	}, func(m Model) []string { return []string{"model:" + m.ID} })
}

// ModelVersion is one version of a model.
type ModelVersion struct {
	ModelID     string
	Version     int
	Description string
	Tags        map[string]string
	Source      string
	RunID       string
	Metrics     map[string]float64
	Signature   json.RawMessage
	Stage       string
	Deleted     bool
	Aliases     []string
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

const versionCols = `v.model_id, v.version, v.description, v.tags, v.source, v.run_id, v.metrics, v.signature, v.stage, v.deleted,
	COALESCE((SELECT array_agg(a.alias ORDER BY a.alias) FROM model_aliases a WHERE a.model_id = v.model_id AND a.version = v.version), '{}'),
	v.created_at, v.updated_at`

func scanVersion(row pgx.Row) (ModelVersion, error) {
	var v ModelVersion
	var sig []byte
	err := row.Scan(&v.ModelID, &v.Version, &v.Description, &v.Tags, &v.Source, &v.RunID, &v.Metrics, &sig, &v.Stage, &v.Deleted,
		&v.Aliases, &v.CreatedAt, &v.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, ErrNotFound
	}
	if len(sig) > 0 {
		v.Signature = sig
	}
	return v, err
}

// ListVersions pages a model's versions in version order.
func (q *Queries) ListVersions(ctx context.Context, modelID, stage string, includeDeleted bool, pageToken string, limit int) (Page[ModelVersion], error) {
	c, err := decodeCursor(pageToken, versionCursor)
	if err != nil {
		return Page[ModelVersion]{}, err
	}
	rows, err := q.pool.Query(ctx, `SELECT `+versionCols+` FROM model_versions v
		WHERE v.model_id = $1 AND v.version > $2 AND ($3 = '' OR v.stage = $3) AND ($4 OR NOT v.deleted)
		ORDER BY v.version LIMIT $5`, modelID, c.Seq, stage, includeDeleted, limit+1)
	if err != nil {
		return Page[ModelVersion]{}, err
	}
	return collectPage(rows, limit, func(r pgx.Rows) (ModelVersion, cursor, error) {
		v, err := scanVersion(r)
		return v, cursor{Seq: int64(v.Version)}, err
	})
}

// Version returns one version (deleted ones too).
func (q *Queries) Version(ctx context.Context, modelID string, version int) (ModelVersion, error) {
	return scanVersion(q.pool.QueryRow(ctx, `SELECT `+versionCols+` FROM model_versions v WHERE v.model_id = $1 AND v.version = $2`, modelID, version))
}

// AliasVersion is the version an alias points at.
func (q *Queries) AliasVersion(ctx context.Context, modelID, alias string) (int, error) {
	var v int
	err := q.pool.QueryRow(ctx, `SELECT version FROM model_aliases WHERE model_id = $1 AND alias = $2`, modelID, alias).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	return v, err
}

// ArtifactEntry is one recorded artifact of a version or a run, or (IsDir,
// in a directory listing) a directory of them: then Path alone says which.
type ArtifactEntry struct {
	Path        string
	IsDir       bool
	Digest      string
	Size        int64
	ContentType string
	RecordedAt  time.Time
}

// ListArtifacts pages a version's artifacts in path order (bytewise: the
// column is COLLATE "C", so the primary key serves both order and cursor).
func (q *Queries) ListArtifacts(ctx context.Context, modelID string, version int, pageToken string, limit int) (Page[ArtifactEntry], error) {
	return q.artifactPage(ctx, pageToken, limit, `SELECT path, path, false, digest, size, content_type, recorded_at FROM model_artifacts
		WHERE model_id = $3 AND version = $4 AND path > $1 ORDER BY path LIMIT $2`, modelID, version)
}

// Artifact returns one artifact of a version.
func (q *Queries) Artifact(ctx context.Context, modelID string, version int, path string) (ArtifactEntry, error) {
	return scanArtifact(q.pool.QueryRow(ctx, `SELECT path, digest, size, content_type, recorded_at FROM model_artifacts
		WHERE model_id = $1 AND version = $2 AND path = $3`, modelID, version, path))
}

// ErrBehind means a projection has not reached the sequence asked for.
var ErrBehind = errors.New("projection has not caught up")

// ArtifactProjections are the projections that record artifacts (model
// versions', runs'): what GC must wait for before it judges a blob unused.
func ArtifactProjections() []string { return []string{Models{}.Name(), Runs{}.Name()} }

// ReferencedDigests returns every digest a recorded artifact points at (of
// any version or run, deleted or not: deletions are reversible), read in
// one snapshot that also proves the artifact projections had applied
// minSeq. A rebuild truncating the tables mid-way cannot make a live blob
// look unused.
func (q *Queries) ReferencedDigests(ctx context.Context, minSeq uint64) (map[string]bool, error) {
	tx, err := q.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	for _, name := range ArtifactProjections() {
		var cp int64
		if err := tx.QueryRow(ctx, `SELECT last_seq FROM projection_checkpoints WHERE name = $1`, name).Scan(&cp); err != nil {
			return nil, fmt.Errorf("%s checkpoint: %w", name, err)
		}
		if uint64(cp) < minSeq {
			return nil, fmt.Errorf("%s projection at %d, need %d: %w", name, cp, minSeq, ErrBehind)
		}
	}
	rows, err := tx.Query(ctx, `SELECT digest FROM model_artifacts UNION SELECT digest FROM run_artifacts`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out[d] = true
	}
	return out, rows.Err()
}
