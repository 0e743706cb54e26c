package projections

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gowebpki/jcs"

	"github.com/maestro-ml/maestro/auth"
	"github.com/maestro-ml/maestro/events"
)

// auditFixture is the audit projection's live runner over a history with
// the data the canonical form must treat as PostgreSQL stores it
// (duplicate keys, numbers jsonb writes otherwise, escapes, times with
// nanoseconds), project events, and a sealer with a key of its own.
type auditFixture struct {
	f      *fixture
	stop   func()
	sealer *AuditSealer
	key    ed25519.PrivateKey
	kid    string
	pid    string
}

func newAuditFixture(t *testing.T) *auditFixture {
	t.Helper()
	af := &auditFixture{f: newFixture(t), pid: uuid.NewString()}
	af.stop = start(t, NewRunner(af.f.pool, af.f.store, Audit{}, testRunnerConfig()))
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	af.key, af.kid = priv, auth.KeyID(priv.Public().(ed25519.PublicKey))
	af.sealer = NewAuditSealer(af.f.pool, AuditSealerConfig{Key: priv, KeyID: af.kid, Events: af.f.store})
	af.f.seed(t, 4)
	mid := uuid.NewString()
	af.f.append(t, base.Add(1234567891*time.Nanosecond), [3]any{events.Subject(events.AggProject, af.pid), events.ProjectCreated,
		events.ProjectCreatedData{ProjectID: af.pid, Slug: "p", Name: "P <&> é", OwnerID: uuid.NewString()}})
	af.f.append(t, base.Add(999999999*time.Nanosecond), [3]any{events.Subject(events.AggModel, mid), events.ModelCreated,
		events.ModelCreatedData{ModelID: mid, ProjectID: af.pid, Name: "m", Tags: map[string]string{"a": "b"}}})
	for _, raw := range []string{`{"a":1,"a":2,"project_id":"x"}`, `{"b":[1, 2.50],"c":"\u00e9\n"}`, `{"a":123456789012345680000,"b":-0}`,
		`{"z":{"y":[true,null,{"x":0.000001}]},"a":"<&>\"\\"}`, `[1,2]`} {
		af.appendAt(t, base.Add(time.Duration(len(raw))*time.Nanosecond+500), events.Subject(events.AggSession, uuid.NewString()), events.SessionStarted, raw)
	}
	af.sync(t)
	return af
}

func (af *auditFixture) appendAt(t *testing.T, at time.Time, subject, typ, raw string) uint64 {
	t.Helper()
	e, err := events.New(events.Meta{Actor: events.Actor{Kind: events.ActorUser, ID: "seed"}, Time: at, CorrelationID: "corr-" + typ}, subject, typ, 0, json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := queryCtx()
	defer cancel()
	seq, err := af.f.store.Append(ctx, events.Append{Event: e, Expect: events.Any})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// sync waits for the trail to reach the stream's head and seals it.
func (af *auditFixture) sync(t *testing.T) uint64 {
	t.Helper()
	last := af.f.lastSeq(t)
	waitCaughtUp(t, af.f.pool, last, "audit")
	sealed, err := af.sealer.Seal(testCtx(t))
	if err != nil || sealed != last {
		t.Fatalf("sealed %d (%v), want the head %d", sealed, err, last)
	}
	return last
}

func (af *auditFixture) verify(t *testing.T) *AuditVerifyResult {
	t.Helper()
	res, err := VerifyAudit(testCtx(t), af.f.pool, AuditVerifyConfig{Events: af.f.store})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (af *auditFixture) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := af.f.pool.Exec(testCtx(t), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func hashes(t *testing.T, af *auditFixture) map[int64][]byte {
	t.Helper()
	out := map[int64][]byte{}
	rows, err := af.f.pool.Query(testCtx(t), "SELECT seq, hash FROM audit_entries")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var s int64
		var h []byte
		if err := rows.Scan(&s, &h); err != nil {
			t.Fatal(err)
		}
		out[s] = h
	}
	return out
}

// wantProblems asserts that verify reports exactly the (seq, kind) pairs.
func wantProblems(t *testing.T, res *AuditVerifyResult, want ...AuditProblem) {
	t.Helper()
	var got []string
	for _, p := range res.Problems {
		got = append(got, fmt.Sprintf("%d %s", p.Seq, p.Kind))
	}
	var exp []string
	for _, p := range want {
		exp = append(exp, fmt.Sprintf("%d %s", p.Seq, p.Kind))
	}
	slices.Sort(got)
	slices.Sort(exp)
	if res.OK() || res.Count != len(want) || !slices.Equal(got, exp) {
		t.Fatalf("problems %v (count %d), want %v; %+v", got, res.Count, exp, res.Problems)
	}
}

// The chain is the one the documented rule gives: recomputed here in Go
// from the stored rows alone, it matches the hashes PostgreSQL folded.
func TestAuditChainFollowsTheDocumentedRule(t *testing.T) {
	t.Parallel()
	af := newAuditFixture(t)
	res := af.verify(t)
	if !res.OK() || res.Entries == 0 || res.Checkpoints != 1 || res.Through != af.f.lastSeq(t) {
		t.Fatalf("verify of an intact trail: %+v", res)
	}
	tx, err := af.f.pool.Begin(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(testCtx(t)) //nolint:errcheck // read only
	s := &storedEntries{tx: tx}
	prev := GenesisHash
	n := 0
	for err := s.next(testCtx(t)); s.cur != nil; err = s.next(testCtx(t)) {
		if err != nil {
			t.Fatal(err)
		}
		d, err := s.cur.ChainEntry.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if prev = ChainNext(prev, d); !bytes.Equal(prev, s.cur.hash) {
			t.Fatalf("entry %d: stored hash %x, the rule gives %x", s.cur.Seq, s.cur.hash, prev)
		}
		n++
	}
	if int64(n) != res.Entries {
		t.Fatalf("recomputed %d entries, verify compared %d", n, res.Entries)
	}
	// The derived project id: a project's own event and a model's data.
	var projectEntries int
	if err := af.f.pool.QueryRow(testCtx(t), "SELECT count(*) FROM audit_entries WHERE project_id = $1", af.pid).Scan(&projectEntries); err != nil || projectEntries != 2 {
		t.Fatalf("%d entries of the project (%v), want 2", projectEntries, err)
	}
}

// Every way of tampering with the stored trail is reported with its
// sequence: a changed summary or data, a deleted row, an inserted row, two
// rows swapped, a forged checkpoint.
func TestAuditVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	af := newAuditFixture(t)
	af.stop() // nothing moves the trail while it is tampered with
	last := int64(af.f.lastSeq(t))
	if res := af.verify(t); !res.OK() {
		t.Fatalf("intact trail: %+v", res.Problems)
	}
	af.exec(t, "CREATE TABLE audit_backup AS SELECT * FROM audit_entries")
	af.exec(t, "CREATE TABLE checkpoint_backup AS SELECT * FROM audit_checkpoints")
	restore := func() {
		af.exec(t, "TRUNCATE audit_entries, audit_checkpoints")
		af.exec(t, "INSERT INTO audit_entries SELECT * FROM audit_backup")
		af.exec(t, "INSERT INTO audit_checkpoints SELECT * FROM checkpoint_backup")
	}
	for _, c := range []struct {
		name string
		sql  []string
		want []AuditProblem
	}{
		{"update summary", []string{"UPDATE audit_entries SET summary = 'nothing happened' WHERE seq = 3"}, []AuditProblem{{Seq: 3, Kind: "changed"}}},
		{"update data and hash", []string{`UPDATE audit_entries SET data = '{"a":1}', hash = sha256(hash) WHERE seq = 5`}, []AuditProblem{{Seq: 5, Kind: "changed"}}},
		{"update actor", []string{"UPDATE audit_entries SET actor = 'user:someone-else' WHERE seq = 2"}, []AuditProblem{{Seq: 2, Kind: "changed"}}},
		{"delete", []string{"DELETE FROM audit_entries WHERE seq = 4"}, []AuditProblem{{Seq: 4, Kind: "missing"}}},
		{"delete the sealed entry", []string{fmt.Sprintf("DELETE FROM audit_entries WHERE seq = %d", last)},
			[]AuditProblem{{Seq: uint64(last), Kind: "missing"}}},
		{"insert", []string{fmt.Sprintf("INSERT INTO audit_entries SELECT %d, event_id, time, type, actor, subject, correlation_id, causation_id, summary, data, project_id, hash FROM audit_entries WHERE seq = 6", last+3)},
			[]AuditProblem{{Seq: uint64(last + 3), Kind: "inserted"}}},
		// Below every event: no sequence of the stream is 0 or negative,
		// yet GET /api/v1/audit would list such a row.
		{"insert at 0", []string{"INSERT INTO audit_entries SELECT 0, event_id, time, type, actor, subject, correlation_id, causation_id, summary, data, project_id, hash FROM audit_entries WHERE seq = 6"},
			[]AuditProblem{{Seq: 0, Kind: "inserted"}}},
		{"insert at a negative sequence", []string{"INSERT INTO audit_entries SELECT -6, event_id, time, type, actor, subject, correlation_id, causation_id, summary, data, project_id, hash FROM audit_entries WHERE seq = 6"},
			[]AuditProblem{{Seq: 0, Kind: "inserted"}}},
		{"reorder", []string{"UPDATE audit_entries SET seq = -seq WHERE seq IN (7, 8)", "UPDATE audit_entries SET seq = CASE seq WHEN -7 THEN 8 ELSE 7 END WHERE seq IN (-7, -8)"},
			[]AuditProblem{{Seq: 7, Kind: "changed"}, {Seq: 8, Kind: "changed"}}},
		{"forged checkpoint hash", []string{"UPDATE audit_checkpoints SET hash = sha256(hash)"},
			[]AuditProblem{{Seq: uint64(last), Kind: "checkpoint"}, {Seq: uint64(last), Kind: "checkpoint"}}},
		{"forged signature", []string{"UPDATE audit_checkpoints SET signature = sha256(signature) || sha256(signature)"},
			[]AuditProblem{{Seq: uint64(last), Kind: "checkpoint"}}},
		// Beyond the trail (where a rebuild's pending checkpoints are): its
		// hash cannot be compared yet, its signature can.
		{"forged checkpoint beyond the trail", []string{fmt.Sprintf("INSERT INTO audit_checkpoints (seq, hash, key_id, signature) SELECT %d, hash, key_id, sha256(signature) || sha256(signature) FROM audit_checkpoints", last+5)},
			[]AuditProblem{{Seq: uint64(last + 5), Kind: "checkpoint"}}},
	} {
		for _, s := range c.sql {
			af.exec(t, s)
		}
		res := af.verify(t)
		t.Logf("%s: %+v", c.name, res.Problems)
		wantProblems(t, res, c.want...)
		restore()
		if res := af.verify(t); !res.OK() {
			t.Fatalf("after %s, restored: %+v", c.name, res.Problems)
		}
	}
	// A key that is not the platform's: every checkpoint is refused.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	pub := other.Public().(ed25519.PublicKey)
	res, err := VerifyAudit(testCtx(t), af.f.pool, AuditVerifyConfig{Events: af.f.store, Keys: map[string]ed25519.PublicKey{auth.KeyID(pub): pub}})
	if err != nil {
		t.Fatal(err)
	}
	wantProblems(t, res, AuditProblem{Seq: uint64(last), Kind: "checkpoint"})
}

// The chain continues across runner restarts (a batch's first entry chains
// from what the previous run stored) and a rebuild reproduces every hash,
// so the checkpoints signed before it still verify.
func TestAuditChainAcrossRestartAndRebuild(t *testing.T) {
	t.Parallel()
	af := newAuditFixture(t)
	for range 3 {
		af.stop()
		af.f.seed(t, 2)
		af.appendAt(t, base.Add(time.Nanosecond), events.Subject(events.AggSession, uuid.NewString()), events.SessionStarted, `{"k":"v"}`)
		af.stop = start(t, NewRunner(af.f.pool, af.f.store, Audit{}, testRunnerConfig()))
		af.sync(t)
	}
	res := af.verify(t)
	if !res.OK() || res.Checkpoints != 4 {
		t.Fatalf("after restarts: %+v", res)
	}
	before := hashes(t, af)
	af.stop()
	if err := Reset(testCtx(t), af.f.pool); err != nil {
		t.Fatal(err)
	}
	if res := af.verify(t); !res.OK() || res.Through != 0 || res.Pending != 4 {
		t.Fatalf("checkpoints beyond the reset trail: %+v", res)
	}
	af.stop = start(t, NewRunner(af.f.pool, af.f.store, Audit{}, testRunnerConfig()))
	waitCaughtUp(t, af.f.pool, af.f.lastSeq(t), "audit")
	after := hashes(t, af)
	if len(after) != len(before) {
		t.Fatalf("%d entries rebuilt, %d before", len(after), len(before))
	}
	for s, h := range before {
		if !bytes.Equal(after[s], h) {
			t.Fatalf("entry %d: hash %x after the rebuild, %x before", s, after[s], h)
		}
	}
	if res := af.verify(t); !res.OK() || res.Checkpoints != 4 || res.Pending != 0 {
		t.Fatalf("after the rebuild: %+v", res)
	}
	// (projections verify's scratch rebuild compares the hash column row
	// by row too: TestVerifyFindsEveryCorruption covers it.)
}

// An event the trail cannot store (jsonb refuses \u0000) is quarantined
// on the isolate path, each other event of its batch applied under its own
// savepoint: the chain skips it and verify counts it, without a problem.
func TestAuditChainThroughQuarantine(t *testing.T) {
	t.Parallel()
	af := newAuditFixture(t)
	af.stop()
	af.f.seed(t, 1)
	poison := af.appendAt(t, base, events.Subject(events.AggSession, uuid.NewString()), events.SessionStarted, `{"a":"\u0000"}`)
	af.f.seed(t, 1)
	af.stop = start(t, NewRunner(af.f.pool, af.f.store, Audit{}, testRunnerConfig()))
	af.sync(t)
	var n int
	if err := af.f.pool.QueryRow(testCtx(t), "SELECT count(*) FROM projection_quarantine WHERE projection = 'audit' AND seq = $1", int64(poison)).Scan(&n); err != nil || n != 1 {
		t.Fatalf("poison %d quarantined %d times (%v)", poison, n, err)
	}
	res := af.verify(t)
	if !res.OK() || res.Quarantined != 1 {
		t.Fatalf("verify through a quarantined event: %+v", res)
	}
}

// An export verifies from the file alone; a changed entry, a removed line,
// hashes forged onwards and a foreign key are refused; a project's export
// carries the other entries as links and verifies as well.
func TestAuditExportVerifiesOffline(t *testing.T) {
	t.Parallel()
	af := newAuditFixture(t)
	last := af.f.lastSeq(t)
	export := func(opt AuditExportOptions) []byte {
		t.Helper()
		var buf bytes.Buffer
		if _, err := ExportAudit(testCtx(t), af.f.pool, &buf, opt); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	check := func(name string, file []byte, trusted map[string]ed25519.PublicKey) *ExportVerifyResult {
		t.Helper()
		res, err := VerifyAuditExport(bytes.NewReader(file), trusted, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return res
	}
	full := export(AuditExportOptions{})
	pub := af.key.Public().(ed25519.PublicKey)
	if res := check("full", full, nil); !res.OK() || uint64(res.Entries) != last || res.Checkpoints != 1 || !slices.Equal(res.KeysUsed, []string{af.kid}) {
		t.Fatalf("full export: %+v", res)
	}
	if res := check("trusted", full, map[string]ed25519.PublicKey{af.kid: pub}); !res.OK() {
		t.Fatalf("with the platform's key: %+v", res)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	opub := other.Public().(ed25519.PublicKey)
	if res := check("foreign key", full, map[string]ed25519.PublicKey{auth.KeyID(opub): opub}); res.OK() {
		t.Fatal("an export verified with a key that did not sign it")
	}
	lines := bytes.Split(bytes.TrimSuffix(full, []byte("\n")), []byte("\n"))
	join := func(ls [][]byte) []byte { return append(bytes.Join(ls, []byte("\n")), '\n') }
	// A changed summary in entry 3 (line 4: the header is line 1).
	changed := slices.Clone(lines)
	changed[3] = bytes.Replace(changed[3], []byte(`"summary":"`), []byte(`"summary":"nothing: `), 1)
	if res := check("changed", join(changed), nil); res.OK() || res.Problems[0].Seq != 3 || res.Problems[0].Kind != "chain" {
		t.Fatalf("changed entry: %+v", res)
	}
	// A removed entry.
	removed := slices.Delete(slices.Clone(lines), 4, 5)
	if res := check("removed", join(removed), nil); res.OK() || res.Problems[0].Seq != 5 {
		t.Fatalf("removed entry: %+v", res)
	}
	// A changed entry with every hash after it recomputed: the chain holds,
	// the signature does not.
	forged := slices.Clone(lines)
	prev := GenesisHash
	for i := 1; i < len(forged); i++ {
		var rec exportRecord
		if err := json.Unmarshal(forged[i], &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Record != "entry" {
			rec.Hash = fmt.Sprintf("%x", prev)
		} else {
			var e ChainEntry
			if err := json.Unmarshal(rec.Entry, &e); err != nil {
				t.Fatal(err)
			}
			if i == 2 {
				e.Summary = "forged"
			}
			d, err := e.Digest()
			if err != nil {
				t.Fatal(err)
			}
			prev = ChainNext(prev, d)
			rec.Entry, _ = json.Marshal(e)
			rec.Hash = fmt.Sprintf("%x", prev)
		}
		forged[i], _ = json.Marshal(rec)
	}
	res := check("forged", join(forged), nil)
	if res.OK() {
		t.Fatal("an export forged onwards verified")
	}
	for _, p := range res.Problems {
		if p.Kind != "checkpoint" {
			t.Fatalf("forged onwards: the chain holds, only the signature may fail: %+v", res.Problems)
		}
	}
	// Not an export at all.
	if _, err := VerifyAuditExport(strings.NewReader(`{"record":"entry"}`+"\n"), nil, 0); err == nil {
		t.Fatal("a file without a header verified")
	}
	// A range: its prev_hash anchors the chain, and it ends at a checkpoint.
	part := export(AuditExportOptions{From: 4})
	if res := check("range", part, nil); !res.OK() || uint64(res.Entries) != last-3 {
		t.Fatalf("range export: %+v", res)
	}
	// A row inserted at sequence 0 (verify reports it) is not the anchor
	// of an export from the first entry.
	af.exec(t, "INSERT INTO audit_entries SELECT 0, event_id, time, type, actor, subject, correlation_id, causation_id, summary, data, project_id, sha256(hash) FROM audit_entries WHERE seq = 2")
	if res := check("after a row at 0", export(AuditExportOptions{}), nil); !res.OK() || uint64(res.Entries) != last {
		t.Fatalf("export with a row at sequence 0: %+v", res)
	}
	af.exec(t, "DELETE FROM audit_entries WHERE seq = 0")
	// A project's export: its two entries in full, the rest as links.
	proj := export(AuditExportOptions{Project: af.pid})
	if res := check("project", proj, nil); !res.OK() || res.Entries != 2 || uint64(res.Links) != last-2 {
		t.Fatalf("project export: %+v", res)
	}
	if bytes.Contains(proj, []byte("user0@example.com")) {
		t.Fatal("a project's export discloses another entry")
	}
	// To a sequence beyond the newest checkpoint: not sealed yet.
	af.f.seed(t, 1)
	waitCaughtUp(t, af.f.pool, af.f.lastSeq(t), "audit")
	if _, err := ExportAudit(testCtx(t), af.f.pool, &bytes.Buffer{}, AuditExportOptions{To: last + 1}); err != ErrNotSealed {
		t.Fatalf("export past the newest checkpoint: %v, want ErrNotSealed", err)
	}
	// From an entry stored but not sealed yet: not sealed (the CLI waits),
	// not empty; from beyond every entry: empty.
	if _, err := ExportAudit(testCtx(t), af.f.pool, &bytes.Buffer{}, AuditExportOptions{From: last + 1}); err != ErrNotSealed {
		t.Fatalf("export from an unsealed entry: %v, want ErrNotSealed", err)
	}
	if _, err := ExportAudit(testCtx(t), af.f.pool, &bytes.Buffer{}, AuditExportOptions{From: last + 100}); err != ErrEmptyExport {
		t.Fatalf("export from beyond the trail: %v, want ErrEmptyExport", err)
	}
}

// Canonical is RFC 8785: members sorted, numbers as ECMAScript writes
// them, minimal escapes; data with a duplicate key as jsonb keeps it.
func TestChainEntryCanonical(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ data, want string }{
		{`{"b":1,"a":[2.50,1e3,-0]}`, `{"a":[2.5,1000,0],"b":1}`},
		{`{"a":1,"a":2}`, `{"a":2}`},
		{`{"é":"\u00e9<>","\u20ac":1,"\r":2}`, `{"\r":2,"é":"é<>","€":1}`},
	} {
		got, err := ChainEntry{Seq: 1, Data: json.RawMessage(c.data)}.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		want := `{"actor":"","causation_id":"","correlation_id":"","data":` + c.want + `,"event_id":"","project_id":"","seq":1,"subject":"","summary":"","time":"","type":""}`
		if string(got) != want {
			t.Fatalf("%s:\n got %s\nwant %s", c.data, got, want)
		}
	}
}

// canonicalSeeds are data the fast canonical form must write as
// gowebpki/jcs does: escapes, every control character, characters beyond
// U+FFFF against U+E000..U+FFFF in key order, numbers at the edges of the
// ECMAScript formats, nesting.
var canonicalSeeds = []string{
	`{}`, `[]`, `null`, `true`, `"x"`, `0`, `-0`, `1e21`, `1e-7`, `123456789012345680000`, `0.000001`, `5e-324`, `1.7976931348623157e308`,
	`{"b":1,"a":[2.50,1e3,-0,{"y":null,"x":false}]}`, `{"\u0000\u0001\u001f\u007f\b\t\n\f\r\"\\/":"\u2028\u2029\u00e9\ud83d\ude00"}`,
	`{"\ud83d\ude00":1,"\ue000":2,"\uffff":3,"a":4,"":5}`, `{"k":[[[[[]]]]],"n":-1.5e-10,"m":9007199254740993}`,
	`{"a":"<&>","b":"\u00e9","c":"é"}`,
}

// The fast canonical form is gowebpki/jcs's (RFC 8785), byte for byte.
func TestCanonicalMatchesJCS(t *testing.T) {
	t.Parallel()
	for _, s := range canonicalSeeds {
		checkCanonical(t, []byte(s))
	}
}

func FuzzCanonical(f *testing.F) {
	for _, s := range canonicalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		checkCanonical(t, data)
	})
}

func checkCanonical(t *testing.T, data []byte) {
	t.Helper()
	got, err := canonicalData(nil, data)
	if err != nil {
		// Only what Go cannot decode as the trail stores it: numbers
		// beyond a double (auditData stores such data as null).
		var v any
		if json.Unmarshal(data, &v) == nil {
			t.Fatalf("%s: %v", data, err)
		}
		return
	}
	// The reference: the value as Go (and jsonb) keeps it, through jcs.
	var v any
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		t.Fatal(err)
	}
	plain, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	want, err := jcs.Transform(plain)
	if err != nil {
		t.Fatalf("%s: jcs: %v", data, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s:\n fast %s\n jcs  %s", data, got, want)
	}
	// A whole entry too.
	c := ChainEntry{Seq: 7, EventID: "e", Time: "t", Type: "ty", Actor: "a\u2028", Subject: "s", ProjectID: "p", CorrelationID: "c\"",
		CausationID: "", Summary: "é\x01", Data: data}
	fast, err := c.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	c.Data = plain
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := jcs.Transform(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(fast, ref) {
		t.Fatalf("entry with %s:\n fast %s\n jcs  %s", data, fast, ref)
	}
}

// A row deleted behind a forged quarantine record: the hashes after it
// recomputed (no key needed), the checkpoints after it dropped and the
// trail sealed again by the platform's own sealer, so the chain, the
// signatures and the quarantine all agree. Verify still reports the
// event's missing entry, because the projection would store it; a real
// quarantined event (jsonb refuses \u0000) stays counted, not reported.
func TestAuditVerifyFindsForgedQuarantine(t *testing.T) {
	t.Parallel()
	af := newAuditFixture(t)
	af.stop()
	poison := af.appendAt(t, base, events.Subject(events.AggSession, uuid.NewString()), events.SessionStarted, `{"a":"\u0000"}`)
	af.f.seed(t, 1)
	af.stop = start(t, NewRunner(af.f.pool, af.f.store, Audit{}, testRunnerConfig()))
	af.sync(t)
	af.stop()
	if res := af.verify(t); !res.OK() || res.Quarantined != 1 {
		t.Fatalf("intact trail with a real quarantined event: %+v", res)
	}
	const victim = 4
	af.exec(t, "DELETE FROM audit_entries WHERE seq = $1", victim)
	af.exec(t, `INSERT INTO projection_quarantine (projection, seq, event_id, type, subject, sqlstate, error)
		VALUES ('audit', $1, 'x', 'x', 'x', '22P05', 'unsupported Unicode escape sequence')`, victim)
	// Re-chain every row after the victim from the stored rows.
	tx, err := af.f.pool.Begin(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	s := &storedEntries{tx: tx}
	var rows []storedEntry
	for err := s.next(testCtx(t)); s.cur != nil; err = s.next(testCtx(t)) {
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, *s.cur)
	}
	if err := tx.Rollback(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	prev := GenesisHash
	for _, r := range rows {
		d, err := r.ChainEntry.Digest()
		if err != nil {
			t.Fatal(err)
		}
		prev = ChainNext(prev, d)
		af.exec(t, "UPDATE audit_entries SET hash = $1 WHERE seq = $2", prev, int64(r.Seq))
	}
	af.exec(t, "DELETE FROM audit_checkpoints WHERE seq >= $1", victim)
	// The platform's sealer recomputes from the stream and refuses; one
	// that signs the stored hash as it is (no Events) has it sealed, as
	// the sealer did before it checked.
	if _, err := af.sealer.Seal(testCtx(t)); !errors.Is(err, ErrTrailDiverges) {
		t.Fatalf("the sealer signed over a forged quarantine record: %v", err)
	}
	blind := NewAuditSealer(af.f.pool, AuditSealerConfig{Key: af.key, KeyID: af.kid})
	if _, err := blind.Seal(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	res := af.verify(t)
	t.Logf("forged quarantine: %+v", res.Problems)
	wantProblems(t, res, AuditProblem{Seq: victim, Kind: "missing"})
	if res.Quarantined != 2 {
		t.Fatalf("quarantined %d, want 2 (the real one at %d and the forged one)", res.Quarantined, poison)
	}
}

// A key change: checkpoints signed before it stay verifiable, by the old
// key still published, live and in an export (which lists both keys).
func TestAuditKeyRotation(t *testing.T) {
	t.Parallel()
	af := newAuditFixture(t)
	_, next, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nextID := auth.KeyID(next.Public().(ed25519.PublicKey))
	af.sealer = NewAuditSealer(af.f.pool, AuditSealerConfig{Key: next, KeyID: nextID, Events: af.f.store})
	af.f.seed(t, 1)
	af.sync(t)
	if res := af.verify(t); !res.OK() || res.Checkpoints != 2 {
		t.Fatalf("verify across a key change: %+v", res)
	}
	var buf bytes.Buffer
	if _, err := ExportAudit(testCtx(t), af.f.pool, &buf, AuditExportOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := VerifyAuditExport(&buf, nil, 0)
	want := []string{af.kid, nextID}
	slices.Sort(want)
	if err != nil || !res.OK() || res.Checkpoints != 2 || !slices.Equal(res.KeysUsed, want) {
		t.Fatalf("export across a key change: %+v %v", res, err)
	}
}

// The sealer signs only what the stream implies: a stored hash changed
// before it was sealed, or the whole trail re-chained over a changed entry
// with the checkpoints removed, is refused (ErrTrailDiverges) and nothing
// is signed; the intact trail is sealed again at once.
func TestAuditSealerSignsOnlyWhatTheStreamImplies(t *testing.T) {
	t.Parallel()
	af := newAuditFixture(t)
	af.f.seed(t, 2)
	last := af.f.lastSeq(t)
	waitCaughtUp(t, af.f.pool, last, "audit")
	af.stop()
	newest := func() int64 {
		var n int64
		if err := af.f.pool.QueryRow(testCtx(t), "SELECT COALESCE(max(seq), 0) FROM audit_checkpoints").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := newest()
	// 1. The newest (unsealed) entry's hash changed.
	af.exec(t, "UPDATE audit_entries SET hash = sha256(hash) WHERE seq = $1", int64(last))
	if _, err := af.sealer.Seal(testCtx(t)); !errors.Is(err, ErrTrailDiverges) || newest() != before {
		t.Fatalf("sealing a changed hash: %v, newest checkpoint %d (was %d)", err, newest(), before)
	}
	af.exec(t, "UPDATE audit_entries SET hash = $1 WHERE seq = $2", hashAfter(t, af, int64(last)), int64(last))
	// 2. An entry changed, every hash re-chained from the stored rows, the
	// checkpoints removed; a fresh sealer (a restart) with the same key.
	af.exec(t, "UPDATE audit_entries SET summary = 'nothing happened' WHERE seq = 3")
	rechain(t, af)
	af.exec(t, "DELETE FROM audit_checkpoints")
	fresh := NewAuditSealer(af.f.pool, AuditSealerConfig{Key: af.key, KeyID: af.kid, Events: af.f.store})
	if _, err := fresh.Seal(testCtx(t)); !errors.Is(err, ErrTrailDiverges) || newest() != 0 {
		t.Fatalf("sealing a re-chained trail: %v, newest checkpoint %d", err, newest())
	}
	// Restored (the projection's summary, the chain again): sealed.
	if err := Reset(testCtx(t), af.f.pool); err != nil {
		t.Fatal(err)
	}
	af.stop = start(t, NewRunner(af.f.pool, af.f.store, Audit{}, testRunnerConfig()))
	waitCaughtUp(t, af.f.pool, last, "audit")
	if sealed, err := fresh.Seal(testCtx(t)); err != nil || sealed != last {
		t.Fatalf("sealing the rebuilt trail: %d, %v", sealed, err)
	}
	if res := af.verify(t); !res.OK() {
		t.Fatalf("verify after sealing the rebuilt trail: %+v", res.Problems)
	}
}

// hashAfter is the chain's hash at seq recomputed from the stored rows.
func hashAfter(t *testing.T, af *auditFixture, seq int64) []byte {
	t.Helper()
	var h []byte
	for _, r := range storedRows(t, af) {
		d, err := r.ChainEntry.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if h = ChainNext(orGenesis(h), d); int64(r.Seq) == seq {
			return h
		}
	}
	t.Fatalf("no entry %d", seq)
	return nil
}

func orGenesis(h []byte) []byte {
	if h == nil {
		return GenesisHash
	}
	return h
}

// rechain rewrites every stored hash as the chain of the stored rows.
func rechain(t *testing.T, af *auditFixture) {
	t.Helper()
	prev := GenesisHash
	for _, r := range storedRows(t, af) {
		d, err := r.ChainEntry.Digest()
		if err != nil {
			t.Fatal(err)
		}
		prev = ChainNext(prev, d)
		af.exec(t, "UPDATE audit_entries SET hash = $1 WHERE seq = $2", prev, int64(r.Seq))
	}
}

func storedRows(t *testing.T, af *auditFixture) []storedEntry {
	t.Helper()
	tx, err := af.f.pool.Begin(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(testCtx(t)) //nolint:errcheck // read only
	s := &storedEntries{tx: tx}
	var rows []storedEntry
	for err := s.next(testCtx(t)); s.cur != nil; err = s.next(testCtx(t)) {
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, *s.cur)
	}
	return rows
}
