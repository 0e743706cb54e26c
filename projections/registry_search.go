package projections

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/filter"
)

// Registry search: MLflow's search_registered_models and
// search_model_versions over the models and model_versions read models,
// with run search's machinery (run_search.go): package filter parses, every
// value is a bound argument, and pages are keyset pages whose token carries
// the last row's sort values. Deleted models and versions are never found
// (MLflow deletes them for good). Ties fall to name ASC (models) and name
// ASC, version DESC (versions), MLflow's order; a name is unique in a
// project, so the order is total.

// RegistrySearch is a search of a project's registered models or model
// versions.
type RegistrySearch struct {
	// Filter is in MLflow's filter language (filter.RegisteredModels or
	// filter.ModelVersions).
	Filter string
	// OrderBy entries are "<identifier> [ASC|DESC]" (filter.ParseOrderBy).
	OrderBy []string
	// MaxResults is the page size, 1 to MaxSearchResults (0: the maximum).
	MaxResults int
	// PageToken is the NextPageToken of the previous page of the same
	// search; a token of another search is ErrBadPageToken.
	PageToken string
}

// FoundVersion is a model version a search found, with its model's name.
type FoundVersion struct {
	Name string
	ModelVersion
}

// searchEntity is what differs between searches of one entity with
// attributes and tags (both registry searches; experiment search has the
// same shape): where its rows are, how its filter and order keys read in
// SQL, and its tie-breaking order.
type searchEntity struct {
	kind   *filter.Kind
	from   string            // FROM clause; the project's id is $1
	where  string            // conditions every row meets
	cols   string            // the row's columns, before the sort values
	tags   string            // the jsonb column of tags.<key>
	attrs  map[string]string // filterable attribute → SQL
	levels map[string]func(desc bool) sortLevel
	// defaults is the order when a search names none.
	defaults []filter.OrderKey
	ties     []filter.OrderKey // appended unless ordered already
	// hash is what else binds a page token to its search (a view).
	hash []string
}

// msLevel orders by a timestamptz column in ms, as MLflow's timestamps.
func msLevel(col string) func(bool) sortLevel {
	return func(desc bool) sortLevel { return sortLevel{value: msSQL(col), desc: desc, kind: intValue} }
}

// nameLevel orders by model name bytewise, as MLflow's SQL stores do.
func nameLevel(desc bool) sortLevel {
	return sortLevel{value: `m.name COLLATE "C"`, desc: desc, kind: textValue}
}

var registeredModels = searchEntity{
	kind:  filter.RegisteredModels,
	from:  "models m",
	where: "m.project_id = $1 AND NOT m.deleted",
	cols:  modelCols,
	tags:  "m.tags",
	attrs: map[string]string{"name": "m.name"},
	levels: map[string]func(bool) sortLevel{"name": nameLevel,
		"creation_timestamp": msLevel("m.created_at"), "last_updated_timestamp": msLevel("m.updated_at")},
	ties: []filter.OrderKey{{Type: filter.Attribute, Key: "name"}},
}

var modelVersions = searchEntity{
	kind:  filter.ModelVersions,
	from:  "model_versions v JOIN models m ON m.id = v.model_id",
	where: "m.project_id = $1 AND NOT m.deleted AND NOT v.deleted",
	cols:  versionCols + ", m.name",
	tags:  "v.tags",
	attrs: map[string]string{"name": "m.name", "run_id": "v.run_id", "source_path": "v.source", "version_number": "v.version"},
	levels: map[string]func(bool) sortLevel{"name": nameLevel,
		"version_number":     func(desc bool) sortLevel { return sortLevel{value: "v.version::bigint", desc: desc, kind: intValue} },
		"creation_timestamp": msLevel("v.created_at"), "last_updated_timestamp": msLevel("v.updated_at")},
	ties: []filter.OrderKey{{Type: filter.Attribute, Key: "name"}, {Type: filter.Attribute, Key: "version_number", Desc: true}},
}

// SearchModels pages the project's live registered models that match s's
// filter (name, tags) in s's order. Errors as SearchRuns'.
func (q *Queries) SearchModels(ctx context.Context, projectID string, s RegistrySearch) (Page[Model], error) {
	return entitySearch(ctx, q, projectID, s, registeredModels, func(row pgx.Row, sort []any) (Model, error) {
		m, _, _, err := scanModel(extraRow{row, sort})
		return m, err
	})
}

// SearchVersions pages the live versions of the project's live models
// that match s's filter (name, run_id, source_path, version_number, tags)
// in s's order. Errors as SearchRuns'.
func (q *Queries) SearchVersions(ctx context.Context, projectID string, s RegistrySearch) (Page[FoundVersion], error) {
	return entitySearch(ctx, q, projectID, s, modelVersions, func(row pgx.Row, sort []any) (FoundVersion, error) {
		var f FoundVersion
		var err error
		f.ModelVersion, err = scanVersion(extraRow{row, append([]any{&f.Name}, sort...)})
		return f, err
	})
}

// extraRow scans a row's further columns (a search's sort values) after
// those a scan function of the read model knows.
type extraRow struct {
	pgx.Row
	extra []any
}

func (r extraRow) Scan(dest ...any) error { return r.Row.Scan(append(dest, r.extra...)...) }

// entitySearch pages ent's rows of the project that match s's filter, in
// s's order then ent's ties, scanning each with scan (which gets the sort
// value destinations to scan after the row's own columns).
func entitySearch[T any](ctx context.Context, q *Queries, projectID string, s RegistrySearch, ent searchEntity,
	scan func(row pgx.Row, sort []any) (T, error)) (Page[T], error) {
	limit, err := searchLimit(s.MaxResults)
	expr, ferr := filter.Parse(ent.kind, s.Filter)
	order, oerr := filter.ParseOrderBy(ent.kind, s.OrderBy)
	if err = cmp.Or(err, ferr, oerr); err != nil || !isUUID(projectID) {
		return Page[T]{}, cmp.Or(err, ErrNotFound)
	}
	orderText := make([]string, len(order))
	for i, o := range order {
		orderText[i] = o.String()
	}
	if len(order) == 0 {
		order = slices.Clone(ent.defaults)
	}
	for _, t := range ent.ties {
		if !slices.ContainsFunc(order, func(o filter.OrderKey) bool { return o.Key == t.Key }) {
			order = append(order, t)
		}
	}
	levels := make([]sortLevel, len(order))
	for i, o := range order {
		levels[i] = ent.levels[o.Key](o.Desc)
	}
	hash := searchHash(append([]string{ent.kind.Name(), projectID, expr.String(), strings.Join(orderText, "\x00")}, ent.hash...)...)
	var after []sortValue
	if s.PageToken != "" {
		if _, after, err = decodeSearchToken(s.PageToken, hash, func(seg int) []sortLevel {
			if seg != 0 {
				return nil // one segment only
			}
			return levels
		}); err != nil {
			return Page[T]{}, err
		}
	}
	args := sqlArgs{projectID}
	where := []string{ent.where}
	for _, c := range expr.Clauses {
		where = append(where, ent.clauseSQL(c, &args))
	}
	if after != nil {
		where = append(where, afterSQL(levels, after, &args))
	}
	rows, err := q.pool.Query(ctx, "SELECT "+ent.cols+", "+selectSQL(levels)+" FROM "+ent.from+" WHERE "+strings.Join(where, " AND ")+
		" ORDER BY "+orderSQL(levels)+" LIMIT "+args.add(limit+1), args...)
	if err != nil {
		return Page[T]{}, err
	}
	defer rows.Close()
	page := Page[T]{Items: []T{}}
	var last []sortValue
	for rows.Next() {
		sv := newSortScan(levels)
		item, err := scan(rows, sv.dest)
		if err != nil {
			return page, err
		}
		if len(page.Items) == limit {
			page.NextPageToken = encodeSearchToken(hash, 0, levels, last)
			break
		}
		page.Items = append(page.Items, item)
		last = sv.values()
	}
	return page, rows.Err()
}

// sortScan receives a row's sort values (selectSQL's rank and value
// columns) and gives them back as sortValues for a page token: each
// value scans into its level's kind (float64, int64, or string for text
// and uuid), nil where NULL, and counts only where the level has a value
// and the row's rank is 0 (present).
type sortScan struct {
	levels []sortLevel
	dest   []any
	ranks  []int32
	vals   []any // **float64, **int64 or **string
}

func newSortScan(levels []sortLevel) *sortScan {
	s := &sortScan{levels: levels, ranks: make([]int32, len(levels)), vals: make([]any, len(levels))}
	for i, l := range levels {
		switch l.kind {
		case floatValue:
			s.vals[i] = new(*float64)
		case intValue:
			s.vals[i] = new(*int64)
		default:
			s.vals[i] = new(*string)
		}
		s.dest = append(s.dest, &s.ranks[i], s.vals[i])
	}
	return s
}

func (s *sortScan) values() []sortValue {
	out := make([]sortValue, len(s.ranks))
	for i, l := range s.levels {
		out[i].rank = int(s.ranks[i])
		if l.value == "" || out[i].rank != 0 {
			continue
		}
		switch v := s.vals[i].(type) {
		case **float64:
			if *v != nil {
				out[i].v = **v
			}
		case **int64:
			if *v != nil {
				out[i].v = **v
			}
		case **string:
			if *v != nil {
				out[i].v = **v
			}
		}
	}
	return out
}

// clauseSQL is the condition of one comparison: an attribute's column or
// a tag's value (a row without the tag never matches), compared with the
// bound value. Run ids are stored canonical (hyphenated, lower case), so
// one sent in MLflow's 32-digit form compares as its canonical form.
func (ent searchEntity) clauseSQL(c filter.Comparison, args *sqlArgs) string {
	col := ent.attrs[c.Key]
	if c.Type == filter.Tag {
		col = "(" + ent.tags + " ->> " + args.add(c.Key) + ")"
	}
	runID := c.Type == filter.Attribute && c.Key == "run_id" && c.Op != filter.Like && c.Op != filter.ILike
	text := func(s string) string {
		if u, err := uuid.Parse(s); runID && err == nil && (len(s) == 32 || len(s) == 36) {
			return u.String()
		}
		return s
	}
	switch {
	case c.Op == filter.In || c.Op == filter.NotIn:
		list := make([]string, len(c.Value.List))
		for i, s := range c.Value.List {
			list[i] = text(s)
		}
		cond := col + " = ANY(" + args.add(list) + "::text[])"
		if c.Op == filter.NotIn {
			cond = "NOT " + cond
		}
		return cond
	case c.Value.Kind != filter.Number:
		return col + " " + sqlOps[c.Op] + " " + args.add(text(c.Value.Text))
	}
	if n, ok := c.Value.Int(); ok {
		return col + " " + sqlOps[c.Op] + " " + args.add(n) + "::bigint"
	}
	return col + "::float8 " + sqlOps[c.Op] + " " + args.add(c.Value.Num)
}

// LatestVersions returns, for each model, its highest live version in
// each stage (MLflow's latest_versions), in version order.
func (q *Queries) LatestVersions(ctx context.Context, modelIDs []string) (map[string][]ModelVersion, error) {
	out := make(map[string][]ModelVersion, len(modelIDs))
	if len(modelIDs) == 0 {
		return out, nil
	}
	rows, err := q.pool.Query(ctx, `SELECT `+versionCols+` FROM (SELECT DISTINCT ON (model_id, stage) * FROM model_versions
		WHERE model_id = ANY($1::uuid[]) AND NOT deleted ORDER BY model_id, stage, version DESC) v ORDER BY v.version`, modelIDs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, err
		}
		out[v.ModelID] = append(out[v.ModelID], v)
	}
	return out, rows.Err()
}
