package filter

import (
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

func num(text string, f float64) Value { return Value{Kind: Number, Num: f, Text: text} }
func str(s string) Value               { return Value{Kind: String, Text: s} }
func list(s ...string) Value           { return Value{Kind: List, List: s} }

// cmp is a comparison without positions, for table tests.
type cmp struct {
	t   Type
	key string
	op  Op
	v   Value
}

func sameValue(a, b Value) bool {
	if a.Kind != b.Kind || a.Text != b.Text || len(a.List) != len(b.List) {
		return false
	}
	if a.Num != b.Num && !(math.IsNaN(a.Num) && math.IsNaN(b.Num)) {
		return false
	}
	for i := range a.List {
		if a.List[i] != b.List[i] {
			return false
		}
	}
	return true
}

// sameExpr compares two expressions without their positions.
func sameExpr(a, b Expr) bool {
	if len(a.Clauses) != len(b.Clauses) {
		return false
	}
	for i, c := range a.Clauses {
		d := b.Clauses[i]
		if c.Type != d.Type || c.Key != d.Key || c.Op != d.Op || !sameValue(c.Value, d.Value) {
			return false
		}
	}
	return true
}

func TestParseValid(t *testing.T) {
	t.Parallel()
	cases := []struct {
		kind   *Kind
		filter string
		want   []cmp
		canon  string
	}{
		{Runs, "", nil, ""},
		{Runs, "   \t\n ", nil, ""},
		{Runs, "metrics.auc > 0.9", []cmp{{Metric, "auc", Gt, num("0.9", 0.9)}}, "metrics.auc > 0.9"},
		{Runs, "metric.auc>=0.9 and params.lr = '0.01'", []cmp{{Metric, "auc", Ge, num("0.9", 0.9)}, {Param, "lr", Eq, str("0.01")}},
			"metrics.auc >= 0.9 AND params.lr = '0.01'"},
		{Runs, "METRICS.auc < -1e-3 AnD parameter.x != \"a b\"", []cmp{{Metric, "auc", Lt, num("-1e-3", -1e-3)}, {Param, "x", Ne, str("a b")}},
			"metrics.auc < -1e-3 AND params.x != 'a b'"},
		{Runs, "metrics.\"my-metric\" <= .5", []cmp{{Metric, "my-metric", Le, num(".5", .5)}}, "metrics.`my-metric` <= .5"},
		{Runs, "tags.`mlflow.runName` LIKE 'run-%'", []cmp{{Tag, "mlflow.runName", Like, str("run-%")}}, "tags.mlflow.runName LIKE 'run-%'"},
		{Runs, "tags.mlflow.runName ilike '%X%'", []cmp{{Tag, "mlflow.runName", ILike, str("%X%")}}, "tags.mlflow.runName ILIKE '%X%'"},
		{Runs, "tag.\"it's\" = 'it''s'", []cmp{{Tag, "it's", Eq, str("it's")}}, "tags.`it's` = 'it''s'"},
		{Runs, `tags.x = "say ""hi"""`, []cmp{{Tag, "x", Eq, str(`say "hi"`)}}, `tags.x = 'say "hi"'`},
		{Runs, "tags.`a\"b` = ''", []cmp{{Tag, `a"b`, Eq, str("")}}, "tags.`a\"b` = ''"},
		{Runs, "tags.\"a`b\" = 'x'", []cmp{{Tag, "a`b", Eq, str("x")}}, "tags.\"a`b\" = 'x'"},
		{Runs, "run_name = 'x'", []cmp{{Attribute, "run_name", Eq, str("x")}}, "attributes.run_name = 'x'"},
		{Runs, "attributes.`run name` = 'x'", []cmp{{Attribute, "run_name", Eq, str("x")}}, "attributes.run_name = 'x'"},
		{Runs, "attr.\"Run Name\" != 'x'", []cmp{{Attribute, "run_name", Ne, str("x")}}, "attributes.run_name != 'x'"},
		{Runs, "`Run name` = 'x'", []cmp{{Attribute, "run_name", Eq, str("x")}}, "attributes.run_name = 'x'"},
		{Runs, "created > 1700000000000", []cmp{{Attribute, "start_time", Gt, num("1700000000000", 1.7e12)}}, "attributes.start_time > 1700000000000"},
		{Runs, "run.end_time <= +5", []cmp{{Attribute, "end_time", Le, num("+5", 5)}}, "attributes.end_time <= +5"},
		{Runs, "attributes.status = 'FINISHED' AND attributes.user_id = 'u'", []cmp{{Attribute, "status", Eq, str("FINISHED")}, {Attribute, "user_id", Eq, str("u")}},
			"attributes.status = 'FINISHED' AND attributes.user_id = 'u'"},
		{Runs, "attributes.run_id IN ('a', \"b\",'c')", []cmp{{Attribute, "run_id", In, list("a", "b", "c")}}, "attributes.run_id IN ('a', 'b', 'c')"},
		{Runs, "run_id not   in ('a')", []cmp{{Attribute, "run_id", NotIn, list("a")}}, "attributes.run_id NOT IN ('a')"},
		{Runs, "attributes.artifact_uri LIKE 's3://%'", []cmp{{Attribute, "artifact_uri", Like, str("s3://%")}}, "attributes.artifact_uri LIKE 's3://%'"},
		{Runs, "datasets.digest IN ('d1')", []cmp{{Dataset, "digest", In, list("d1")}}, "datasets.digest IN ('d1')"},
		{Runs, "metrics.train.loss < 1", []cmp{{Metric, "train.loss", Lt, num("1", 1)}}, "metrics.train.loss < 1"},
		{Runs, "metrics.ünïcode_1 = 1.", []cmp{{Metric, "ünïcode_1", Eq, num("1.", 1)}}, "metrics.ünïcode_1 = 1."},
		{Runs, "params.p LIKE 'a\\%'", []cmp{{Param, "p", Like, str(`a\%`)}}, `params.p LIKE 'a\%'`},
		{Runs, "params.p = 'a\\'", []cmp{{Param, "p", Eq, str(`a\`)}}, `params.p = 'a\'`},
		{Experiments, "name LIKE 'exp%' and tags.team = 'risk' AND creation_time >= 0", []cmp{{Attribute, "name", Like, str("exp%")},
			{Tag, "team", Eq, str("risk")}, {Attribute, "creation_time", Ge, num("0", 0)}},
			"attributes.name LIKE 'exp%' AND tags.team = 'risk' AND attributes.creation_time >= 0"},
		{RegisteredModels, "name = 'm' AND tag.k != 'v'", []cmp{{Attribute, "name", Eq, str("m")}, {Tag, "k", Ne, str("v")}},
			"attributes.name = 'm' AND tags.k != 'v'"},
		{ModelVersions, "run_id IN ('r') AND version_number > 2 AND source_path ILIKE '%x'", []cmp{{Attribute, "run_id", In, list("r")},
			{Attribute, "version_number", Gt, num("2", 2)}, {Attribute, "source_path", ILike, str("%x")}},
			"attributes.run_id IN ('r') AND attributes.version_number > 2 AND attributes.source_path ILIKE '%x'"},
	}
	for _, c := range cases {
		e, err := Parse(c.kind, c.filter)
		if err != nil {
			t.Errorf("%s %q: %v", c.kind.Name(), c.filter, err)
			continue
		}
		var want Expr
		for _, w := range c.want {
			want.Clauses = append(want.Clauses, Comparison{Type: w.t, Key: w.key, Op: w.op, Value: w.v})
		}
		if !sameExpr(e, want) {
			t.Errorf("%q: got %+v, want %+v", c.filter, e.Clauses, want.Clauses)
		}
		if got := e.String(); got != c.canon {
			t.Errorf("%q: String() = %q, want %q", c.filter, got, c.canon)
		}
		again, err := Parse(c.kind, e.String())
		if err != nil || !sameExpr(again, e) {
			t.Errorf("%q: the canonical form %q re-parses to %+v, %v", c.filter, e.String(), again.Clauses, err)
		}
	}
}

// Positions are 1-based characters; a filter's identifier and value
// positions are kept for errors found later.
func TestParsePositions(t *testing.T) {
	t.Parallel()
	e, err := Parse(Runs, "  métrics.a > 1 AND params.b = 'x'")
	if err == nil {
		t.Fatalf("métrics is not a type: %+v", e)
	}
	var fe *Error
	if !errors.As(err, &fe) || fe.Pos != 3 {
		t.Fatalf("err = %v, want position 3", err)
	}
	if _, err = Parse(Runs, "é = 'x' AND metrics.a > 1"); err == nil || err.(*Error).Pos != 1 {
		t.Fatalf("err = %v", err)
	}
	e, err = Parse(Runs, "tags.é = 'x' AND  metrics.a > 1")
	if err != nil {
		t.Fatal(err)
	}
	if c := e.Clauses[1]; c.Pos != 19 || c.ValuePos != 31 {
		t.Fatalf("second clause at %d, value at %d; want 19 and 31", c.Pos, c.ValuePos)
	}
	if got := e.Clauses[0].Errorf("no %s", "way").Error(); got != "filter: at position 1: no way" {
		t.Fatalf("Errorf: %q", got)
	}
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	long := "metrics.a > 1" + strings.Repeat(" ", MaxFilterBytes)
	many := strings.TrimSuffix(strings.Repeat("metrics.a > 1 AND ", MaxClauses+1), " AND ")
	bigList := "run_id IN (" + strings.TrimSuffix(strings.Repeat("'a',", MaxListItems+1), ",") + ")"
	cases := []struct {
		kind   *Kind
		filter string
		pos    int
		msg    string // a fragment of the message
	}{
		{Runs, "metrics.auc", 12, "expected a comparator"},
		{Runs, "metrics.auc >", 14, "expected a value"},
		{Runs, "metrics.auc > 0.9 AND", 22, "expected a comparison after AND"},
		{Runs, "metrics.auc > 0.9 AND   ", 25, "expected a comparison after AND"},
		{Runs, "metrics.auc > 0.9 OR metrics.auc < 0.1", 19, "OR is not supported"},
		{Runs, "metrics.auc > 0.9 metrics.auc < 0.1", 19, "expected AND, found 'metrics'"},
		{Runs, "metrics.auc > 0.9 ) ", 19, "expected AND"},
		{Runs, "(metrics.auc > 0.9)", 1, "parentheses are not supported"},
		{Runs, "metrics.a > 1 AND (metrics.b > 2)", 19, "parentheses are not supported"},
		{Runs, "NOT metrics.a > 1", 1, "NOT is only supported as NOT IN"},
		{Runs, "run_id NOT LIKE 'a'", 8, "NOT is only supported as NOT IN"},
		{Runs, "metrics.a <> 1", 11, "use !="},
		{Runs, "metrics.a == 1", 11, "invalid comparator '=='"},
		{Runs, "metrics.a ! 1", 11, "invalid comparator '!'"},
		{Runs, "metrics.a BETWEEN 1", 11, "invalid comparator 'BETWEEN'"},
		{Runs, "metrics.a LIKE 1", 11, "invalid comparator 'LIKE' for metric 'a'"},
		{Runs, "metrics.a > '1'", 13, "expected a number for metric 'a'"},
		{Runs, "metrics.a > abc", 13, "not quoted"},
		{Runs, "metrics.a > 1x", 13, "invalid number 1x"},
		{Runs, "metrics.a > 1e", 13, "invalid number 1e"},
		{Runs, "metrics.a > -", 13, "invalid number -"},
		{Runs, "metrics.a > 1e999", 13, "out of range"},
		{Runs, "params.lr = 0.01", 13, "must be a quoted string"},
		{Runs, "params.lr = adam", 13, "the value adam is not quoted"},
		{Runs, "params.lr = `adam`", 13, "not backticks"},
		{Runs, "params.lr = 'adam", 13, "unterminated string"},
		{Runs, "params.lr > 'a'", 11, "invalid comparator '>' for param 'lr'"},
		{Runs, "params.lr IN ('a')", 11, "invalid comparator 'IN'"},
		{Runs, "params.lr = ('a')", 13, "only allowed after IN"},
		{Runs, "params.lr LIKE 'a\\'", 16, "escape character"},
		{Runs, "params.\"lr = 'a'", 8, "unterminated quoted key"},
		{Runs, "params.`` = 'a'", 8, "the key is empty"},
		{Runs, "params. = 'a'", 8, "expected a key after 'params.'"},
		{Runs, "foo.bar = 'a'", 1, "invalid entity type 'foo'"},
		{Runs, "foo = 'a'", 1, "invalid attribute key 'foo'"},
		{Runs, "attributes.lifecycle_stage = 'active'", 12, "invalid attribute key 'lifecycle_stage'"},
		{Runs, "datasets.size = 'a'", 10, "invalid dataset key 'size'"},
		{Runs, "= 'a'", 1, "expected an identifier"},
		{Runs, "run_id IN 'a'", 11, "parenthesized list"},
		{Runs, "run_id IN ()", 12, "the list is empty"},
		{Runs, "run_id IN ('a' 'b')", 16, "expected ',' or ')'"},
		{Runs, "run_id IN ('a', b)", 17, "quoted string"},
		{Runs, "run_id IN ('a',", 16, "unterminated list"},
		{Runs, "run_id IN ('a'", 15, "unterminated list"},
		{Runs, "status IN ('a')", 8, "invalid comparator 'IN' for attribute 'status'"},
		{Runs, "start_time > 'x'", 14, "expected a number"},
		{Runs, "start_time LIKE '1%'", 12, "invalid comparator"},
		{Runs, "tags.a = 'x' AND tags.b = \x00", 27, "NUL"},
		{Runs, "tags.é = '\xff'", 11, "not valid UTF-8"},
		{Runs, long, utf8.RuneCountInString(long[:MaxFilterBytes]) + 1, "longer than 4096 bytes"},
		{Runs, many, MaxClauses*18 + 1, "at most 20 comparisons"},
		{Runs, bigList, 12 + 4*MaxListItems, "at most 1000 strings"},
		{Experiments, "metrics.a > 1", 1, "invalid entity type 'metrics'"},
		{Experiments, "run.x = 'a'", 1, "invalid entity type 'run'"},
		{Experiments, "experiment_id = 'a'", 1, "invalid attribute key 'experiment_id'"},
		{Experiments, "name > 'a'", 6, "invalid comparator"},
		{RegisteredModels, "creation_timestamp > 1", 1, "invalid attribute key"},
		{ModelVersions, "params.a = 'b'", 1, "invalid entity type"},
	}
	for _, c := range cases {
		_, err := Parse(c.kind, c.filter)
		var fe *Error
		if !errors.As(err, &fe) {
			t.Errorf("%q: err = %v, want an *Error", c.filter, err)
			continue
		}
		if fe.Pos != c.pos || !strings.Contains(fe.Msg, c.msg) || fe.OrderBy {
			t.Errorf("%q: %v; want position %d and %q", c.filter, err, c.pos, c.msg)
		}
		if want := "filter: at position "; !strings.HasPrefix(fe.Error(), want) {
			t.Errorf("%q: Error() = %q", c.filter, fe.Error())
		}
	}
}

func TestParseOrderBy(t *testing.T) {
	t.Parallel()
	got, err := ParseOrderBy(Runs, []string{"metrics.auc DESC", " params.`learning rate` asc ", "created", "tags.t Desc", "`run name`"})
	if err != nil {
		t.Fatal(err)
	}
	want := []OrderKey{{Metric, "auc", true}, {Param, "learning rate", false}, {Attribute, "start_time", false}, {Tag, "t", true}, {Attribute, "run_name", false}}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if s := got[1].String(); s != "params.`learning rate` ASC" {
		t.Errorf("String() = %q", s)
	}
	if x, err := ParseOrderBy(Experiments, []string{"experiment_id", "attributes.last_update_time DESC"}); err != nil || len(x) != 2 {
		t.Fatalf("experiments: %+v %v", x, err)
	}
	if x, err := ParseOrderBy(RegisteredModels, []string{"timestamp DESC"}); err != nil || x[0].Key != "last_updated_timestamp" {
		t.Fatalf("registered models: %+v %v", x, err)
	}
	if x, err := ParseOrderBy(Runs, nil); err != nil || len(x) != 0 {
		t.Fatalf("no order_by: %+v %v", x, err)
	}

	for _, c := range []struct {
		kind    *Kind
		entries []string
		entry   int
		pos     int
		msg     string
	}{
		{Runs, []string{"metrics.a", "metrics.b DESC", "metrics.a DESC"}, 2, 1, "duplicate fields"},
		{Runs, []string{"created", "start_time"}, 1, 1, "duplicate fields"},
		{Runs, []string{"metrics.a", ""}, 1, 1, "empty"},
		{Runs, []string{"metrics.a downward"}, 0, 11, "expected ASC or DESC"},
		{Runs, []string{"metrics.a DESC x"}, 0, 16, "expected the end"},
		{Runs, []string{"metrics.a, metrics.b"}, 0, 10, "expected ASC or DESC"},
		{Runs, []string{"lifecycle_stage"}, 0, 1, "invalid order_by attribute key"},
		{Runs, []string{"datasets.name"}, 0, 1, "cannot be ordered"},
		{Experiments, []string{"tags.a"}, 0, 1, "cannot be ordered"},
		{Experiments, []string{"name", "bogus"}, 1, 1, "invalid order_by attribute key 'bogus'"},
		{ModelVersions, []string{"run_id"}, 0, 1, "invalid order_by"},
		{Runs, []string{"x.y"}, 0, 1, "invalid entity type"},
		{Runs, make([]string, MaxOrderBy+1), MaxOrderBy, 1, "at most 10 entries"},
		{Runs, []string{"tags.\xff"}, 0, 6, "the entry is not valid UTF-8"},
	} {
		_, err := ParseOrderBy(c.kind, c.entries)
		var fe *Error
		if !errors.As(err, &fe) || !fe.OrderBy || fe.Entry != c.entry || fe.Pos != c.pos || !strings.Contains(fe.Error(), c.msg) {
			t.Errorf("%q: %v; want entry %d position %d %q", c.entries, err, c.entry, c.pos, c.msg)
		}
	}
	_, err = ParseOrderBy(Runs, []string{"metrics.a", "metrics.a"})
	if want := "order_by[1]: at position 1: `order_by` contains duplicate fields: metrics.a"; err == nil || err.Error() != want {
		t.Fatalf("Error() = %v, want %q", err, want)
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	v := Values{
		Metrics:    map[string]float64{"auc": 0.93, "latency_ms": 42, "nan": math.NaN(), "inf": math.Inf(1)},
		Params:     map[string]string{"optimizer": "Adam", "lr": "0.01"},
		Tags:       map[string]string{"team": "risk-eu", "pct": "50%"},
		Attributes: map[string]any{"status": "FINISHED", "start_time": int64(1700000000000), "run_id": "abc", "score": 1.5},
	}
	cases := []struct {
		filter string
		want   bool
	}{
		{"", true},
		{"metrics.auc >= 0.9 AND metrics.latency_ms < 50", true},
		{"metrics.auc >= 0.95 AND metrics.latency_ms < 50", false},
		{"metrics.auc > 0.9 AND metrics.missing < 50", false},
		{"metrics.missing != 1", false},
		{"metrics.auc = 0.93", true},
		{"metrics.auc != 0.93", false},
		{"metrics.auc <= 0.93", true},
		{"metrics.nan >= 0", false},
		{"metrics.nan < 0", false},
		{"metrics.nan = 0", false},
		{"metrics.nan != 0", true},
		{"metrics.inf > 1e308", true},
		{"params.optimizer = 'Adam'", true},
		{"params.optimizer = 'adam'", false},
		{"params.optimizer LIKE 'Ad%'", true},
		{"params.optimizer LIKE 'ad%'", false},
		{"params.optimizer ILIKE 'AD_M'", true},
		{"params.optimizer != 'sgd'", true},
		{"params.missing != 'sgd'", false},
		{"tags.team LIKE '%-eu'", true},
		{"tags.team LIKE 'risk'", false},
		{"tags.pct LIKE '50\\%'", true},
		{"tags.pct LIKE '5\\_%'", false},
		{"attributes.status = 'FINISHED'", true},
		{"attributes.status LIKE 'FIN%' AND attributes.run_id IN ('x', 'abc')", true},
		{"attributes.run_id NOT IN ('x', 'abc')", false},
		{"attributes.run_id NOT IN ('x')", true},
		{"start_time > 1699999999999", true},
		{"start_time = 1700000000000", true},
		{"start_time < 1.7e12", false},
		{"end_time > 0", false},
		{"datasets.name = 'x'", false},
	}
	for _, c := range cases {
		e, err := Parse(Runs, c.filter)
		if err != nil {
			t.Fatalf("%q: %v", c.filter, err)
		}
		if got := e.Match(v); got != c.want {
			t.Errorf("%q: Match = %v, want %v", c.filter, got, c.want)
		}
	}
}

func TestMatchLike(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		s, p string
		want bool
	}{
		{"", "", true},
		{"", "%", true},
		{"a", "", false},
		{"abc", "a%c", true},
		{"abc", "a_c", true},
		{"abbbc", "a%b%c", true},
		{"abc", "%b", false},
		{"a%c", "a\\%c", true},
		{"abc", "a\\%c", false},
		{"a\\c", "a\\\\c", true},
		{"ünï", "_n_", true},
		{"mississippi", "%iss%ppi", true},
		{"mississippi", "%iss%ppx", false},
		{"aaa", "%%a%%", true},
	} {
		if got := MatchLike(c.s, c.p); got != c.want {
			t.Errorf("MatchLike(%q, %q) = %v", c.s, c.p, got)
		}
	}
}

// FuzzParse: parsing never panics, an error carries a position within the
// filter (1 … characters+1), and a parsed filter's canonical form parses
// to the same expression (and is its own canonical form).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "metrics.auc > 0.9", "metrics.auc >= 0.9 AND metrics.latency_ms < 50",
		"params.lr = '0.01' and tags.`mlflow.runName` LIKE 'x%'", `tags."a b" ILIKE "%X%"`,
		"attributes.run_id IN ('a', 'b') AND run_id NOT IN (\"c\")", "created > 1700000000000",
		"`Run name` = 'it''s'", "metrics.a <> 1", "(a = 1)", "metrics.a > 1 OR b", "datasets.digest IN ('x')",
		"metrics.a > -1.5e-3", "tags.x = '\\'", "params.x LIKE '\\\\'", "run name = 'x'", "é", "\xff",
		"importance.age < 0.1 AND metrics.auc >= 0.9", "importances.`zip code` <= 1e-3",
	} {
		f.Add(s)
	}
	kinds := []*Kind{Runs, Experiments, RegisteredModels, ModelVersions, Gates}
	f.Fuzz(func(t *testing.T, s string) {
		for _, k := range kinds {
			e, err := Parse(k, s)
			if err != nil {
				var fe *Error
				if !errors.As(err, &fe) {
					t.Fatalf("%s %q: error %T %v", k.Name(), s, err, err)
				}
				if n := utf8.RuneCountInString(s); fe.Pos < 1 || fe.Pos > n+1 {
					t.Fatalf("%s %q: position %d outside 1…%d", k.Name(), s, fe.Pos, n+1)
				}
				continue
			}
			canon := e.String()
			again, err := Parse(k, canon)
			if err != nil {
				t.Fatalf("%s %q: canonical %q does not parse: %v", k.Name(), s, canon, err)
			}
			if !sameExpr(e, again) {
				t.Fatalf("%s %q: canonical %q parses to %+v, not %+v", k.Name(), s, canon, again.Clauses, e.Clauses)
			}
			if again.String() != canon {
				t.Fatalf("%s %q: canonical form is not stable: %q then %q", k.Name(), s, canon, again.String())
			}
		}
		if _, err := ParseOrderBy(Runs, []string{s}); err != nil {
			var fe *Error
			if !errors.As(err, &fe) || !fe.OrderBy || fe.Pos < 1 || fe.Pos > utf8.RuneCountInString(s)+1 {
				t.Fatalf("order_by %q: %v", s, err)
			}
		}
	})
}
