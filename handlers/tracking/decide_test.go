package tracking_test

import (
	"fmt"
	"maps"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

// Deciders are table-tested: given events (folded with the same Evolve
// functions replay uses), when a command, then events or a typed error.

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

const (
	pid   = "11111111-1111-4111-8111-111111111111"
	xid   = "22222222-2222-4222-8222-222222222222"
	other = "33333333-3333-4333-8333-333333333333"
	rid   = "abcdef01-2345-4678-9abc-def012345678"
	uid   = "44444444-4444-4444-8444-444444444444"
	rn    = tracking.RunNameTag
)

var (
	xSubj = events.Subject(events.AggExperiment, xid)
	rSubj = events.Subject(events.AggRun, rid)
)

// nameSubj is the reservation subject of an experiment name in project pid;
// the key is "<project id>/<name>", spelled out here to pin the format.
func nameSubj(name string) string {
	return events.ReservationSubject(events.AggExperimentName, pid+"/"+name)
}

// ev is a stored event of type typ at time at.
func ev(t *testing.T, at time.Time, subject, typ string, data any) events.Envelope {
	t.Helper()
	e, err := events.New(events.Meta{Actor: events.SystemActor, Time: at}, subject, typ, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func fold[S any](t *testing.T, evolve handlers.Evolve[S], evs []events.Envelope) S {
	t.Helper()
	var s S
	for i, e := range evs {
		e.Sequence = uint64(i + 1)
		var err error
		if s, err = evolve(s, e); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// replay turns decided changes into stored events (all at time at).
func replay(t *testing.T, at time.Time, changes []handlers.Change) []events.Envelope {
	t.Helper()
	var out []events.Envelope
	for _, c := range changes {
		out = append(out, ev(t, at, c.Subject, c.Type, c.Data))
	}
	return out
}

func cat(lists ...[]events.Envelope) []events.Envelope {
	var out []events.Envelope
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// Given-event builders.

func expCreated(t *testing.T, name string, tags map[string]string) events.Envelope {
	return ev(t, t0, xSubj, events.ExperimentCreated, events.ExperimentCreatedData{
		ExperimentID: xid, ProjectID: pid, Name: name, ArtifactLocation: "s3://bucket/" + xid, Tags: tags})
}

func expRenamed(t *testing.T, from, to string) events.Envelope {
	return ev(t, t0, xSubj, events.ExperimentRenamed, events.ExperimentRenamedData{
		ExperimentID: xid, ProjectID: pid, Name: to, PreviousName: from})
}

func expTagsSet(t *testing.T, tags map[string]string) events.Envelope {
	return ev(t, t0, xSubj, events.ExperimentTagsSet, events.TagsSetData{ID: xid, Tags: tags})
}

func expTagDeleted(t *testing.T, key string) events.Envelope {
	return ev(t, t0, xSubj, events.ExperimentTagDeleted, events.TagDeletedData{ID: xid, Key: key})
}

func expDeleted(t *testing.T) events.Envelope {
	return ev(t, t0, xSubj, events.ExperimentDeleted, events.ExperimentLifecycleData{ExperimentID: xid, ProjectID: pid})
}

func expRestored(t *testing.T) events.Envelope {
	return ev(t, t0, xSubj, events.ExperimentRestored, events.ExperimentLifecycleData{ExperimentID: xid, ProjectID: pid})
}

func reserved(t *testing.T, name, owner string) events.Envelope {
	return ev(t, t0, nameSubj(name), events.NameReserved,
		events.NameReservedData{Kind: "experiment", Name: name, OwnerID: owner, Scope: pid})
}

func released(t *testing.T, name, owner string) events.Envelope {
	return ev(t, t0, nameSubj(name), events.NameReleased,
		events.NameReleasedData{Kind: "experiment", Name: name, OwnerID: owner, Scope: pid})
}

func runCreated(t *testing.T, name string, tags map[string]string) events.Envelope {
	all := map[string]string{rn: name}
	maps.Copy(all, tags)
	return ev(t, t0, rSubj, events.RunCreated, events.RunCreatedData{
		RunID: rid, ExperimentID: xid, ProjectID: pid, Name: name, UserID: uid, StartTime: 1000, Tags: all})
}

func runUpdated(t *testing.T, d events.RunUpdatedData) events.Envelope {
	d.RunID = rid
	return ev(t, t0, rSubj, events.RunUpdated, d)
}

func runParams(t *testing.T, params ...events.Param) events.Envelope {
	return ev(t, t0, rSubj, events.RunParamsLogged, events.RunParamsLoggedData{RunID: rid, Params: params})
}

func runTagsSet(t *testing.T, tags map[string]string) events.Envelope {
	return ev(t, t0, rSubj, events.RunTagsSet, events.TagsSetData{ID: rid, Tags: tags})
}

func runTagDeleted(t *testing.T, key string) events.Envelope {
	return ev(t, t0, rSubj, events.RunTagDeleted, events.TagDeletedData{ID: rid, Key: key})
}

func runDeleted(t *testing.T) events.Envelope {
	return ev(t, t0, rSubj, events.RunDeleted, events.RunLifecycleData{RunID: rid, ExperimentID: xid})
}

func runRestored(t *testing.T) events.Envelope {
	return ev(t, t0, rSubj, events.RunRestored, events.RunLifecycleData{RunID: rid, ExperimentID: xid})
}

// Expected-change builders.

func reserveChange(name string) handlers.Change {
	return handlers.Change{Subject: nameSubj(name), Type: events.NameReserved,
		Data: events.NameReservedData{Kind: "experiment", Name: name, OwnerID: xid, Scope: pid}}
}

func releaseChange(name string) handlers.Change {
	return handlers.Change{Subject: nameSubj(name), Type: events.NameReleased,
		Data: events.NameReleasedData{Kind: "experiment", Name: name, OwnerID: xid, Scope: pid}}
}

func runTagsChange(tags map[string]string) handlers.Change {
	return handlers.Change{Subject: rSubj, Type: events.RunTagsSet, Data: events.TagsSetData{ID: rid, Tags: tags}}
}

func runUpdatedChange(d events.RunUpdatedData) handlers.Change {
	d.RunID = rid
	return handlers.Change{Subject: rSubj, Type: events.RunUpdated, Data: d}
}

func strp(s string) *string { return &s }
func i64p(n int64) *int64   { return &n }

// wantErr is an expected typed failure; the zero value means success.
type wantErr struct {
	kind handlers.Kind
	code string
}

var (
	invalid         = wantErr{handlers.Invalid, "validation-failed"}
	notFound        = wantErr{handlers.NotFound, "not-found"}
	expDeletedErr   = wantErr{handlers.Conflict, "experiment-deleted"}
	expExists       = wantErr{handlers.Conflict, "experiment-exists"}
	runDeletedErr   = wantErr{handlers.Conflict, "run-deleted"}
	paramOverwrite  = wantErr{handlers.Invalid, "param-overwrite"}
	noChanges       []handlers.Change
	experimentGiven = func(t *testing.T) []events.Envelope { return []events.Envelope{expCreated(t, "exp", nil)} }
)

func checkErr(t *testing.T, err error, want wantErr) {
	t.Helper()
	if want.kind == 0 {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	e, ok := handlers.AsError(err)
	if !ok {
		t.Fatalf("error = %v, want %d/%s", err, want.kind, want.code)
	}
	if e.Kind != want.kind || e.Code != want.code {
		t.Fatalf("error = kind %d code %q (%s), want kind %d code %q", e.Kind, e.Code, e.Detail, want.kind, want.code)
	}
}

// checkChanges compares decided changes and checks each is a catalogued
// type on a subject of the right aggregate (what Build will insist on).
func checkChanges(t *testing.T, got, want []handlers.Change) {
	t.Helper()
	for _, c := range got {
		if err := events.CheckSubject(c.Type, c.Subject); err != nil {
			t.Fatalf("change %s on %s: %v", c.Type, c.Subject, err)
		}
	}
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes:\n got  %+v\n want %+v", got, want)
	}
}

func detail(t *testing.T, err error) string {
	t.Helper()
	e, ok := handlers.AsError(err)
	if !ok {
		t.Fatalf("error = %v, want a typed error", err)
	}
	return e.Detail
}

// manyTags is n tags k0..k(n-1) with value v.
func manyTags(n int, v string) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m["k"+strconv.Itoa(i)] = v
	}
	return m
}

func TestValidStatus(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"} {
		if !tracking.ValidStatus(s) {
			t.Errorf("%s refused", s)
		}
	}
	for _, s := range []string{"", "running", "Finished", "DONE", " RUNNING"} {
		if tracking.ValidStatus(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestValidKey(t *testing.T) {
	t.Parallel()
	good := []string{
		"a", "Ab-5_", "a/b/c", "a.b.c", ".a", "b.", "a b/c d", "train/loss", "learning_rate", "x-y.z w/v_u",
		"a..b", "..a", "a/..b", "a/.b", "mlflow.runName", " ", strings.Repeat("k", tracking.MaxKeyLen),
		// As Python's \w in MLflow's pattern: letters and digits of any script; and colons.
		"é", "café", "日本", "٣", "ｆ", "a:b", strings.Repeat("日", tracking.MaxKeyLen),
	}
	for _, k := range good {
		if err := tracking.ValidKey("param", k); err != nil {
			t.Errorf("ValidKey(%q) = %v", k, err)
		}
	}
	bad := map[string]string{
		"empty":            "",
		"251 characters":   strings.Repeat("日", tracking.MaxKeyLen+1),
		"dot":              ".",
		"dot dot":          "..",
		"absolute":         "/abs",
		"slash":            "/",
		"double slash":     "//",
		"parent inside":    "a/../b",
		"parent first":     "../a",
		"parent last":      "a/..",
		"backslash":        `a\b`,
		"backslash parent": `..\a`,
		"tab":              "a\tb",
		"newline":          "a\nb",
		"trailing newline": "a\n", // Go's $ is end of text (Python's also matches before a final \n)
		"NUL":              "a\x00b",
		"not UTF-8":        "a\xffb",
		"comma":            "a,b",
	}
	for name, k := range bad {
		t.Run(name, func(t *testing.T) {
			err := tracking.ValidKey("param", k)
			checkErr(t, err, invalid)
			if d := detail(t, err); !strings.Contains(d, "invalid param key") {
				t.Fatalf("detail %q does not name the kind", d)
			}
		})
	}
	// The detail quotes at most 40 bytes of a long key.
	err := tracking.ValidKey("tag", strings.Repeat("x", 300))
	if d := detail(t, err); !strings.HasPrefix(d, "invalid tag key") || !strings.Contains(d, "…") || len(d) > 200 {
		t.Fatalf("detail = %q", d)
	}
}

func TestCheckTags(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		tags map[string]string
		err  wantErr
	}{
		{name: "nil", tags: nil},
		{name: "empty", tags: map[string]string{}},
		{name: "empty value", tags: map[string]string{"a": ""}},
		{name: "multi-line value", tags: map[string]string{"note": "line 1\nline 2\r\n\tindented"}},
		{name: "unicode value", tags: map[string]string{"note": "café 日本"}},
		{name: "100 tags", tags: manyTags(tracking.MaxTagsPerCall, "v")},
		{name: "101 tags", tags: manyTags(tracking.MaxTagsPerCall+1, "v"), err: invalid},
		{name: "value of 8000 bytes", tags: map[string]string{"a": strings.Repeat("v", tracking.MaxTagValueLen)}},
		{name: "value of 8001 bytes", tags: map[string]string{"a": strings.Repeat("v", tracking.MaxTagValueLen+1)}, err: invalid},
		{name: "value of 8000 bytes in 4000 runes", tags: map[string]string{"a": strings.Repeat("é", tracking.MaxTagValueLen/2)}},
		{name: "value of 4001 two-byte runes", tags: map[string]string{"a": strings.Repeat("é", tracking.MaxTagValueLen/2+1)}, err: invalid},
		{name: "NUL in value", tags: map[string]string{"a": "x\x00y"}, err: invalid},
		{name: "escape in value", tags: map[string]string{"a": "\x1b[31mred"}, err: invalid},
		{name: "DEL in value", tags: map[string]string{"a": "x\x7f"}, err: invalid},
		{name: "value not UTF-8", tags: map[string]string{"a": "\xff"}, err: invalid},
		{name: "bad key", tags: map[string]string{"ok": "v", "a/../b": "v"}, err: invalid},
		{name: "empty key", tags: map[string]string{"": "v"}, err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkErr(t, tracking.CheckTags(tc.tags), tc.err)
		})
	}
}

func TestExperimentNameKey(t *testing.T) {
	t.Parallel()
	if got := tracking.ExperimentNameKey(pid, "My Exp"); got != pid+"/My Exp" {
		t.Fatalf("key = %q", got)
	}
	// Case-sensitive, as in MLflow: two names, two reservations.
	if nameSubj("exp") == nameSubj("Exp") {
		t.Fatal("names differing in case share a reservation")
	}
}

func TestDecideCreateExperiment(t *testing.T) {
	t.Parallel()
	ok := func(name string, tags map[string]string, artifact string) []handlers.Change {
		return []handlers.Change{
			reserveChange(name),
			{Subject: xSubj, Type: events.ExperimentCreated, Data: events.ExperimentCreatedData{
				ExperimentID: xid, ProjectID: pid, Name: name, ArtifactLocation: artifact, Tags: tags}},
		}
	}
	tags := map[string]string{"team": "vision", "mlflow.note.content": "hello\nworld"}
	cases := []struct {
		name     string
		given    []events.Envelope // on the name's reservation subject
		cmdName  string
		tags     map[string]string
		artifact string
		want     []handlers.Change
		err      wantErr
	}{
		{name: "fresh", cmdName: "exp", want: ok("exp", nil, "")},
		{name: "padded name refused, not trimmed", cmdName: "  exp \t", err: invalid},
		{name: "inner spaces kept", cmdName: "my  exp", want: ok("my  exp", nil, "")},
		{name: "slashes allowed in names", cmdName: "/Users/ada/exp", want: ok("/Users/ada/exp", nil, "")},
		{name: "tags and artifact location", cmdName: "exp", tags: tags, artifact: "s3://bucket/x",
			want: ok("exp", tags, "s3://bucket/x")},
		{name: "name of 500 runes", cmdName: strings.Repeat("é", tracking.MaxNameLen), want: ok(strings.Repeat("é", tracking.MaxNameLen), nil, "")},
		{name: "artifact location of 2000 bytes", cmdName: "exp", artifact: strings.Repeat("a", 2000), want: ok("exp", nil, strings.Repeat("a", 2000))},
		{name: "name released earlier", given: []events.Envelope{reserved(t, "exp", other), released(t, "exp", other)},
			cmdName: "exp", want: ok("exp", nil, "")},
		{name: "name taken", given: []events.Envelope{reserved(t, "exp", other)}, cmdName: "exp", err: expExists},
		{name: "padded form of a taken name refused", given: []events.Envelope{reserved(t, "exp", other)}, cmdName: " exp ", err: invalid},
		{name: "empty name", cmdName: "", err: invalid},
		{name: "blank name", cmdName: " \t ", err: invalid},
		{name: "name of 501 runes", cmdName: strings.Repeat("é", tracking.MaxNameLen+1), err: invalid},
		{name: "newline in name", cmdName: "a\nb", err: invalid},
		{name: "carriage return in name", cmdName: "a\rb", err: invalid},
		{name: "NUL in name", cmdName: "a\x00b", err: invalid},
		{name: "name not UTF-8", cmdName: "exp\xff", err: invalid},
		{name: "bad tag key", cmdName: "exp", tags: map[string]string{"../x": "v"}, err: invalid},
		{name: "101 tags", cmdName: "exp", tags: manyTags(tracking.MaxTagsPerCall+1, "v"), err: invalid},
		{name: "artifact location of 2001 bytes", cmdName: "exp", artifact: strings.Repeat("a", 2001), err: invalid},
		{name: "NUL in artifact location", cmdName: "exp", artifact: "s3://x\x00", err: invalid},
		{name: "validation before conflict", given: []events.Envelope{reserved(t, "exp", other)}, cmdName: "exp",
			artifact: strings.Repeat("a", 2001), err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideCreateExperiment(fold(t, tracking.EvolveReservation, tc.given), tracking.CreateExperiment{
				ExperimentID: xid, ProjectID: pid, Name: tc.cmdName, ArtifactLocation: tc.artifact, Tags: tc.tags})
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestDecideCreateExperimentReplay(t *testing.T) {
	t.Parallel()
	got, err := tracking.DecideCreateExperiment(tracking.ReservationState{}, tracking.CreateExperiment{
		ExperimentID: xid, ProjectID: pid, Name: "exp", ArtifactLocation: "s3://b", Tags: map[string]string{"a": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	evs := replay(t, t0, got)
	res := fold(t, tracking.EvolveReservation, evs[:1])
	if !res.Taken || res.OwnerID != xid {
		t.Fatalf("reservation = %+v", res)
	}
	x := fold(t, tracking.EvolveExperiment, evs[1:])
	want := tracking.ExperimentState{Created: true, ID: xid, ProjectID: pid, Name: "exp", ArtifactLocation: "s3://b",
		Tags: map[string]string{"a": "1"}, CreatedAt: t0, UpdatedAt: t0}
	if !reflect.DeepEqual(x, want) {
		t.Fatalf("experiment = %+v\nwant %+v", x, want)
	}
	// The name is now taken for a second experiment.
	_, err = tracking.DecideCreateExperiment(res, tracking.CreateExperiment{ExperimentID: other, ProjectID: pid, Name: "exp"})
	checkErr(t, err, expExists)
}

func TestDecideRenameExperiment(t *testing.T) {
	t.Parallel()
	renamed := func(from, to string) []handlers.Change {
		return []handlers.Change{
			reserveChange(to),
			releaseChange(from),
			{Subject: xSubj, Type: events.ExperimentRenamed, Data: events.ExperimentRenamedData{
				ExperimentID: xid, ProjectID: pid, Name: to, PreviousName: from}},
		}
	}
	active := experimentGiven(t)
	cases := []struct {
		name      string
		given     []events.Envelope
		nameGiven []events.Envelope // on the new name's reservation subject
		newName   string
		want      []handlers.Change
		err       wantErr
	}{
		{name: "rename", given: active, newName: "new", want: renamed("exp", "new")},
		{name: "padded new name refused", given: active, newName: "  new  ", err: invalid},
		{name: "case change is a rename", given: active, newName: "Exp", want: renamed("exp", "Exp")},
		{name: "after an earlier rename the current name is released", given: cat(active, []events.Envelope{expRenamed(t, "exp", "mid")}),
			newName: "new", want: renamed("mid", "new")},
		{name: "back to a released name", given: cat(active, []events.Envelope{expRenamed(t, "exp", "mid")}),
			nameGiven: []events.Envelope{reserved(t, "exp", xid), released(t, "exp", xid)}, newName: "exp", want: renamed("mid", "exp")},
		{name: "restored experiment", given: cat(active, []events.Envelope{expDeleted(t), expRestored(t)}), newName: "new",
			want: renamed("exp", "new")},
		{name: "no-op: same name", given: active, newName: "exp", want: noChanges},
		{name: "same name padded refused", given: active, newName: " exp ", err: invalid},
		{name: "no-op: same name even though reserved (by itself)", given: active,
			nameGiven: []events.Envelope{reserved(t, "exp", xid)}, newName: "exp", want: noChanges},
		{name: "name taken", given: active, nameGiven: []events.Envelope{reserved(t, "new", other)}, newName: "new", err: expExists},
		{name: "not found", newName: "new", err: notFound},
		{name: "deleted", given: cat(active, []events.Envelope{expDeleted(t)}), newName: "new", err: expDeletedErr},
		{name: "deleted, same name", given: cat(active, []events.Envelope{expDeleted(t)}), newName: "exp", err: expDeletedErr},
		{name: "empty name", given: active, newName: "", err: invalid},
		{name: "blank name", given: active, newName: "   ", err: invalid},
		{name: "newline", given: active, newName: "a\nb", err: invalid},
		{name: "name of 501 runes", given: active, newName: strings.Repeat("x", tracking.MaxNameLen+1), err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideRenameExperiment(fold(t, tracking.EvolveExperiment, tc.given),
				fold(t, tracking.EvolveReservation, tc.nameGiven), tc.newName)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestDecideRenameExperimentReplay(t *testing.T) {
	t.Parallel()
	given := []events.Envelope{reserved(t, "exp", xid), expCreated(t, "exp", nil)}
	x := fold(t, tracking.EvolveExperiment, given[1:])
	got, err := tracking.DecideRenameExperiment(x, tracking.ReservationState{}, "new")
	if err != nil {
		t.Fatal(err)
	}
	evs := replay(t, t0.Add(time.Hour), got)
	if res := fold(t, tracking.EvolveReservation, evs[:1]); !res.Taken || res.OwnerID != xid {
		t.Fatalf("new name = %+v", res)
	}
	if res := fold(t, tracking.EvolveReservation, []events.Envelope{given[0], evs[1]}); res.Taken {
		t.Fatalf("old name still taken: %+v", res)
	}
	x = fold(t, tracking.EvolveExperiment, cat(given[1:], evs[2:]))
	if x.Name != "new" || !x.CreatedAt.Equal(t0) || !x.UpdatedAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("experiment = %+v", x)
	}
}

func TestDecideSetExperimentTags(t *testing.T) {
	t.Parallel()
	set := func(tags map[string]string) []handlers.Change {
		return []handlers.Change{{Subject: xSubj, Type: events.ExperimentTagsSet, Data: events.TagsSetData{ID: xid, Tags: tags}}}
	}
	tagged := []events.Envelope{expCreated(t, "exp", map[string]string{"a": "1", "b": "2"})}
	cases := []struct {
		name  string
		given []events.Envelope
		tags  map[string]string
		want  []handlers.Change
		err   wantErr
	}{
		{name: "only changed tags", given: tagged, tags: map[string]string{"a": "1", "b": "3", "c": "4"},
			want: set(map[string]string{"b": "3", "c": "4"})},
		{name: "on an experiment created without tags", given: experimentGiven(t), tags: map[string]string{"a": "1"},
			want: set(map[string]string{"a": "1"})},
		{name: "empty value differs from absent", given: experimentGiven(t), tags: map[string]string{"a": ""},
			want: set(map[string]string{"a": ""})},
		{name: "set again after deletion", given: cat(tagged, []events.Envelope{expTagDeleted(t, "a")}),
			tags: map[string]string{"a": "1"}, want: set(map[string]string{"a": "1"})},
		{name: "set by an earlier tags_set", given: cat(tagged, []events.Envelope{expTagsSet(t, map[string]string{"c": "9"})}),
			tags: map[string]string{"c": "9", "d": "1"}, want: set(map[string]string{"d": "1"})},
		{name: "no-op: all equal", given: tagged, tags: map[string]string{"a": "1", "b": "2"}, want: noChanges},
		{name: "no-op: empty", given: tagged, tags: map[string]string{}, want: noChanges},
		{name: "no-op: nil", given: tagged, want: noChanges},
		{name: "not found", tags: map[string]string{"a": "1"}, err: notFound},
		{name: "deleted", given: cat(tagged, []events.Envelope{expDeleted(t)}), tags: map[string]string{"z": "1"}, err: expDeletedErr},
		{name: "bad key", given: tagged, tags: map[string]string{"/abs": "1"}, err: invalid},
		{name: "bad value even when unchanged elsewhere", given: tagged, tags: map[string]string{"a": "1", "c": "\x00"}, err: invalid},
		{name: "101 tags", given: tagged, tags: manyTags(tracking.MaxTagsPerCall+1, "v"), err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideSetExperimentTags(fold(t, tracking.EvolveExperiment, tc.given), tc.tags)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestDecideSetExperimentTagsLimit(t *testing.T) {
	t.Parallel()
	x := fold(t, tracking.EvolveExperiment, []events.Envelope{expCreated(t, "exp", nil)})
	x.Tags = manyTags(tracking.MaxTagsPerRun-1, "v")
	if _, err := tracking.DecideSetExperimentTags(x, map[string]string{"new": "1"}); err != nil {
		t.Fatalf("the last free slot: %v", err)
	}
	_, err := tracking.DecideSetExperimentTags(x, map[string]string{"new": "1", "newer": "2"})
	checkErr(t, err, invalid)
}

func TestDecideDeleteExperimentTag(t *testing.T) {
	t.Parallel()
	tagged := []events.Envelope{expCreated(t, "exp", map[string]string{"a": "1"}), expTagsSet(t, map[string]string{"b": "2"})}
	del := func(key string) []handlers.Change {
		return []handlers.Change{{Subject: xSubj, Type: events.ExperimentTagDeleted, Data: events.TagDeletedData{ID: xid, Key: key}}}
	}
	cases := []struct {
		name  string
		given []events.Envelope
		key   string
		want  []handlers.Change
		err   wantErr
	}{
		{name: "from creation", given: tagged, key: "a", want: del("a")},
		{name: "set later", given: tagged, key: "b", want: del("b")},
		{name: "empty value still present", given: cat(tagged, []events.Envelope{expTagsSet(t, map[string]string{"e": ""})}), key: "e", want: del("e")},
		{name: "missing", given: tagged, key: "c", err: notFound},
		{name: "missing on an untagged experiment", given: experimentGiven(t), key: "a", err: notFound},
		{name: "already deleted", given: cat(tagged, []events.Envelope{expTagDeleted(t, "a")}), key: "a", err: notFound},
		{name: "experiment not found", key: "a", err: notFound},
		{name: "experiment deleted", given: cat(tagged, []events.Envelope{expDeleted(t)}), key: "a", err: expDeletedErr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideDeleteExperimentTag(fold(t, tracking.EvolveExperiment, tc.given), tc.key)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestDecideDeleteExperiment(t *testing.T) {
	t.Parallel()
	lifecycle := func(typ string) []handlers.Change {
		return []handlers.Change{{Subject: xSubj, Type: typ, Data: events.ExperimentLifecycleData{ExperimentID: xid, ProjectID: pid}}}
	}
	active := experimentGiven(t)
	deleted := cat(active, []events.Envelope{expDeleted(t)})
	restored := cat(deleted, []events.Envelope{expRestored(t)})
	cases := []struct {
		name  string
		given []events.Envelope
		del   bool
		want  []handlers.Change
		err   wantErr
	}{
		{name: "delete", given: active, del: true, want: lifecycle(events.ExperimentDeleted)},
		{name: "delete twice is a no-op", given: deleted, del: true, want: noChanges},
		{name: "restore", given: deleted, del: false, want: lifecycle(events.ExperimentRestored)},
		{name: "restore an active one is a no-op", given: active, del: false, want: noChanges},
		{name: "restore twice is a no-op", given: restored, del: false, want: noChanges},
		{name: "delete after restore", given: restored, del: true, want: lifecycle(events.ExperimentDeleted)},
		{name: "delete not found", del: true, err: notFound},
		{name: "restore not found", del: false, err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideDeleteExperiment(fold(t, tracking.EvolveExperiment, tc.given), tc.del)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestEvolveExperiment(t *testing.T) {
	t.Parallel()
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	evs := []events.Envelope{
		ev(t, at(0), xSubj, events.ExperimentCreated, events.ExperimentCreatedData{ExperimentID: xid, ProjectID: pid, Name: "exp",
			ArtifactLocation: "s3://b", Tags: map[string]string{"a": "1"}}),
		ev(t, at(1), xSubj, events.ExperimentTagsSet, events.TagsSetData{ID: xid, Tags: map[string]string{"a": "2", "b": "3"}}),
		ev(t, at(2), xSubj, events.ExperimentTagDeleted, events.TagDeletedData{ID: xid, Key: "b"}),
		ev(t, at(3), xSubj, events.ExperimentRenamed, events.ExperimentRenamedData{ExperimentID: xid, ProjectID: pid, Name: "new", PreviousName: "exp"}),
		ev(t, at(4), xSubj, events.ExperimentDeleted, events.ExperimentLifecycleData{ExperimentID: xid, ProjectID: pid}),
	}
	s := fold(t, tracking.EvolveExperiment, evs)
	want := tracking.ExperimentState{Created: true, ID: xid, ProjectID: pid, Name: "new", ArtifactLocation: "s3://b",
		Tags: map[string]string{"a": "2"}, Deleted: true, CreatedAt: at(0), UpdatedAt: at(4)}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("state = %+v\nwant %+v", s, want)
	}
	s = fold(t, tracking.EvolveExperiment, cat(evs, []events.Envelope{
		ev(t, at(5), xSubj, events.ExperimentRestored, events.ExperimentLifecycleData{ExperimentID: xid, ProjectID: pid})}))
	if s.Deleted || !s.UpdatedAt.Equal(at(5)) {
		t.Fatalf("after restore: %+v", s)
	}
	// A tag delete on an untagged experiment (nil map) is harmless.
	if _, err := tracking.EvolveExperiment(fold(t, tracking.EvolveExperiment, experimentGiven(t)), expTagDeleted(t, "x")); err != nil {
		t.Fatal(err)
	}
	// Bad data is an error, not a panic.
	broken := expTagsSet(t, nil)
	broken.Data = []byte(`{"tags": 7}`)
	if _, err := tracking.EvolveExperiment(s, broken); err == nil {
		t.Fatal("undecodable data folded")
	}
}

func TestEvolveExperimentDoesNotShareEventTags(t *testing.T) {
	t.Parallel()
	s := fold(t, tracking.EvolveExperiment, []events.Envelope{expCreated(t, "exp", map[string]string{"a": "1"})})
	c := tracking.CloneExperiment(s)
	c, err := tracking.EvolveExperiment(c, expTagsSet(t, map[string]string{"a": "2", "b": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	c.Tags["direct"] = "x"
	if !reflect.DeepEqual(s.Tags, map[string]string{"a": "1"}) {
		t.Fatalf("original tags changed through the clone: %v", s.Tags)
	}
	if !reflect.DeepEqual(c.Tags, map[string]string{"a": "2", "b": "3", "direct": "x"}) {
		t.Fatalf("clone tags = %v", c.Tags)
	}
}

func TestDecideCreateRun(t *testing.T) {
	t.Parallel()
	created := func(name string, start int64, tags map[string]string) []handlers.Change {
		return []handlers.Change{{Subject: rSubj, Type: events.RunCreated, Data: events.RunCreatedData{
			RunID: rid, ExperimentID: xid, ProjectID: pid, Name: name, UserID: uid, StartTime: start, Tags: tags}}}
	}
	const now = 1_735_732_800_000
	active := experimentGiven(t)
	cases := []struct {
		name     string
		expGiven []events.Envelope
		runGiven []events.Envelope
		cmd      tracking.CreateRun
		want     []handlers.Change
		err      wantErr
	}{
		{name: "name only sets the tag", expGiven: active, cmd: tracking.CreateRun{Name: "train", StartTime: 5},
			want: created("train", 5, map[string]string{rn: "train"})},
		{name: "padded name refused", expGiven: active, cmd: tracking.CreateRun{Name: "  train  ", StartTime: 5}, err: invalid},
		{name: "tag only sets the name", expGiven: active, cmd: tracking.CreateRun{Tags: map[string]string{rn: "train", "a": "1"}, StartTime: 5},
			want: created("train", 5, map[string]string{rn: "train", "a": "1"})},
		{name: "tag only, padded: refused", expGiven: active, cmd: tracking.CreateRun{Tags: map[string]string{rn: " train "}, StartTime: 5}, err: invalid},
		{name: "both equal", expGiven: active, cmd: tracking.CreateRun{Name: "train", Tags: map[string]string{rn: "train"}, StartTime: 5},
			want: created("train", 5, map[string]string{rn: "train"})},
		{name: "padded name with the plain tag refused", expGiven: active, cmd: tracking.CreateRun{Name: " train ", Tags: map[string]string{rn: "train"}, StartTime: 5}, err: invalid},
		{name: "both different", expGiven: active, cmd: tracking.CreateRun{Name: "train", Tags: map[string]string{rn: "eval"}}, err: invalid},
		{name: "neither: generated from the id", expGiven: active, cmd: tracking.CreateRun{StartTime: 5, Tags: map[string]string{"a": "1"}},
			want: created("run-abcdef01", 5, map[string]string{rn: "run-abcdef01", "a": "1"})},
		{name: "blank name: generated", expGiven: active, cmd: tracking.CreateRun{Name: "   ", StartTime: 5},
			want: created("run-abcdef01", 5, map[string]string{rn: "run-abcdef01"})},
		{name: "start time 0 is now", expGiven: active, cmd: tracking.CreateRun{Name: "train", Now: now},
			want: created("train", now, map[string]string{rn: "train"})},
		{name: "start time given is kept", expGiven: active, cmd: tracking.CreateRun{Name: "train", StartTime: 42, Now: now},
			want: created("train", 42, map[string]string{rn: "train"})},
		{name: "negative start time", expGiven: active, cmd: tracking.CreateRun{Name: "train", StartTime: -1, Now: now}, err: invalid},
		{name: "restored experiment", expGiven: cat(active, []events.Envelope{expDeleted(t), expRestored(t)}),
			cmd: tracking.CreateRun{Name: "train", StartTime: 5}, want: created("train", 5, map[string]string{rn: "train"})},
		{name: "deleted experiment", expGiven: cat(active, []events.Envelope{expDeleted(t)}), cmd: tracking.CreateRun{Name: "train"}, err: expDeletedErr},
		{name: "no experiment", cmd: tracking.CreateRun{Name: "train"}, err: notFound},
		{name: "run exists", expGiven: active, runGiven: []events.Envelope{runCreated(t, "train", nil)}, cmd: tracking.CreateRun{Name: "train"},
			err: wantErr{handlers.Conflict, "run-exists"}},
		{name: "bad tag key", expGiven: active, cmd: tracking.CreateRun{Name: "train", Tags: map[string]string{"a/../b": "1"}}, err: invalid},
		{name: "101 tags", expGiven: active, cmd: tracking.CreateRun{Name: "train", Tags: manyTags(tracking.MaxTagsPerCall+1, "v")}, err: invalid},
		{name: "name of 501 runes", expGiven: active, cmd: tracking.CreateRun{Name: strings.Repeat("é", tracking.MaxNameLen+1)}, err: invalid},
		{name: "newline in name", expGiven: active, cmd: tracking.CreateRun{Name: "a\nb"}, err: invalid},
		{name: "newline in the name tag", expGiven: active, cmd: tracking.CreateRun{Tags: map[string]string{rn: "a\nb"}}, err: invalid},
		{name: "name tag of 501 runes", expGiven: active, cmd: tracking.CreateRun{Tags: map[string]string{rn: strings.Repeat("x", tracking.MaxNameLen+1)}}, err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cmd
			c.RunID, c.UserID = rid, uid
			var before map[string]string
			if c.Tags != nil {
				before = maps.Clone(c.Tags)
			}
			got, err := tracking.DecideCreateRun(fold(t, tracking.EvolveExperiment, tc.expGiven), fold(t, tracking.EvolveRun, tc.runGiven), c)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if before != nil && !reflect.DeepEqual(c.Tags, before) {
				t.Fatalf("the command's tags were modified: %v", c.Tags)
			}
		})
	}
}

func TestDecideCreateRunGeneratedNameSkipsDashes(t *testing.T) {
	t.Parallel()
	x := fold(t, tracking.EvolveExperiment, experimentGiven(t))
	got, err := tracking.DecideCreateRun(x, tracking.RunState{}, tracking.CreateRun{RunID: "ab-cd-ef-01-23", StartTime: 1})
	if err != nil {
		t.Fatal(err)
	}
	if d := got[0].Data.(events.RunCreatedData); d.Name != "run-abcdef01" || d.Tags[rn] != "run-abcdef01" {
		t.Fatalf("created = %+v", d)
	}
}

func TestDecideCreateRunReplay(t *testing.T) {
	t.Parallel()
	x := fold(t, tracking.EvolveExperiment, experimentGiven(t))
	got, err := tracking.DecideCreateRun(x, tracking.RunState{}, tracking.CreateRun{RunID: rid, UserID: uid, Name: "train",
		Tags: map[string]string{"a": "1"}, Now: 99})
	if err != nil {
		t.Fatal(err)
	}
	r := fold(t, tracking.EvolveRun, replay(t, t0, got))
	want := tracking.RunState{Created: true, ID: rid, ExperimentID: xid, ProjectID: pid, Name: "train", UserID: uid,
		Status: tracking.StatusRunning, StartTime: 99, Params: map[string]string{}, Tags: map[string]string{"a": "1", rn: "train"}}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("run = %+v\nwant %+v", r, want)
	}
	// The folded run takes the next commands.
	if _, err := tracking.DecideLogParams(r, []events.Param{{Key: "lr", Value: "0.1"}}); err != nil {
		t.Fatal(err)
	}
	_, err = tracking.DecideCreateRun(x, r, tracking.CreateRun{RunID: rid, Name: "again"})
	checkErr(t, err, wantErr{handlers.Conflict, "run-exists"})
}

func TestDecideUpdateRun(t *testing.T) {
	t.Parallel()
	running := []events.Envelope{runCreated(t, "train", nil)}
	finished := cat(running, []events.Envelope{runUpdated(t, events.RunUpdatedData{Status: tracking.StatusFinished, EndTime: i64p(2000)})})
	cases := []struct {
		name  string
		given []events.Envelope
		cmd   tracking.UpdateRun
		want  []handlers.Change
		err   wantErr
	}{
		{name: "finish with end time", given: running, cmd: tracking.UpdateRun{Status: tracking.StatusFinished, EndTime: i64p(2000)},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{Status: tracking.StatusFinished, EndTime: i64p(2000)})}},
		{name: "status only", given: running, cmd: tracking.UpdateRun{Status: tracking.StatusKilled},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{Status: tracking.StatusKilled})}},
		{name: "end time only", given: running, cmd: tracking.UpdateRun{EndTime: i64p(3000)},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{EndTime: i64p(3000)})}},
		{name: "end time 0 is a time", given: running, cmd: tracking.UpdateRun{EndTime: i64p(0)},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{EndTime: i64p(0)})}},
		{name: "new end time", given: finished, cmd: tracking.UpdateRun{EndTime: i64p(2001)},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{EndTime: i64p(2001)})}},
		{name: "only what changed", given: finished, cmd: tracking.UpdateRun{Status: tracking.StatusFailed, EndTime: i64p(2000)},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{Status: tracking.StatusFailed})}},
		{name: "back to running", given: finished, cmd: tracking.UpdateRun{Status: tracking.StatusRunning},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{Status: tracking.StatusRunning})}},
		{name: "rename also sets the name tag", given: running, cmd: tracking.UpdateRun{Name: strp("eval")},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{Name: strp("eval")}), runTagsChange(map[string]string{rn: "eval"})}},
		{name: "padded rename refused", given: running, cmd: tracking.UpdateRun{Name: strp("  eval ")}, err: invalid},
		{name: "everything at once", given: running, cmd: tracking.UpdateRun{Status: tracking.StatusFinished, EndTime: i64p(5), Name: strp("eval")},
			want: []handlers.Change{
				runUpdatedChange(events.RunUpdatedData{Status: tracking.StatusFinished, EndTime: i64p(5), Name: strp("eval")}),
				runTagsChange(map[string]string{rn: "eval"}),
			}},
		{name: "rename after a rename by tag", given: cat(running, []events.Envelope{runTagsSet(t, map[string]string{rn: "mid"}),
			runUpdated(t, events.RunUpdatedData{Name: strp("mid")})}), cmd: tracking.UpdateRun{Name: strp("mid")}, want: noChanges},
		{name: "no-op: empty", given: running, want: noChanges},
		{name: "no-op: same status", given: running, cmd: tracking.UpdateRun{Status: tracking.StatusRunning}, want: noChanges},
		{name: "no-op: same status and end time", given: finished, cmd: tracking.UpdateRun{Status: tracking.StatusFinished, EndTime: i64p(2000)}, want: noChanges},
		{name: "no-op: same name", given: running, cmd: tracking.UpdateRun{Name: strp("train")}, want: noChanges},
		{name: "same name padded refused", given: running, cmd: tracking.UpdateRun{Name: strp(" train ")}, err: invalid},
		{name: "no-op: blank name is no name", given: running, cmd: tracking.UpdateRun{Name: strp("  ")}, want: noChanges},
		{name: "invalid status", given: running, cmd: tracking.UpdateRun{Status: "DONE"}, err: invalid},
		{name: "status is case-sensitive", given: running, cmd: tracking.UpdateRun{Status: "finished"}, err: invalid},
		{name: "invalid status with a valid name", given: running, cmd: tracking.UpdateRun{Status: "DONE", Name: strp("eval")}, err: invalid},
		{name: "negative end time", given: running, cmd: tracking.UpdateRun{EndTime: i64p(-1)}, err: invalid},
		{name: "newline in name", given: running, cmd: tracking.UpdateRun{Name: strp("a\nb")}, err: invalid},
		{name: "name of 501 runes", given: running, cmd: tracking.UpdateRun{Name: strp(strings.Repeat("x", tracking.MaxNameLen+1))}, err: invalid},
		{name: "not found", cmd: tracking.UpdateRun{Status: tracking.StatusFinished}, err: notFound},
		{name: "deleted", given: cat(running, []events.Envelope{runDeleted(t)}), cmd: tracking.UpdateRun{Status: tracking.StatusFinished}, err: runDeletedErr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideUpdateRun(fold(t, tracking.EvolveRun, tc.given), tc.cmd)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestDecideUpdateRunReplay(t *testing.T) {
	t.Parallel()
	given := []events.Envelope{runCreated(t, "train", nil)}
	got, err := tracking.DecideUpdateRun(fold(t, tracking.EvolveRun, given),
		tracking.UpdateRun{Status: tracking.StatusFinished, EndTime: i64p(7), Name: strp("eval")})
	if err != nil {
		t.Fatal(err)
	}
	r := fold(t, tracking.EvolveRun, cat(given, replay(t, t0, got)))
	if r.Status != tracking.StatusFinished || r.EndTime == nil || *r.EndTime != 7 || r.Name != "eval" || r.Tags[rn] != "eval" {
		t.Fatalf("run = %+v", r)
	}
}

func TestDecideLogParams(t *testing.T) {
	t.Parallel()
	logged := func(params ...events.Param) []handlers.Change {
		return []handlers.Change{{Subject: rSubj, Type: events.RunParamsLogged, Data: events.RunParamsLoggedData{RunID: rid, Params: params}}}
	}
	p := func(k, v string) events.Param { return events.Param{Key: k, Value: v} }
	fresh := []events.Envelope{runCreated(t, "train", nil)}
	withLR := cat(fresh, []events.Envelope{runParams(t, p("lr", "0.1"), p("epochs", "10"))})
	many := make([]events.Param, tracking.MaxParamsPerCall+1)
	for i := range many {
		many[i] = p("p"+strconv.Itoa(i), "v")
	}
	cases := []struct {
		name   string
		given  []events.Envelope
		params []events.Param
		want   []handlers.Change
		err    wantErr
		prefix string // of the error's detail
	}{
		{name: "fresh, in the given order", given: fresh, params: []events.Param{p("z", "1"), p("a", "2")}, want: logged(p("z", "1"), p("a", "2"))},
		{name: "empty value", given: fresh, params: []events.Param{p("a", "")}, want: logged(p("a", ""))},
		{name: "value of 6000 bytes", given: fresh, params: []events.Param{p("a", strings.Repeat("v", tracking.MaxParamValueLen))},
			want: logged(p("a", strings.Repeat("v", tracking.MaxParamValueLen)))},
		{name: "same value again is not re-emitted", given: withLR, params: []events.Param{p("lr", "0.1"), p("batch", "32")},
			want: logged(p("batch", "32"))},
		{name: "no-op: all logged already", given: withLR, params: []events.Param{p("epochs", "10"), p("lr", "0.1")}, want: noChanges},
		{name: "no-op: empty", given: withLR, want: noChanges},
		{name: "duplicate key, same value, once", given: fresh, params: []events.Param{p("a", "1"), p("b", "2"), p("a", "1")},
			want: logged(p("a", "1"), p("b", "2"))},
		{name: "100 params", given: fresh, params: many[:tracking.MaxParamsPerCall], want: logged(many[:tracking.MaxParamsPerCall]...)},
		{name: "different value refused", given: withLR, params: []events.Param{p("batch", "32"), p("lr", "0.2")},
			err: paramOverwrite, prefix: "params[1]"},
		{name: "values are compared exactly", given: withLR, params: []events.Param{p("epochs", "10 ")},
			err: paramOverwrite, prefix: "params[0]"},
		{name: "duplicate key with different values", given: fresh, params: []events.Param{p("a", "1"), p("b", "2"), p("a", "3")},
			err: paramOverwrite, prefix: "params[2]"},
		{name: "duplicate of a logged key, second differs", given: withLR, params: []events.Param{p("lr", "0.1"), p("lr", "0.2")},
			err: paramOverwrite, prefix: "params[1]"},
		{name: "101 params", given: fresh, params: many, err: invalid},
		{name: "bad key", given: fresh, params: []events.Param{p("a", "1"), p("b", "2"), p("../c", "3")}, err: invalid, prefix: "params[2]: invalid param key"},
		{name: "empty key", given: fresh, params: []events.Param{p("", "1")}, err: invalid, prefix: "params[0]: invalid param key"},
		{name: "key of 251 bytes", given: fresh, params: []events.Param{p("a", "1"), p(strings.Repeat("k", tracking.MaxKeyLen+1), "1")}, err: invalid, prefix: "params[1]:"},
		{name: "value of 6001 bytes", given: fresh, params: []events.Param{p("a", strings.Repeat("v", tracking.MaxParamValueLen+1))}, err: invalid, prefix: "params[0]"},
		{name: "NUL in value", given: fresh, params: []events.Param{p("a", "1"), p("b", "x\x00")}, err: invalid, prefix: "params[1]"},
		{name: "validation before write-once", given: withLR, params: []events.Param{p("lr", "0.2"), p("/x", "1")}, err: paramOverwrite, prefix: "params[0]"},
		{name: "not found", params: []events.Param{p("a", "1")}, err: notFound},
		{name: "deleted", given: cat(withLR, []events.Envelope{runDeleted(t)}), params: []events.Param{p("a", "1")}, err: runDeletedErr},
		{name: "restored", given: cat(withLR, []events.Envelope{runDeleted(t), runRestored(t)}), params: []events.Param{p("a", "1")},
			want: logged(p("a", "1"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideLogParams(fold(t, tracking.EvolveRun, tc.given), tc.params)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if tc.prefix != "" {
				if d := detail(t, err); !strings.HasPrefix(d, tc.prefix) {
					t.Fatalf("detail %q does not start with %q", d, tc.prefix)
				}
			}
		})
	}
}

func TestDecideLogParamsOverwriteNamesKeyAndOldValue(t *testing.T) {
	t.Parallel()
	r := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", nil), runParams(t, events.Param{Key: "lr", Value: "0.1"})})
	_, err := tracking.DecideLogParams(r, []events.Param{{Key: "lr", Value: "0.5"}})
	checkErr(t, err, paramOverwrite)
	if d := detail(t, err); !strings.Contains(d, `"lr"`) || !strings.Contains(d, `"0.1"`) {
		t.Fatalf("detail = %q", d)
	}
}

func TestDecideLogParamsRunLimit(t *testing.T) {
	t.Parallel()
	r := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", nil)})
	r.Params = manyTags(tracking.MaxParamsPerRun-1, "v")
	if _, err := tracking.DecideLogParams(r, []events.Param{{Key: "last", Value: "1"}}); err != nil {
		t.Fatalf("the last free slot: %v", err)
	}
	// Re-logging existing params takes no slot.
	if got, err := tracking.DecideLogParams(r, []events.Param{{Key: "k0", Value: "v"}, {Key: "last", Value: "1"}}); err != nil || len(got) != 1 {
		t.Fatalf("existing plus one = %v, %v", got, err)
	}
	_, err := tracking.DecideLogParams(r, []events.Param{{Key: "last", Value: "1"}, {Key: "over", Value: "1"}})
	checkErr(t, err, invalid)
}

func TestDecideSetRunTags(t *testing.T) {
	t.Parallel()
	running := []events.Envelope{runCreated(t, "train", map[string]string{"a": "1"})}
	cases := []struct {
		name  string
		given []events.Envelope
		tags  map[string]string
		want  []handlers.Change
		err   wantErr
	}{
		{name: "only changed tags", given: running, tags: map[string]string{"a": "1", "b": "2"}, want: []handlers.Change{runTagsChange(map[string]string{"b": "2"})}},
		{name: "overwrite", given: running, tags: map[string]string{"a": "9"}, want: []handlers.Change{runTagsChange(map[string]string{"a": "9"})}},
		{name: "the name tag renames the run", given: running, tags: map[string]string{rn: "eval", "a": "2"},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{Name: strp("eval")}), runTagsChange(map[string]string{rn: "eval", "a": "2"})}},
		{name: "the name tag after an UpdateRun rename", given: cat(running, []events.Envelope{runUpdated(t, events.RunUpdatedData{Name: strp("mid")}),
			runTagsSet(t, map[string]string{rn: "mid"})}), tags: map[string]string{rn: "train"},
			want: []handlers.Change{runUpdatedChange(events.RunUpdatedData{Name: strp("train")}), runTagsChange(map[string]string{rn: "train"})}},
		{name: "set again after deletion", given: cat(running, []events.Envelope{runTagDeleted(t, "a")}), tags: map[string]string{"a": "1"},
			want: []handlers.Change{runTagsChange(map[string]string{"a": "1"})}},
		{name: "no-op: all equal", given: running, tags: map[string]string{"a": "1", rn: "train"}, want: noChanges},
		{name: "no-op: empty", given: running, tags: map[string]string{}, want: noChanges},
		{name: "empty name tag", given: running, tags: map[string]string{rn: ""}, err: invalid},
		{name: "blank name tag", given: running, tags: map[string]string{rn: "   "}, err: invalid},
		{name: "multi-line name tag", given: running, tags: map[string]string{rn: "a\nb"}, err: invalid},
		{name: "name tag of 501 runes", given: running, tags: map[string]string{rn: strings.Repeat("é", tracking.MaxNameLen+1)}, err: invalid},
		{name: "bad key", given: running, tags: map[string]string{"a/../b": "1"}, err: invalid},
		{name: "bad value", given: running, tags: map[string]string{"b": "\x00"}, err: invalid},
		{name: "101 tags", given: running, tags: manyTags(tracking.MaxTagsPerCall+1, "v"), err: invalid},
		{name: "not found", tags: map[string]string{"a": "1"}, err: notFound},
		{name: "deleted", given: cat(running, []events.Envelope{runDeleted(t)}), tags: map[string]string{"b": "1"}, err: runDeletedErr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideSetRunTags(fold(t, tracking.EvolveRun, tc.given), tc.tags)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestDecideSetRunTagsLimit(t *testing.T) {
	t.Parallel()
	r := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", nil)})
	r.Tags = manyTags(tracking.MaxTagsPerRun-1, "v")
	if _, err := tracking.DecideSetRunTags(r, map[string]string{"new": "1"}); err != nil {
		t.Fatalf("the last free slot: %v", err)
	}
	_, err := tracking.DecideSetRunTags(r, map[string]string{"new": "1", "newer": "1"})
	checkErr(t, err, invalid)
}

func TestDecideDeleteRunTag(t *testing.T) {
	t.Parallel()
	running := []events.Envelope{runCreated(t, "train", map[string]string{"a": "1"})}
	cases := []struct {
		name  string
		given []events.Envelope
		key   string
		want  []handlers.Change
		err   wantErr
	}{
		{name: "delete", given: running, key: "a",
			want: []handlers.Change{{Subject: rSubj, Type: events.RunTagDeleted, Data: events.TagDeletedData{ID: rid, Key: "a"}}}},
		{name: "set later", given: cat(running, []events.Envelope{runTagsSet(t, map[string]string{"b": "2"})}), key: "b",
			want: []handlers.Change{{Subject: rSubj, Type: events.RunTagDeleted, Data: events.TagDeletedData{ID: rid, Key: "b"}}}},
		{name: "missing", given: running, key: "b", err: notFound},
		{name: "already deleted", given: cat(running, []events.Envelope{runTagDeleted(t, "a")}), key: "a", err: notFound},
		{name: "the name tag", given: running, key: rn, err: invalid},
		{name: "run not found", key: "a", err: notFound},
		{name: "run deleted", given: cat(running, []events.Envelope{runDeleted(t)}), key: "a", err: runDeletedErr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideDeleteRunTag(fold(t, tracking.EvolveRun, tc.given), tc.key)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestDecideDeleteRun(t *testing.T) {
	t.Parallel()
	lifecycle := func(typ string) []handlers.Change {
		return []handlers.Change{{Subject: rSubj, Type: typ, Data: events.RunLifecycleData{RunID: rid, ExperimentID: xid}}}
	}
	running := []events.Envelope{runCreated(t, "train", nil)}
	deleted := cat(running, []events.Envelope{runDeleted(t)})
	restored := cat(deleted, []events.Envelope{runRestored(t)})
	cases := []struct {
		name  string
		given []events.Envelope
		del   bool
		want  []handlers.Change
		err   wantErr
	}{
		{name: "delete", given: running, del: true, want: lifecycle(events.RunDeleted)},
		{name: "delete twice is a no-op", given: deleted, del: true, want: noChanges},
		{name: "restore", given: deleted, want: lifecycle(events.RunRestored)},
		{name: "restore an active one is a no-op", given: running, want: noChanges},
		{name: "restore twice is a no-op", given: restored, want: noChanges},
		{name: "delete after restore", given: restored, del: true, want: lifecycle(events.RunDeleted)},
		{name: "delete a finished run", given: cat(running, []events.Envelope{runUpdated(t, events.RunUpdatedData{Status: tracking.StatusFinished})}),
			del: true, want: lifecycle(events.RunDeleted)},
		{name: "delete not found", del: true, err: notFound},
		{name: "restore not found", err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tracking.DecideDeleteRun(fold(t, tracking.EvolveRun, tc.given), tc.del)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
		})
	}
}

func TestEvolveRun(t *testing.T) {
	t.Parallel()
	end := int64(2000)
	upd := events.RunUpdatedData{Status: tracking.StatusFinished, EndTime: &end}
	evs := []events.Envelope{
		runCreated(t, "train", map[string]string{"a": "1"}),
		runParams(t, events.Param{Key: "lr", Value: "0.1"}),
		runParams(t, events.Param{Key: "epochs", Value: "10"}, events.Param{Key: "batch", Value: "32"}),
		runTagsSet(t, map[string]string{"a": "2", "b": "3"}),
		runTagDeleted(t, "b"),
		runUpdated(t, events.RunUpdatedData{Name: strp("eval")}),
		runTagsSet(t, map[string]string{rn: "eval"}),
		runUpdated(t, upd),
		runUpdated(t, events.RunUpdatedData{}), // absent fields are unchanged
		runDeleted(t),
	}
	s := fold(t, tracking.EvolveRun, evs)
	end = 1 // the state holds its own copy of the end time
	want := tracking.RunState{Created: true, ID: rid, ExperimentID: xid, ProjectID: pid, Name: "eval", UserID: uid,
		Status: tracking.StatusFinished, StartTime: 1000, EndTime: i64p(2000), Deleted: true,
		Params: map[string]string{"lr": "0.1", "epochs": "10", "batch": "32"}, Tags: map[string]string{"a": "2", rn: "eval"}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("state = %+v\nwant %+v", s, want)
	}
	s = fold(t, tracking.EvolveRun, cat(evs, []events.Envelope{runRestored(t)}))
	if s.Deleted {
		t.Fatal("restored run still deleted")
	}
	// A run created without tags still has maps to fold into.
	bare := ev(t, t0, rSubj, events.RunCreated, events.RunCreatedData{RunID: rid, ExperimentID: xid, Name: "x"})
	s = fold(t, tracking.EvolveRun, []events.Envelope{bare, runTagsSet(t, map[string]string{"a": "1"}), runParams(t, events.Param{Key: "p", Value: "v"})})
	if s.Tags["a"] != "1" || s.Params["p"] != "v" || s.Status != tracking.StatusRunning || s.EndTime != nil {
		t.Fatalf("bare run = %+v", s)
	}
	broken := runParams(t)
	broken.Data = []byte(`{"params": "x"}`)
	if _, err := tracking.EvolveRun(s, broken); err == nil {
		t.Fatal("undecodable data folded")
	}
}

func TestCloneRunDoesNotShareMaps(t *testing.T) {
	t.Parallel()
	s := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", map[string]string{"a": "1"}),
		runParams(t, events.Param{Key: "lr", Value: "0.1"})})
	c := tracking.CloneRun(s)
	c, err := tracking.EvolveRun(c, runTagsSet(t, map[string]string{"a": "2", "b": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	if c, err = tracking.EvolveRun(c, runParams(t, events.Param{Key: "epochs", Value: "10"})); err != nil {
		t.Fatal(err)
	}
	if c, err = tracking.EvolveRun(c, runTagDeleted(t, rn)); err != nil {
		t.Fatal(err)
	}
	c.Params["direct"] = "x"
	if !reflect.DeepEqual(s.Tags, map[string]string{"a": "1", rn: "train"}) || !reflect.DeepEqual(s.Params, map[string]string{"lr": "0.1"}) {
		t.Fatalf("original changed through the clone: tags %v params %v", s.Tags, s.Params)
	}
	if !reflect.DeepEqual(c.Tags, map[string]string{"a": "2", "b": "3"}) ||
		!reflect.DeepEqual(c.Params, map[string]string{"lr": "0.1", "epochs": "10", "direct": "x"}) {
		t.Fatalf("clone: tags %v params %v", c.Tags, c.Params)
	}
	// The folded state does not share the created event's tags either.
	tags := map[string]string{"k": "v"}
	r, err := tracking.EvolveRun(tracking.RunState{}, ev(t, t0, rSubj, events.RunCreated, events.RunCreatedData{RunID: rid, Tags: tags}))
	if err != nil {
		t.Fatal(err)
	}
	r.Tags["k"] = "changed"
	if tags["k"] != "v" {
		t.Fatal("state shares the event's tags")
	}
}

func TestSortedParams(t *testing.T) {
	t.Parallel()
	got := tracking.SortedParams(map[string]string{"b": "2", "a": "1", "B": "3"})
	want := []events.Param{{Key: "B", Value: "3"}, {Key: "a", Value: "1"}, {Key: "b", Value: "2"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("sorted = %v", got)
	}
	if got := tracking.SortedParams(nil); got == nil || len(got) != 0 {
		t.Fatalf("sorted nil = %#v", got)
	}
}

// Edge cases a review found (each once a bug, kept as a regression test).

func TestTagLimitCountsNewKeysOnly(t *testing.T) {
	t.Parallel()
	r := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", nil)})
	r.Tags = manyTags(tracking.MaxTagsPerRun-1, "v")
	r.Tags[rn] = "train" // a full run: 1000 tags
	if _, err := tracking.DecideSetRunTags(r, map[string]string{"k0": "new value"}); err != nil {
		t.Errorf("overwriting a tag of a full run: %v", err)
	}
	if _, err := tracking.DecideSetRunTags(r, map[string]string{rn: "renamed"}); err != nil {
		t.Errorf("renaming a full run by its tag: %v", err)
	}
	x := fold(t, tracking.EvolveExperiment, experimentGiven(t))
	x.Tags = manyTags(tracking.MaxTagsPerRun, "v")
	if _, err := tracking.DecideSetExperimentTags(x, map[string]string{"k0": "new value"}); err != nil {
		t.Errorf("overwriting a tag of a full experiment: %v", err)
	}
}

func TestBlankRunNameTagGivesGeneratedName(t *testing.T) {
	t.Parallel()
	x := fold(t, tracking.EvolveExperiment, experimentGiven(t))
	for _, tag := range []string{"", "   "} {
		got, err := tracking.DecideCreateRun(x, tracking.RunState{}, tracking.CreateRun{RunID: rid, StartTime: 1, Tags: map[string]string{rn: tag}})
		if err != nil {
			continue // refusing is fine too
		}
		if d := got[0].Data.(events.RunCreatedData); d.Name == "" || d.Tags[rn] != d.Name {
			t.Errorf("tag %q: created name %q, tag %q", tag, d.Name, d.Tags[rn])
		}
	}
}

func TestSetRunTagsRefusesAPaddedNameTag(t *testing.T) {
	t.Parallel()
	r := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", nil)})
	_, err := tracking.DecideSetRunTags(r, map[string]string{rn: "  eval  "})
	checkErr(t, err, invalid)
}

func TestKeysMustBeUniquePaths(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"a//b", "a/./b", "a/", "./a", "./"} {
		if tracking.ValidKey("param", k) == nil {
			t.Errorf("ValidKey(%q) accepted", k)
		}
	}
}

func TestGeneratedRunNameOfShortID(t *testing.T) {
	t.Parallel()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("panic: %v", p)
		}
	}()
	x := fold(t, tracking.EvolveExperiment, experimentGiven(t))
	_, _ = tracking.DecideCreateRun(x, tracking.RunState{}, tracking.CreateRun{RunID: "abc", StartTime: 1})
}

// One request, one decision: a run update whose tags are refused changes
// nothing else either; a run's params and tags are bounded in bytes.
func TestDecideUpdateRunAllOrNothing(t *testing.T) {
	t.Parallel()
	r := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", nil)})
	for name, c := range map[string]tracking.UpdateRun{
		"blank name tag":       {Status: tracking.StatusKilled, Tags: map[string]string{rn: " "}},
		"name and tag differ":  {Status: tracking.StatusKilled, Name: strp("a"), Tags: map[string]string{rn: "b"}},
		"bad tag key":          {EndTime: i64p(5), Tags: map[string]string{"../x": "1"}},
		"padded name with tag": {Status: tracking.StatusKilled, Name: strp(" a"), Tags: map[string]string{"k": "v"}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := tracking.DecideUpdateRun(r, c)
			if err == nil || len(got) != 0 {
				t.Fatalf("changes %v, err %v; want a refusal and nothing", got, err)
			}
		})
	}
	big := tracking.RunState{Created: true, ID: rid, Params: map[string]string{}, Tags: map[string]string{}}
	for i := range tracking.MaxRunBytes / 6000 {
		big.Params[fmt.Sprint("p", i)] = strings.Repeat("v", 6000)
	}
	_, err := tracking.DecideLogParams(big, []events.Param{{Key: "one more", Value: strings.Repeat("v", 6000)}})
	checkErr(t, err, invalid)
	_, err = tracking.DecideSetRunTags(big, map[string]string{"t": strings.Repeat("v", 8000)})
	checkErr(t, err, invalid)
}

func TestDecideLogMetrics(t *testing.T) {
	t.Parallel()
	r := fold(t, tracking.EvolveRun, []events.Envelope{runCreated(t, "train", nil)})
	got, err := tracking.DecideLogMetrics(r, []tracking.Metric{{Key: "loss", Value: 1, Step: 0, Timestamp: 5},
		{Key: "acc", Value: 0.5, Step: 0, Timestamp: 5}, {Key: "loss", Value: 0.5, Step: 1, Timestamp: 6}})
	if err != nil || len(got) != 1 || got[0].Subject != events.MetricsSubject(rid) || got[0].Type != events.MetricsLogged {
		t.Fatalf("changes %+v, %v", got, err)
	}
	d := got[0].Data.(events.MetricsLoggedData)
	if len(d.Metrics["loss"]) != 2 || d.Metrics["loss"][1] != (events.MetricPoint{Value: 0.5, Step: 1, Timestamp: 6}) || len(d.Metrics["acc"]) != 1 {
		t.Fatalf("grouped = %+v", d.Metrics)
	}
	_, err = tracking.DecideLogMetrics(r, []tracking.Metric{{Key: "ok", Timestamp: 1}, {Key: "a//b", Timestamp: 1}})
	if d := detail(t, err); !strings.HasPrefix(d, "metrics[1]: ") {
		t.Fatalf("detail %q does not name the index", d)
	}
	_, err = tracking.DecideLogMetrics(r, []tracking.Metric{{Key: "ok", Timestamp: -1}})
	checkErr(t, err, invalid)
	_, err = tracking.DecideLogMetrics(r, nil)
	checkErr(t, err, invalid)
	_, err = tracking.DecideLogMetrics(r, make([]tracking.Metric, tracking.MaxMetricsPerCall+1))
	checkErr(t, err, invalid)
}
