package projections

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/maestro-ml/maestro/filter"
)

// Run search: MLflow's search_runs over the runs, run_params, run_tags and
// latest_metrics read models. The filter and order_by are parsed by package
// filter and translated here into SQL whose every value is a bound
// argument ($n); nothing a client sends is concatenated into the text.
//
// Paging is keyset, not offset: a page token carries the sort values of
// the page's last run and the next page starts strictly after them, so a
// client that pages through 100,000 runs (the MLflow client fetches every
// page of search_runs) does linear work in all, where OFFSET would make
// page k re-read the k-1 pages before it, and a run logged between two
// pages neither repeats nor hides another. The price is a token that holds
// the sort values (longer when ordering by a long param or tag).
//
// Ordering follows MLflow: missing values last in both directions; for a
// metric, NaN after the numbers and before the missing; ties by start_time
// DESC then run id ASC, unless start_time is ordered explicitly (then run
// id alone). A metric, param or tag as the first order key splits the
// search into segments — runs with a (numeric) value, runs whose value is
// NaN, runs without the key — each queried in turn only while the page is
// not full. Within the first segment the rows come from the index on
// (key, value) of latest_metrics in value order, so "metrics.auc > 0.9
// ORDER BY metrics.auc DESC" reads the page's rows and stops, and the
// segment of runs without the key (a scan of the experiment) is only
// reached on the last pages.

// Bounds of a search.
const (
	// MaxSearchExperiments bounds RunSearch.ExperimentIDs.
	MaxSearchExperiments = 100
	// MaxSearchResults bounds a page of a search (MLflow allows 50,000
	// runs per page; a page is held in memory, with every run's params,
	// tags and latest metrics, so Maestro stops at 1,000). It is also the
	// page size when none is given, MLflow's default.
	MaxSearchResults = 1000
	// maxSearchToken bounds a page token: it holds the sort values of up to
	// filter.MaxOrderBy keys, each up to a tag's 8,000 bytes, which JSON may
	// escape six-fold and base64 grows by a third. Any token SearchRuns
	// issues decodes.
	maxSearchToken = 1 << 20
)

// ErrInvalidSearch is a search whose bounds are exceeded (too many
// experiments, a page too large); the error wrapping it says which.
var ErrInvalidSearch = errors.New("invalid search")

// RunSearch is a search of a project's runs.
type RunSearch struct {
	// ExperimentIDs are experiments of the project (at most
	// MaxSearchExperiments); empty searches every experiment of it.
	ExperimentIDs []string
	// Filter is in MLflow's filter language (filter.Runs).
	Filter string
	// OrderBy entries are "<identifier> [ASC|DESC]" (filter.ParseOrderBy).
	OrderBy []string
	// View selects active (the default), deleted or all runs.
	View View
	// MaxResults is the page size, 1 to MaxSearchResults (0: the maximum).
	MaxResults int
	// PageToken is the NextPageToken of the previous page of the same
	// search; a token of another search is ErrBadPageToken.
	PageToken string
}

// SearchRuns pages the runs of a project's experiments that match s's
// filter, in s's order, with their params, tags and latest metrics. A
// malformed filter or order_by is a *filter.Error (also for what runs do
// not store yet: artifact_uri, datasets); an experiment id that is not one
// of the project's is ErrNotFound; a token of another search
// ErrBadPageToken; exceeded bounds ErrInvalidSearch.
func (q *Queries) SearchRuns(ctx context.Context, projectID string, s RunSearch) (Page[Run], error) {
	return q.searchRuns(ctx, projectID, s, probesWeighed)
}

// probeMode says how a search uses its probes: SearchRuns weighs them
// (probesWeighed); the tests also search without (probesOff: the ordered
// scans alone) and with every selective probe's candidates
// (probesAlways), and must find the same pages.
type probeMode uint8

const (
	probesWeighed probeMode = iota
	probesOff
	probesAlways
)

// searchRuns is SearchRuns with a probe mode.
func (q *Queries) searchRuns(ctx context.Context, projectID string, s RunSearch, probes probeMode) (Page[Run], error) {
	limit, err := searchLimit(s.MaxResults)
	if err != nil {
		return Page[Run]{}, err
	}
	if len(s.ExperimentIDs) > MaxSearchExperiments {
		return Page[Run]{}, fmt.Errorf("%w: at most %d experiment ids", ErrInvalidSearch, MaxSearchExperiments)
	}
	expr, err := filter.Parse(filter.Runs, s.Filter)
	if err != nil {
		return Page[Run]{}, err
	}
	for _, c := range expr.Clauses {
		if err := storedRunKey(c.Type, c.Key); err != "" {
			return Page[Run]{}, c.Errorf("%s", err)
		}
	}
	order, err := filter.ParseOrderBy(filter.Runs, s.OrderBy)
	if err != nil {
		return Page[Run]{}, err
	}
	for i, o := range order {
		if err := storedRunKey(o.Type, o.Key); err != "" {
			return Page[Run]{}, &filter.Error{OrderBy: true, Entry: i, Pos: 1, Msg: err}
		}
	}
	if !isUUID(projectID) {
		return Page[Run]{}, ErrNotFound
	}
	ids, err := q.projectExperiments(ctx, projectID, s.ExperimentIDs)
	if err != nil {
		return Page[Run]{}, err
	}
	view := normalView(s.View)
	orderText := make([]string, len(order))
	for i, o := range order {
		orderText[i] = o.String()
	}
	plan := planRunSearch(expr, order)
	plan.hash = searchHash("runs", projectID, strings.Join(ids, ","), expr.String(), strings.Join(orderText, "\x00"), string(view))
	plan.projectID, plan.experimentIDs, plan.view = projectID, ids, view

	seg, after, err := plan.decodeToken(s.PageToken)
	if err != nil {
		return Page[Run]{}, err
	}
	page, err := q.searchRunPage(ctx, plan, seg, after, limit, probes)
	if err != nil {
		return Page[Run]{}, err
	}
	return page, q.runDetails(ctx, page.Items)
}

// searchRunPage reads one page in a read-only transaction: its probes and
// segments see one snapshot, without parallel workers (starting them cost
// more than a page of an index scan: about 30 ms here) and with plans for
// the actual values (a generic plan does not know the filter's constants
// nor the probes' candidate lists).
func (q *Queries) searchRunPage(ctx context.Context, plan *runPlan, seg int, after []sortValue, limit int, probes probeMode) (Page[Run], error) {
	page := Page[Run]{Items: []Run{}}
	tx, err := q.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return page, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SELECT set_config('max_parallel_workers_per_gather', '0', true), set_config('plan_cache_mode', 'force_custom_plan', true)"); err != nil {
		return page, err
	}
	if probes != probesOff {
		if err := plan.probe(ctx, tx, limit+1, probes == probesAlways); err != nil {
			return page, err
		}
	}
	if plan.candidates != nil && len(plan.candidates) == 0 {
		return page, nil // a probe's runs and another's have none in common
	}
	var keys [][]sortValue // sort values of the items, for the token
	var segOf []int
	for ; seg < len(plan.segments) && len(page.Items) <= limit; seg++ {
		sql, args, ok := plan.segmentSQL(seg, after, limit+1-len(page.Items))
		after = nil // only the token's own segment starts after it
		if !ok {
			continue
		}
		runs, vals, err := searchSegment(ctx, tx, sql, args, plan.levels(seg))
		if err != nil {
			return page, err
		}
		page.Items = append(page.Items, runs...)
		keys = append(keys, vals...)
		for range runs {
			segOf = append(segOf, seg)
		}
	}
	if len(page.Items) > limit {
		page.Items = page.Items[:limit]
		page.NextPageToken = plan.encodeToken(segOf[limit-1], keys[limit-1])
	}
	return page, tx.Commit(ctx)
}

// storedRunKey says why runs cannot be searched or ordered by a key yet
// ("" if they can).
func storedRunKey(t filter.Type, key string) string {
	switch {
	case t == filter.Dataset:
		return "datasets are not searchable yet: runs record no dataset inputs"
	case t == filter.Attribute && key == "artifact_uri":
		return "attribute artifact_uri is not searchable yet: runs store no artifact location"
	}
	return ""
}

func searchLimit(n int) (int, error) {
	switch {
	case n == 0:
		return MaxSearchResults, nil
	case n < 0 || n > MaxSearchResults:
		return 0, fmt.Errorf("%w: max_results must be between 1 and %d", ErrInvalidSearch, MaxSearchResults)
	}
	return n, nil
}

func normalView(v View) View {
	switch v {
	case ViewDeleted, ViewAll:
		return v
	}
	return ViewActive
}

// projectExperiments canonicalises experiment ids (lower case, sorted,
// without repeats) and checks that each is an experiment of the project:
// an unknown or foreign one is ErrNotFound.
func (q *Queries) projectExperiments(ctx context.Context, projectID string, in []string) ([]string, error) {
	ids := make([]string, 0, len(in))
	for _, id := range in {
		u, err := uuid.Parse(id)
		if err != nil || len(id) != 36 {
			return nil, ErrNotFound
		}
		ids = append(ids, u.String())
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) == 0 {
		return ids, nil
	}
	var n int
	if err := q.pool.QueryRow(ctx, "SELECT count(*) FROM experiments WHERE project_id = $1 AND id = ANY($2::uuid[])", projectID, ids).Scan(&n); err != nil {
		return nil, err
	}
	if n != len(ids) {
		return nil, ErrNotFound
	}
	return ids, nil
}

// searchHash binds a page token to its search (the canonical filter and
// order, not their spelling); it is a check, not a secret.
func searchHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:12])
}

// ---- sort levels and page tokens ----

// valueKind is the Go and SQL type of a sort value.
type valueKind uint8

const (
	floatValue valueKind = iota + 1
	intValue
	textValue
	uuidValue
)

// sortLevel is one key of a search's ORDER BY: an optional rank of missing
// values (ascending in both directions: present 0, for metrics NaN 1,
// missing last), then the value. A level without a rank is never missing;
// one without a value is constant in its segment.
type sortLevel struct {
	rank    string // SQL int expression, or ""
	maxRank int
	value   string // SQL expression, or ""
	// prefix, for a text value, is its indexed prefix (textPrefix): the
	// ORDER BY leads with it so the index can serve the order, which is
	// the value's own order in the C collation.
	prefix string
	desc   bool
	kind   valueKind
}

// sortValue is a row's value of one level: its rank, and its value when
// the rank is 0 (present, a number for metrics).
type sortValue struct {
	rank int
	v    any // float64, int64, string; nil when absent
}

// searchToken is a page token: the search's hash, the segment and the
// sort values of the page's last row.
type searchToken struct {
	H string    `json:"h"`
	S int       `json:"s"`
	R []int     `json:"r,omitempty"` // ranks of the levels that have one
	V []*string `json:"v"`           // values, nil where absent
}

func encodeSearchToken(hash string, seg int, levels []sortLevel, vals []sortValue) string {
	t := searchToken{H: hash, S: seg, V: make([]*string, len(levels))}
	for i, l := range levels {
		if l.rank != "" {
			t.R = append(t.R, vals[i].rank)
		}
		if vals[i].v == nil {
			continue
		}
		var s string
		switch v := vals[i].v.(type) {
		case float64:
			s = strconv.FormatFloat(v, 'g', -1, 64)
		case int64:
			s = strconv.FormatInt(v, 10)
		case string:
			s = v
		}
		t.V[i] = &s
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // shorter tokens for values with < > &
	_ = enc.Encode(t)
	return base64.RawURLEncoding.EncodeToString(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}

// decodeSearchToken checks a token against the search's hash and the
// levels of its segment; levels(seg) is nil for a segment that does not
// exist. Whatever a client forges is ErrBadPageToken, never a query error.
func decodeSearchToken(token, hash string, levels func(seg int) []sortLevel) (int, []sortValue, error) {
	if len(token) > maxSearchToken {
		return 0, nil, ErrBadPageToken
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	var t searchToken
	if err != nil || json.Unmarshal(b, &t) != nil || t.H != hash {
		return 0, nil, ErrBadPageToken
	}
	ls := levels(t.S)
	if ls == nil || len(t.V) != len(ls) {
		return 0, nil, ErrBadPageToken
	}
	vals := make([]sortValue, len(ls))
	r := 0
	for i, l := range ls {
		if l.rank != "" {
			if r >= len(t.R) || t.R[r] < 0 || t.R[r] > l.maxRank {
				return 0, nil, ErrBadPageToken
			}
			vals[i].rank = t.R[r]
			r++
		}
		present := l.value != "" && vals[i].rank == 0
		if (t.V[i] != nil) != present {
			return 0, nil, ErrBadPageToken
		}
		if !present {
			continue
		}
		s := *t.V[i]
		switch l.kind {
		case floatValue:
			f, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(f) {
				return 0, nil, ErrBadPageToken
			}
			vals[i].v = f
		case intValue:
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, nil, ErrBadPageToken
			}
			vals[i].v = n
		case uuidValue:
			if !isUUID(s) {
				return 0, nil, ErrBadPageToken
			}
			vals[i].v = s
		default:
			if !plainKey(s) {
				return 0, nil, ErrBadPageToken
			}
			vals[i].v = s
		}
	}
	if r != len(t.R) {
		return 0, nil, ErrBadPageToken
	}
	return t.S, vals, nil
}

// sqlArgs collects a statement's arguments.
type sqlArgs []any

// add binds v and returns its placeholder.
func (a *sqlArgs) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// orderSQL is the ORDER BY list of levels.
func orderSQL(levels []sortLevel) string {
	var parts []string
	for _, l := range levels {
		if l.rank != "" {
			parts = append(parts, l.rank)
		}
		if l.value != "" {
			dir := " ASC"
			if l.desc {
				dir = " DESC"
			}
			if l.prefix != "" {
				parts = append(parts, l.prefix+dir)
			}
			parts = append(parts, l.value+dir)
		}
	}
	return strings.Join(parts, ", ")
}

// selectSQL is the levels' rank and value columns, after the row's own.
func selectSQL(levels []sortLevel) string {
	var parts []string
	for _, l := range levels {
		rank, value := "0", "NULL"
		if l.rank != "" {
			rank = l.rank
		}
		if l.value != "" {
			value = l.value
		}
		parts = append(parts, rank, value)
	}
	return strings.Join(parts, ", ")
}

// afterSQL is the condition that a row sorts strictly after the values
// of a row: lexicographic over the levels, ranks ascending, values in
// their direction. bound adds, for the first level's value, the
// redundant one-sided bound an index range scan can use.
func afterSQL(levels []sortLevel, vals []sortValue, args *sqlArgs) string {
	cond := "false" // equal on every level: the same row, not after it
	for i := len(levels) - 1; i >= 0; i-- {
		l, v := levels[i], vals[i]
		inner := cond
		if l.value != "" && v.v != nil {
			p := args.add(v.v)
			cmp := " > "
			if l.desc {
				cmp = " < "
			}
			inner = "(" + l.value + cmp + p + " OR (" + l.value + " = " + p + " AND " + cond + "))"
			if i == 0 {
				bound := " >= "
				if l.desc {
					bound = " <= "
				}
				if l.prefix != "" {
					inner = "(" + l.prefix + bound + "left(" + p + "::text, " + strconv.Itoa(textPrefixLen) + ") AND " + inner + ")"
				} else {
					inner = "(" + l.value + bound + p + " AND " + inner + ")"
				}
			}
		}
		if l.rank != "" {
			r := strconv.Itoa(v.rank)
			inner = "(" + l.rank + " > " + r + " OR (" + l.rank + " = " + r + " AND " + inner + "))"
		}
		cond = inner
	}
	return cond
}

// ---- the plan of a run search ----

// runSegment is one segment of a run search: the driving join or
// condition that selects its runs, and its first sort level (nil when
// the first order key is constant in it: NaN, or missing).
type runSegment struct {
	join  string // e.g. JOIN latest_metrics p ON ... (with $K for the key)
	cond  string // extra WHERE condition (with $K for the key)
	first *sortLevel
	// state of the first order key in this segment, for filters on it.
	state segState
}

type segState uint8

const (
	segAll     segState = iota // no keyed first order key
	segPresent                 // the key has a (numeric) value
	segNaN                     // the metric is NaN
	segMissing                 // the run lacks the key
)

// runPlan is a parsed run search turned into SQL pieces.
type runPlan struct {
	hash          string
	projectID     string
	experimentIDs []string
	view          View
	filters       []filter.Comparison
	primary       *filter.OrderKey // first order key if it is a metric, param, tag or end_time
	segments      []runSegment
	rest          []filter.OrderKey // order keys after the segments' first level
	tieStart      bool              // start_time DESC before run id ASC
	// candidates, when not nil, are the only runs that can match: those
	// the selective probes listed (probe).
	candidates []string
	// dense marks the filters whose probe found them matching more than
	// probeCap runs (by index in filters).
	dense []bool
}

// planRunSearch chooses the segments for the first order key.
func planRunSearch(expr filter.Expr, order []filter.OrderKey) *runPlan {
	p := &runPlan{filters: expr.Clauses, tieStart: true, rest: order}
	for _, o := range order {
		if o.Type == filter.Attribute && o.Key == "start_time" {
			p.tieStart = false
		}
	}
	if len(order) == 0 {
		p.segments = []runSegment{{}}
		return p
	}
	first := order[0]
	switch first.Type {
	case filter.Metric:
		p.primary, p.rest = &first, order[1:]
		p.segments = []runSegment{
			{join: "JOIN latest_metrics p ON p.run_id = r.id AND p.key = $K AND p.value < 'NaN'",
				first: &sortLevel{value: "p.value", desc: first.Desc, kind: floatValue}, state: segPresent},
			{join: "JOIN latest_metrics p ON p.run_id = r.id AND p.key = $K AND p.value = 'NaN'", state: segNaN},
			{cond: "NOT EXISTS (SELECT 1 FROM latest_metrics p WHERE p.run_id = r.id AND p.key = $K)", state: segMissing},
		}
	case filter.Param, filter.Tag:
		t := keyTable(first.Type)
		p.primary, p.rest = &first, order[1:]
		p.segments = []runSegment{
			{join: "JOIN " + t + " p ON p.run_id = r.id AND p.key = $K",
				first: &sortLevel{value: `p.value COLLATE "C"`, prefix: textPrefix("p.value"), desc: first.Desc, kind: textValue}, state: segPresent},
			{cond: "NOT EXISTS (SELECT 1 FROM " + t + " p WHERE p.run_id = r.id AND p.key = $K)", state: segMissing},
		}
	case filter.Attribute:
		if first.Key == "end_time" {
			p.primary, p.rest = &first, order[1:]
			p.segments = []runSegment{
				{cond: "r.end_time IS NOT NULL", first: &sortLevel{value: "r.end_time", desc: first.Desc, kind: intValue}, state: segPresent},
				{cond: "r.end_time IS NULL", state: segMissing},
			}
		} else {
			p.segments = []runSegment{{}}
		}
	}
	return p
}

func keyTable(t filter.Type) string {
	switch t {
	case filter.Metric:
		return "latest_metrics"
	case filter.Param:
		return "run_params"
	}
	return "run_tags"
}

// attrLevel is the sort level of a run attribute.
func attrLevel(key string, desc bool) sortLevel {
	switch key {
	case "run_id":
		return sortLevel{value: "r.id", desc: desc, kind: uuidValue}
	case "run_name":
		return sortLevel{value: `r.name COLLATE "C"`, desc: desc, kind: textValue}
	case "status":
		return sortLevel{value: `r.status COLLATE "C"`, desc: desc, kind: textValue}
	case "user_id":
		return sortLevel{value: "r.user_id", desc: desc, kind: uuidValue}
	case "end_time":
		return sortLevel{rank: "(r.end_time IS NULL)::int", maxRank: 1, value: "r.end_time", desc: desc, kind: intValue}
	}
	return sortLevel{value: "r.start_time", desc: desc, kind: intValue}
}

// levels are the sort levels of segment seg (nil if there is none); the
// joins of the secondary keys are named o0, o1, ... in rest's order.
func (p *runPlan) levels(seg int) []sortLevel {
	if seg < 0 || seg >= len(p.segments) {
		return nil
	}
	var ls []sortLevel
	if f := p.segments[seg].first; f != nil {
		ls = append(ls, *f)
	}
	for i, o := range p.rest {
		a := "o" + strconv.Itoa(i)
		switch o.Type {
		case filter.Metric:
			ls = append(ls, sortLevel{rank: "CASE WHEN " + a + ".value IS NULL THEN 2 WHEN " + a + ".value = 'NaN' THEN 1 ELSE 0 END",
				maxRank: 2, value: a + ".value", desc: o.Desc, kind: floatValue})
		case filter.Param, filter.Tag:
			ls = append(ls, sortLevel{rank: "(" + a + ".value IS NULL)::int", maxRank: 1, value: a + `.value COLLATE "C"`, desc: o.Desc, kind: textValue})
		default:
			ls = append(ls, attrLevel(o.Key, o.Desc))
		}
	}
	if p.tieStart {
		ls = append(ls, sortLevel{value: "r.start_time", desc: true, kind: intValue})
	}
	return append(ls, sortLevel{value: "r.id", kind: uuidValue})
}

func (p *runPlan) decodeToken(token string) (int, []sortValue, error) {
	if token == "" {
		return 0, nil, nil
	}
	return decodeSearchToken(token, p.hash, p.levels)
}

func (p *runPlan) encodeToken(seg int, vals []sortValue) string {
	return encodeSearchToken(p.hash, seg, p.levels(seg), vals)
}

// segmentSQL is the query of segment seg: at most limit runs, after the
// values of the previous page's last run when it ended in this segment.
// ok is false when the filter leaves the segment empty.
func (p *runPlan) segmentSQL(seg int, after []sortValue, limit int) (string, sqlArgs, bool) {
	s := p.segments[seg]
	var args sqlArgs
	var where []string
	where = append(where, "r.project_id = "+args.add(p.projectID))
	if len(p.experimentIDs) > 0 {
		where = append(where, "r.experiment_id = ANY("+args.add(p.experimentIDs)+"::uuid[])")
	}
	switch p.view {
	case ViewDeleted:
		where = append(where, "(r.deleted OR r.experiment_deleted)")
	case ViewActive:
		where = append(where, "NOT (r.deleted OR r.experiment_deleted)")
	}
	if p.candidates != nil {
		where = append(where, "r.id = ANY("+args.add(p.candidates)+"::uuid[])")
	}
	var from strings.Builder
	from.WriteString("runs r")
	if p.primary != nil {
		key := ""
		if s.join != "" || strings.Contains(s.cond, "$K") {
			key = args.add(p.primary.Key)
		}
		if s.join != "" {
			from.WriteString(" " + strings.ReplaceAll(s.join, "$K", key))
		}
		if s.cond != "" {
			where = append(where, strings.ReplaceAll(s.cond, "$K", key))
		}
	}
	for i, o := range p.rest {
		if o.Type == filter.Attribute {
			continue
		}
		a := "o" + strconv.Itoa(i)
		from.WriteString(" LEFT JOIN " + keyTable(o.Type) + " " + a + " ON " + a + ".run_id = r.id AND " + a + ".key = " + args.add(o.Key))
	}
	// The filters test the driving row's run id where there is one: they
	// then run on the index scan's rows, before the join to runs.
	rid := "r.id"
	if s.join != "" {
		rid = "p.run_id"
	}
	for i, c := range p.filters {
		cond, ok := p.filterSQL(i, c, s.state, rid, &args)
		if !ok {
			return "", nil, false
		}
		if cond != "" {
			where = append(where, cond)
		}
	}
	levels := p.levels(seg)
	if after != nil {
		where = append(where, afterSQL(levels, after, &args))
	}
	sql := "SELECT " + runColumns("r.") + ", " + selectSQL(levels) + " FROM " + from.String() + " WHERE " + strings.Join(where, " AND ") +
		" ORDER BY " + orderSQL(levels) + " LIMIT " + args.add(limit)
	return sql, args, true
}

// textPrefixLen is the length of the indexed prefix of param and tag
// values (migration 00010): a btree entry holds at most ~2,700 bytes, and a
// value up to 8,000, so the index keeps the first 200 characters.
const textPrefixLen = 200

// textPrefix is the indexed prefix of a param or tag value column.
func textPrefix(col string) string {
	return "left(" + col + ", " + strconv.Itoa(textPrefixLen) + `) COLLATE "C"`
}

// Probes. Postgres keeps one histogram for latest_metrics.value across
// every key, so it cannot tell that "metrics.auc > 0.999" matches 100 runs
// where "metrics.m07 > 0.999" matches 16,000: it picks the ordered scan for
// both, and reads all 100,000 runs to fill a page of the first. A probe asks
// the index instead: it lists the runs matching one comparison, up to
// probeCap. If a probe comes back under the cap, the runs the selective
// probes listed in common are the only candidates, and the page is read
// from them by primary key (when that is cheaper than the ordered scan:
// probe); a comparison matching more is left to the ordered scan, which
// then meets a match every few rows (exists).
const (
	probeCap  = 2000
	maxProbes = 4
)

// probeSQL lists, through an index, the runs matching c (any project),
// when c has such an index: metric comparisons but != (latest_metrics
// (key, value)), param and tag equality and LIKE with a literal prefix
// (run_params and run_tags (key, textPrefix)).
func probeSQL(c filter.Comparison) (string, []any, bool) {
	var args sqlArgs
	switch c.Type {
	case filter.Metric:
		if c.Op == filter.Ne {
			return "", nil, false
		}
		cond := "value " + sqlOps[c.Op] + " " + args.add(c.Value.Num)
		if c.Op == filter.Gt || c.Op == filter.Ge {
			cond += " AND value < 'NaN'"
		}
		return "SELECT run_id FROM latest_metrics WHERE key = " + args.add(c.Key) + " AND " + cond + " LIMIT " + args.add(probeCap+1), args, true
	case filter.Param, filter.Tag:
		var cond string
		switch c.Op {
		case filter.Eq:
			v := args.add(c.Value.Text)
			cond = textPrefix("value") + " = left(" + v + "::text, " + strconv.Itoa(textPrefixLen) + ") AND value = " + v
		case filter.Like:
			prefix := literalPrefix(c.Value.Text)
			if prefix == "" {
				return "", nil, false
			}
			if r := []rune(prefix); len(r) > textPrefixLen {
				prefix = string(r[:textPrefixLen])
			}
			cond = textPrefix("value") + " LIKE " + args.add(escapeLike(prefix)+"%") + " AND value LIKE " + args.add(c.Value.Text)
		default:
			return "", nil, false
		}
		return "SELECT run_id FROM " + keyTable(c.Type) + " WHERE key = " + args.add(c.Key) + " AND " + cond + " LIMIT " + args.add(probeCap+1), args, true
	}
	return "", nil, false
}

// literalPrefix is the literal text a LIKE pattern starts with (up to its
// first wildcard), escapes resolved.
func literalPrefix(pattern string) string {
	var b strings.Builder
	rs := []rune(pattern)
	for i := 0; i < len(rs); i++ {
		switch rs[i] {
		case '%', '_':
			return b.String()
		case '\\':
			if i+1 < len(rs) {
				i++
			}
		}
		b.WriteRune(rs[i])
	}
	return b.String()
}

// escapeLike makes s match itself in a LIKE pattern.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(s)
}

// probe runs the probes of the filter's comparisons (at most maxProbes),
// all in one round trip with the size of runs, and sets candidates to the
// runs the selective ones listed in common, when reading them is cheaper
// than the ordered scan (weighed, unless always). The probes read plain
// index scans, which stop at the cap: a bitmap scan (which the planner,
// misjudging again, picks) reads the whole range first, 25,000 entries for
// a param a quarter of the runs hold.
func (p *runPlan) probe(ctx context.Context, tx pgx.Tx, rows int, always bool) error {
	p.dense = make([]bool, len(p.filters))
	b := &pgx.Batch{}
	b.Queue("SELECT reltuples::bigint, set_config('enable_bitmapscan', 'off', true) FROM pg_class WHERE oid = 'runs'::regclass")
	var probed []int
	for i, c := range p.filters {
		if len(probed) == maxProbes {
			break
		}
		if sql, args, ok := probeSQL(c); ok {
			b.Queue(sql, args...)
			probed = append(probed, i)
		}
	}
	if len(probed) == 0 {
		return nil
	}
	b.Queue("SELECT set_config('enable_bitmapscan', 'on', true)")
	br := tx.SendBatch(ctx, b)
	defer br.Close()
	var runs int64
	var ignored string
	if err := br.QueryRow().Scan(&runs, &ignored); err != nil {
		return err
	}
	var selective []int
	for _, i := range probed {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if len(ids) > probeCap {
			p.dense[i] = true
			continue
		}
		selective = append(selective, i)
		if p.candidates == nil {
			p.candidates = ids
			continue
		}
		in := make(map[string]bool, len(ids))
		for _, id := range ids {
			in[id] = true
		}
		p.candidates = slices.DeleteFunc(p.candidates, func(id string) bool { return !in[id] })
	}
	if _, err := br.Exec(); err != nil {
		return err
	}
	// Reading c candidates costs about c lookups; the ordered scan meets a
	// match every runs/c rows, so a page of n costs it about n·runs/c.
	// Below a table's first ANALYZE, reltuples is -1 (or 0): trust the
	// candidates then.
	if c := int64(len(p.candidates)); p.candidates != nil && !always && runs > 0 && c*c > int64(rows)*runs {
		p.candidates = nil
		for _, i := range selective {
			p.dense[i] = true
		}
	}
	return br.Close()
}

// sqlOps are the SQL operators of the filter's scalar comparisons.
var sqlOps = map[filter.Op]string{filter.Eq: "=", filter.Ne: "<>", filter.Lt: "<", filter.Le: "<=", filter.Gt: ">", filter.Ge: ">=",
	filter.Like: "LIKE", filter.ILike: "ILIKE"}

// filterSQL is the condition of one comparison in a segment whose first
// order key is in state; ok is false when no run of the segment can match
// (a comparison on the first order key where it is missing or NaN).
func (p *runPlan) filterSQL(i int, c filter.Comparison, state segState, rid string, args *sqlArgs) (string, bool) {
	onPrimary := p.primary != nil && p.primary.Type == c.Type && p.primary.Key == c.Key
	switch c.Type {
	case filter.Metric:
		alias := "m"
		if onPrimary {
			switch state {
			case segNaN:
				return "", c.Op == filter.Ne
			case segMissing:
				return "", false
			}
			alias = "p"
		}
		// NaN compares false except with != (IEEE 754, and filter.Match);
		// Postgres orders NaN above every number, so > and >= exclude it.
		cond := alias + ".value " + sqlOps[c.Op] + " " + args.add(c.Value.Num)
		if c.Op == filter.Gt || c.Op == filter.Ge {
			cond += " AND " + alias + ".value < 'NaN'"
		}
		if onPrimary {
			return cond, true
		}
		return p.exists(i, "latest_metrics", rid, args.add(c.Key), cond), true
	case filter.Param, filter.Tag:
		cond := " " + sqlOps[c.Op] + " " + args.add(c.Value.Text)
		if onPrimary {
			if state == segPresent {
				return "p.value" + cond, true
			}
			return "", false
		}
		return p.exists(i, keyTable(c.Type), rid, args.add(c.Key), "m.value"+cond), true
	}
	// Attributes (artifact_uri and datasets were refused before).
	switch c.Key {
	case "start_time", "end_time":
		if c.Key == "end_time" && onPrimary && state == segMissing {
			return "", false
		}
		col := "r." + c.Key
		if n, ok := c.Value.Int(); ok {
			return col + " " + sqlOps[c.Op] + " " + args.add(n), true
		}
		return col + "::float8 " + sqlOps[c.Op] + " " + args.add(c.Value.Num), true
	case "run_id":
		return runIDSQL(c, args), true
	}
	col := map[string]string{"run_name": "r.name", "status": "r.status", "user_id": "r.user_id::text"}[c.Key]
	return col + " " + sqlOps[c.Op] + " " + args.add(c.Value.Text), true
}

// exists is the test that the run rid has key in table with its value
// meeting cond (on m.value), for filter i: EXISTS, which the planner turns
// into a semi-join. When no probe was selective, a filter whose probe found
// it dense is a scalar subquery instead, which the planner can neither
// join nor hash: misjudging how few runs several dense filters leave
// together (it multiplies guesses from one histogram of all keys), it
// would hash every run holding each key (370 ms at 100,000 runs, or 85 ms
// to hash the 25,000 runs of one tag value) where a per-run test in the
// ordered scan meets a match every few rows. (run_id, key) is unique, so
// the subquery has at most one row; a missing key is NULL, not true.
func (p *runPlan) exists(i int, table, rid, key, cond string) string {
	from := " FROM " + table + " m WHERE m.run_id = " + rid + " AND m.key = " + key
	if p.candidates == nil && i < len(p.dense) && p.dense[i] {
		return "(SELECT " + cond + from + ") IS TRUE"
	}
	return "EXISTS (SELECT 1" + from + " AND " + cond + ")"
}

// runIDSQL compares run ids as uuids where it can (the primary key serves
// = and IN); an id that is no uuid names no run.
func runIDSQL(c filter.Comparison, args *sqlArgs) string {
	switch c.Op {
	case filter.Like, filter.ILike:
		return "r.id::text " + sqlOps[c.Op] + " " + args.add(c.Value.Text)
	case filter.In, filter.NotIn:
		ids := make([]string, 0, len(c.Value.List))
		for _, s := range c.Value.List {
			if u, err := uuid.Parse(s); err == nil && len(s) == 36 {
				ids = append(ids, u.String())
			}
		}
		cond := "r.id = ANY(" + args.add(ids) + "::uuid[])"
		if c.Op == filter.NotIn {
			return "NOT " + cond
		}
		return cond
	}
	u, err := uuid.Parse(c.Value.Text)
	if err != nil || len(c.Value.Text) != 36 {
		if c.Op == filter.Eq {
			return "false"
		}
		return "true"
	}
	return "r.id " + sqlOps[c.Op] + " " + args.add(u.String()) + "::uuid"
}

// searchSegment runs one segment's query: the runs and their sort values.
func searchSegment(ctx context.Context, tx pgx.Tx, sql string, args []any, levels []sortLevel) ([]Run, [][]sortValue, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var runs []Run
	var keys [][]sortValue
	for rows.Next() {
		sv := newSortScan(levels)
		r, err := scanRun(extraRow{rows, sv.dest})
		if err != nil {
			return nil, nil, err
		}
		key := sv.values()
		runs = append(runs, r)
		keys = append(keys, key)
	}
	return runs, keys, rows.Err()
}

// ---- experiments ----

// ExperimentSearch is a search of a project's experiments (MLflow's
// search_experiments): filter on name, creation_time, last_update_time
// (ms) and tags; order by name, experiment_id, creation_time,
// last_update_time (default creation_time DESC; ties by id ASC).
type ExperimentSearch struct {
	Filter     string
	OrderBy    []string
	View       View
	MaxResults int // 1 to MaxSearchResults (0: the maximum)
	PageToken  string
}

// msSQL is a timestamptz column in ms since the epoch, as MLflow's
// creation_time (floored like time.Time.UnixMilli).
func msSQL(col string) string { return "floor(extract(epoch FROM " + col + ") * 1000)::bigint" }

// SearchExperiments pages the project's experiments that match s's
// filter, in s's order (keyset paging, as SearchRuns). Errors as
// SearchRuns'.
func (q *Queries) SearchExperiments(ctx context.Context, projectID string, s ExperimentSearch) (Page[Experiment], error) {
	view := normalView(s.View)
	ent := experiments
	ent.where += " AND " + viewSQL(view)
	ent.hash = []string{string(view)}
	return entitySearch(ctx, q, projectID, RegistrySearch{Filter: s.Filter, OrderBy: s.OrderBy, MaxResults: s.MaxResults, PageToken: s.PageToken}, ent,
		func(row pgx.Row, sort []any) (Experiment, error) { return scanExperiment(row, sort...) })
}

// experiments is experiment search's entity: by default newest first,
// ties by id.
var experiments = searchEntity{
	kind:  filter.Experiments,
	from:  "experiments",
	where: "project_id = $1",
	cols:  experimentCols,
	tags:  "tags",
	attrs: map[string]string{"name": "name", "creation_time": msSQL("created_at"), "last_update_time": msSQL("updated_at")},
	levels: map[string]func(bool) sortLevel{
		"name":             func(desc bool) sortLevel { return experimentLevel("name", desc) },
		"experiment_id":    func(desc bool) sortLevel { return experimentLevel("experiment_id", desc) },
		"creation_time":    func(desc bool) sortLevel { return experimentLevel("creation_time", desc) },
		"last_update_time": func(desc bool) sortLevel { return experimentLevel("last_update_time", desc) },
	},
	defaults: []filter.OrderKey{{Type: filter.Attribute, Key: "creation_time", Desc: true}},
	ties:     []filter.OrderKey{{Type: filter.Attribute, Key: "experiment_id"}},
}

// experimentLevel is the sort level of an experiment attribute.
func experimentLevel(key string, desc bool) sortLevel {
	switch key {
	case "name":
		return sortLevel{value: `name COLLATE "C"`, desc: desc, kind: textValue}
	case "experiment_id":
		return sortLevel{value: "id", desc: desc, kind: uuidValue}
	case "last_update_time":
		return sortLevel{value: msSQL("updated_at"), desc: desc, kind: intValue}
	}
	return sortLevel{value: msSQL("created_at"), desc: desc, kind: intValue}
}
