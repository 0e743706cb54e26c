package approvals_test

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/approvals"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// The promotion deciders are table-tested like the registry's: given events
// (folded with the Evolve functions replay uses), when a command, then
// events or a typed error; decided changes are built into envelopes as the
// store would (handlers.Build), so what a decider returns must encode.

var t0 = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)

const (
	projID  = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	modelID = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	promoID = "dddddddd-dddd-4ddd-8ddd-dddddddddddd"
	// alice registers the versions; bob requests; carol is an approver,
	// dave an owner, erin a viewer the policy names, frank an editor.
	alice = "22222222-2222-4222-8222-222222222222"
	bob   = "33333333-3333-4333-8333-333333333333"
	carol = "44444444-4444-4444-8444-444444444444"
	dave  = "55555555-5555-4555-8555-555555555555"
	erin  = "66666666-6666-4666-8666-666666666666"
	frank = "77777777-7777-4777-8777-777777777777"

	gate = "metrics.auc >= 0.9 AND metrics.latency_ms < 50"
)

var (
	projSubj  = events.Subject(events.AggProject, projID)
	modelSubj = events.Subject(events.AggModel, modelID)
	promoSubj = events.Subject(events.AggPromotion, promoID)
)

func user(id string) events.Actor { return events.Actor{Kind: events.ActorUser, ID: id} }

// ev is a stored event of type typ, caused by actor.
func ev(t *testing.T, actor events.Actor, subject, typ string, data any) events.Envelope {
	t.Helper()
	e, err := events.New(events.Meta{Actor: actor, Time: t0}, subject, typ, 0, data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func fold[S any](t *testing.T, evolve handlers.Evolve[S], s S, evs []events.Envelope) S {
	t.Helper()
	for i, e := range evs {
		e.Sequence = uint64(i + 1)
		var err error
		if s, err = evolve(s, e); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// applied builds changes into envelopes as the store would, failing the
// test if they cannot be (an unencodable value, a type on the wrong
// subject), and returns those of subject.
func applied(t *testing.T, subject string, changes []handlers.Change) []events.Envelope {
	t.Helper()
	if len(changes) == 0 {
		return nil
	}
	built, err := handlers.Build(events.Meta{Actor: events.SystemActor, Time: t0}, nil, changes...)
	if err != nil {
		t.Fatalf("the decided changes cannot be stored: %v", err)
	}
	var out []events.Envelope
	for _, a := range built {
		if a.Event.Subject == subject {
			out = append(out, a.Event)
		}
	}
	return out
}

func cat(a []events.Envelope, b ...events.Envelope) []events.Envelope {
	return append(append([]events.Envelope{}, a...), b...)
}

// Project and model givens.

func policy(t *testing.T, p events.PolicyData) events.PolicyData {
	t.Helper()
	n, err := registry.NormalizePolicy(p)
	if err != nil {
		t.Fatalf("NormalizePolicy(%+v): %v", p, err)
	}
	return n
}

func project(t *testing.T, ps ...events.PolicyData) registry.ProjectState {
	evs := []events.Envelope{ev(t, user(dave), projSubj, events.ProjectCreated, events.ProjectCreatedData{ProjectID: projID,
		Slug: "vision", Name: "Vision", OwnerID: dave})}
	for _, p := range ps {
		evs = append(evs, ev(t, user(dave), projSubj, events.ProjectPolicySet, events.ProjectPolicySetData{ProjectID: projID, Policy: p}))
	}
	return fold(t, registry.EvolveProject, registry.ProjectState{}, evs)
}

func modelCreated(t *testing.T) events.Envelope {
	return ev(t, user(alice), modelSubj, events.ModelCreated, events.ModelCreatedData{ModelID: modelID, ProjectID: projID, Name: "resnet"})
}

func registered(t *testing.T, v int) events.Envelope {
	return ev(t, user(alice), modelSubj, events.ModelVersionRegistered, events.ModelVersionRegisteredData{ModelID: modelID, Version: v,
		Source: "s3://x"})
}

func transitioned(t *testing.T, v int, from, to string) events.Envelope {
	return ev(t, user(dave), modelSubj, events.ModelVersionTransition, events.ModelVersionTransitionData{ModelID: modelID, Version: v,
		From: from, To: to})
}

func aliasSet(t *testing.T, alias string, v, prev int) events.Envelope {
	return ev(t, user(dave), modelSubj, events.ModelAliasSet, events.ModelAliasSetData{ModelID: modelID, Alias: alias, Version: v, PreviousVersion: prev})
}

func artifact(t *testing.T, v int, path string) events.Envelope {
	return ev(t, user(alice), modelSubj, events.ModelArtifactRecorded, events.ModelArtifactRecordedData{ModelID: modelID, Version: v,
		Path: path, Digest: "sha256:a", Size: 1, ContentType: "application/json"})
}

func versionDeleted(t *testing.T, v int, aliases ...string) events.Envelope {
	return ev(t, user(dave), modelSubj, events.ModelVersionDeleted, events.ModelVersionDeletedData{ModelID: modelID, Version: v, RemovedAliases: aliases})
}

func modelDeleted(t *testing.T) events.Envelope {
	return ev(t, user(dave), modelSubj, events.ModelDeleted, events.ModelLifecycleData{ModelID: modelID, ProjectID: projID})
}

// versions is the model with versions 1..n, registered by alice.
func versions(t *testing.T, n int) []events.Envelope {
	evs := []events.Envelope{modelCreated(t)}
	for v := 1; v <= n; v++ {
		evs = append(evs, registered(t, v))
	}
	return evs
}

func model(t *testing.T, evs []events.Envelope) registry.ModelState {
	return fold(t, registry.EvolveModel, registry.ModelState{}, evs)
}

// Promotion givens.

// requestedData is bob's request for version 2 of resnet under pol,
// expiring an hour after t0.
func requestedData(pol events.PolicyData) events.PromotionRequestedData {
	return events.PromotionRequestedData{PromotionID: promoID, ProjectID: projID, ModelID: modelID, ModelName: "resnet", Version: 2,
		Target: pol.Target, RequesterID: bob, AuthorID: alice, Policy: pol, Gate: events.GateResult{Passed: true},
		ExpiresAt: t0.Add(time.Hour)}
}

func requested(t *testing.T, pol events.PolicyData) events.Envelope {
	return ev(t, user(bob), promoSubj, events.PromotionRequested, requestedData(pol))
}

// requestedFor is requested for version v.
func requestedFor(t *testing.T, v int, pol events.PolicyData) events.Envelope {
	d := requestedData(pol)
	d.Version = v
	return ev(t, user(bob), promoSubj, events.PromotionRequested, d)
}

func approved(t *testing.T, by string, n, of int) events.Envelope {
	return ev(t, user(by), promoSubj, events.PromotionApproved, events.PromotionApprovedData{PromotionID: promoID, ApproverID: by,
		Approvals: n, Required: of})
}

func rejected(t *testing.T, by string) events.Envelope {
	return ev(t, user(by), promoSubj, events.PromotionRejected, events.PromotionRejectedData{PromotionID: promoID, ByID: by,
		Reason: "rejected by an approver"})
}

func gateRejected(t *testing.T) events.Envelope {
	return ev(t, user(bob), promoSubj, events.PromotionRejected, events.PromotionRejectedData{PromotionID: promoID, Reason: "gate not met"})
}

func cancelled(t *testing.T) events.Envelope {
	return ev(t, user(bob), promoSubj, events.PromotionCancelled, events.PromotionCancelledData{PromotionID: promoID})
}

func completed(t *testing.T) events.Envelope {
	return ev(t, events.SystemActor, promoSubj, events.PromotionCompleted, events.PromotionCompletedData{PromotionID: promoID,
		ModelID: modelID, Version: 2, Target: "production"})
}

func failed(t *testing.T) events.Envelope {
	return ev(t, events.SystemActor, promoSubj, events.PromotionFailed, events.PromotionFailedData{PromotionID: promoID, Reason: "gone"})
}

func promotion(t *testing.T, evs []events.Envelope) approvals.PromotionState {
	return fold(t, approvals.Evolve, approvals.PromotionState{}, evs)
}

// wantErr is an expected typed failure; the zero value means success.
type wantErr struct {
	kind handlers.Kind
	code string
}

var (
	notFound         = wantErr{handlers.NotFound, "not-found"}
	noPolicy         = wantErr{handlers.Conflict, "no-policy"}
	alreadyPromoted  = wantErr{handlers.Conflict, "already-promoted"}
	separation       = wantErr{handlers.Forbidden, "separation-of-duties"}
	forbidden        = wantErr{handlers.Forbidden, "forbidden"}
	alreadyApproved  = wantErr{handlers.Conflict, "already-approved"}
	expired          = wantErr{handlers.Conflict, "promotion-expired"}
	closed           = wantErr{handlers.Conflict, "promotion-closed"}
	gateMetrics      = map[string]float64{"auc": 0.95, "latency_ms": 20, "loss": 0.1}
	gateSeen         = map[string]events.MetricValue{"auc": 0.95, "latency_ms": 20} // only the metrics the gate names
	explanation      = "explanation.json"
	approverRoles    = []string{string(authz.ProjectApprover), string(authz.ProjectOwner)}
	carolAsApprover  = approvals.Approver{UserID: carol, Role: authz.ProjectApprover}
	daveAsOwner      = approvals.Approver{UserID: dave, Role: authz.ProjectOwner}
	bobAsApprover    = approvals.Approver{UserID: bob, Role: authz.ProjectApprover}
	aliceAsOwner     = approvals.Approver{UserID: alice, Role: authz.ProjectOwner}
	erinAsViewer     = approvals.Approver{UserID: erin, Role: authz.ProjectViewer}
	frankAsEditor    = approvals.Approver{UserID: frank, Role: authz.ProjectEditor}
	frankAsViewer    = approvals.Approver{UserID: frank, Role: authz.ProjectViewer}
	beforeExpiry     = t0.Add(time.Hour - time.Nanosecond)
	atExpiry         = t0.Add(time.Hour)
	duringTheRequest = t0.Add(time.Minute)
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

func checkChanges(t *testing.T, got, want []handlers.Change) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("changes:\n got  %+v\n want %+v", got, want)
	}
}

func TestDecideRequest(t *testing.T) {
	t.Parallel()
	prodPol := policy(t, events.PolicyData{Target: "production", RequiredApprovals: 2, SeparationOfDuties: true, Gate: gate,
		RequiredArtifacts: []string{explanation}, RequestTTLSeconds: 3600})
	champPol := policy(t, events.PolicyData{Target: "@champion"})
	ps := project(t, prodPol, champPol)
	now := t0.Add(10 * time.Minute)
	// v1 in production and champion; v2 has the explanation; v3 has none;
	// v4 is deleted.
	given := cat(versions(t, 4), transitioned(t, 1, "none", "production"), aliasSet(t, "champion", 1, 0),
		artifact(t, 2, explanation), versionDeleted(t, 4))
	data := func(v int, target string, pol events.PolicyData, g events.GateResult) events.PromotionRequestedData {
		return events.PromotionRequestedData{PromotionID: promoID, ProjectID: projID, ModelID: modelID, ModelName: "resnet", Version: v,
			Target: target, Comment: "ship it", RequesterID: bob, AuthorID: alice, Policy: pol, Gate: g,
			ExpiresAt: now.Add(time.Duration(pol.RequestTTLSeconds) * time.Second)}
	}
	req := func(d events.PromotionRequestedData) handlers.Change {
		return handlers.Change{Subject: promoSubj, Type: events.PromotionRequested, Data: d}
	}
	cases := []struct {
		name    string
		ps      registry.ProjectState
		given   []events.Envelope
		version int
		target  string
		metrics map[string]float64
		want    []handlers.Change // exact; nil when checked through rejected
		err     wantErr
		// rejected: the request is recorded rejected, its reason naming
		// each of these.
		rejected []string
		missing  []string // the gate result's missing artifacts
	}{
		{name: "no policy for the stage", ps: ps, given: given, version: 2, target: "staging", err: noPolicy},
		{name: "no policy for the alias", ps: ps, given: given, version: 2, target: "@challenger", err: noPolicy},
		{name: "no policy at all", ps: project(t), given: given, version: 2, target: "production", err: noPolicy},
		{name: "missing version", ps: ps, given: given, version: 9, target: "production", err: notFound},
		{name: "deleted version", ps: ps, given: given, version: 4, target: "production", err: notFound},
		{name: "deleted model", ps: ps, given: cat(given, modelDeleted(t)), version: 2, target: "production", err: notFound},
		{name: "no model", ps: ps, version: 2, target: "production", err: notFound},
		{name: "already in the stage", ps: ps, given: given, version: 1, target: "production", metrics: gateMetrics, err: alreadyPromoted},
		{name: "the alias already points there", ps: ps, given: given, version: 1, target: "@champion", err: alreadyPromoted},
		{name: "a staging request that would take the production version out of production", ps: project(t, prodPol, champPol,
			policy(t, events.PolicyData{Target: "staging"})), given: given, version: 1, target: "staging",
			err: wantErr{handlers.Forbidden, "approval-required"}},
		{name: "gate met and artifacts present: one event with the gate's inputs", ps: ps, given: given, version: 2, target: "production",
			metrics: gateMetrics, want: []handlers.Change{req(data(2, "production", prodPol, events.GateResult{Passed: true, Metrics: gateSeen}))}},
		{name: "no gate: passed, no metrics recorded", ps: ps, given: given, version: 2, target: "@champion", metrics: gateMetrics,
			want: []handlers.Change{req(data(2, "@champion", champPol, events.GateResult{Passed: true}))}},
		{name: "the alias moves from another version", ps: ps, given: given, version: 3, target: "@champion",
			want: []handlers.Change{req(data(3, "@champion", champPol, events.GateResult{Passed: true}))}},
		{name: "a metric under the gate", ps: ps, given: given, version: 2, target: "production",
			metrics: map[string]float64{"auc": 0.85, "latency_ms": 20}, rejected: []string{"gate not met", gate, "auc = 0.85"}},
		{name: "a metric over the gate", ps: ps, given: given, version: 2, target: "production",
			metrics: map[string]float64{"auc": 0.95, "latency_ms": 50}, rejected: []string{"gate not met", "latency_ms = 50"}},
		{name: "a metric the gate needs is missing", ps: ps, given: given, version: 2, target: "production",
			metrics: map[string]float64{"latency_ms": 20}, rejected: []string{"gate not met"}},
		{name: "no metrics at all", ps: ps, given: given, version: 2, target: "production", rejected: []string{"gate not met"}},
		{name: "a NaN metric fails the gate", ps: ps, given: given, version: 2, target: "production",
			metrics: map[string]float64{"auc": math.NaN(), "latency_ms": 20}, rejected: []string{"gate not met"}},
		{name: "a required artifact missing", ps: ps, given: given, version: 3, target: "production", metrics: gateMetrics,
			rejected: []string{explanation}, missing: []string{explanation}},
		{name: "gate and artifact both fail: both named", ps: ps, given: given, version: 3, target: "production",
			metrics: map[string]float64{"auc": 0.5, "latency_ms": 20}, rejected: []string{"gate not met", explanation}, missing: []string{explanation}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := model(t, tc.given)
			got, err := approvals.DecideRequest(promoID, tc.ps, m, approvals.Request{Model: "resnet", Version: tc.version, Target: tc.target,
				Comment: "ship it"}, bob, approvals.GateInputs{Metrics: tc.metrics}, now)
			checkErr(t, err, tc.err)
			if tc.err.kind != 0 {
				checkChanges(t, got, nil)
				return
			}
			if tc.rejected == nil {
				checkChanges(t, got, tc.want)
			} else {
				checkGateRejection(t, got, tc.rejected, tc.missing)
			}
			st := promotion(t, applied(t, promoSubj, got))
			d := got[0].Data.(events.PromotionRequestedData)
			wantState := events.PromotionStatePending
			if tc.rejected != nil {
				wantState = events.PromotionStateRejected
			}
			ttl := time.Duration(d.Policy.RequestTTLSeconds) * time.Second
			if !st.Created || st.State != wantState || !st.ExpiresAt.Equal(now.Add(ttl)) || st.ExpiresAt.Location() != time.UTC ||
				st.RequesterID != bob || st.AuthorID != alice || st.Version != tc.version || st.Target != tc.target {
				t.Fatalf("folded request = %+v, want %s by bob of alice's version %d to %s expiring at %s", st, wantState,
					tc.version, tc.target, now.Add(ttl))
			}
		})
	}
}

// checkGateRejection checks a request recorded with its failed gate and
// rejected, in one decision, with a reason naming each of reasons.
func checkGateRejection(t *testing.T, got []handlers.Change, reasons, missing []string) {
	t.Helper()
	if len(got) != 2 || got[0].Type != events.PromotionRequested || got[1].Type != events.PromotionRejected {
		t.Fatalf("changes = %+v, want requested then rejected", got)
	}
	d := got[0].Data.(events.PromotionRequestedData)
	r := got[1].Data.(events.PromotionRejectedData)
	if d.Gate.Passed || d.Gate.Reason == "" || r.Reason != d.Gate.Reason || r.ByID != "" || r.PromotionID != promoID {
		t.Fatalf("gate %+v, rejection %+v: want a failed gate whose reason the rejection gives, by no one", d.Gate, r)
	}
	for _, want := range reasons {
		if !strings.Contains(r.Reason, want) {
			t.Fatalf("reason %q does not name %q", r.Reason, want)
		}
	}
	if !reflect.DeepEqual(d.Gate.MissingArtifacts, missing) {
		t.Fatalf("missing artifacts = %v, want %v", d.Gate.MissingArtifacts, missing)
	}
}

// TestDecideRequestEncodesEveryMetric: run metrics may be NaN or ±Inf
// (events.MetricValue carries them), and all the gate's inputs are recorded
// in the request, so the request must still be storable, whether or not
// the gate mentions the odd metric (a NaN failing it is in
// TestDecideRequest).
func TestDecideRequestEncodesEveryMetric(t *testing.T) {
	t.Parallel()
	ps := project(t, policy(t, events.PolicyData{Target: "production", Gate: gate}))
	m := model(t, versions(t, 1))
	for name, metrics := range map[string]map[string]float64{
		"+Inf meets the gate":              {"auc": math.Inf(1), "latency_ms": 20},
		"-Inf meets the gate":              {"auc": 0.95, "latency_ms": math.Inf(-1)},
		"a NaN metric the gate leaves out": {"auc": 0.95, "latency_ms": 20, "loss": math.NaN()},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := approvals.DecideRequest(promoID, ps, m, approvals.Request{Version: 1, Target: "production"}, bob,
				approvals.GateInputs{Metrics: metrics}, t0)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || !got[0].Data.(events.PromotionRequestedData).Gate.Passed {
				t.Fatalf("changes = %+v, want one request whose gate passed", got)
			}
			if st := promotion(t, applied(t, promoSubj, got)); st.State != events.PromotionStatePending {
				t.Fatalf("folded request = %+v, want pending", st)
			}
		})
	}
}

func TestDecideApprove(t *testing.T) {
	t.Parallel()
	two := policy(t, events.PolicyData{Target: "production", RequiredApprovals: 2, ApproverUsers: []string{erin},
		ApproverRoles: approverRoles, SeparationOfDuties: true})
	lax := two
	lax.SeparationOfDuties = false
	one := policy(t, events.PolicyData{Target: "@champion", SeparationOfDuties: true})
	namesBob := policy(t, events.PolicyData{Target: "production", ApproverUsers: []string{bob}, SeparationOfDuties: true})
	pending := []events.Envelope{requested(t, two)}
	ok := func(by string, n, of int) []handlers.Change {
		return []handlers.Change{{Subject: promoSubj, Type: events.PromotionApproved, Data: events.PromotionApprovedData{
			PromotionID: promoID, ApproverID: by, Comment: "lgtm", Approvals: n, Required: of}}}
	}
	cases := []struct {
		name  string
		given []events.Envelope
		a     approvals.Approver
		now   time.Time
		want  []handlers.Change
		err   wantErr
		state string // folded state after the approval
	}{
		{name: "an approver's first of two approvals", given: pending, a: carolAsApprover, want: ok(carol, 1, 2), state: events.PromotionStatePending},
		{name: "the approval reaching the count approves", given: cat(pending, approved(t, carol, 1, 2)), a: daveAsOwner,
			want: ok(dave, 2, 2), state: events.PromotionStateApproved},
		{name: "one approval required", given: []events.Envelope{requested(t, one)}, a: daveAsOwner, want: ok(dave, 1, 1),
			state: events.PromotionStateApproved},
		{name: "self-approval by the requester", given: pending, a: bobAsApprover, err: separation},
		{name: "approval by the version's author", given: pending, a: aliceAsOwner, err: separation},
		{name: "the requester without separation of duties", given: []events.Envelope{requested(t, lax)}, a: bobAsApprover,
			want: ok(bob, 1, 2), state: events.PromotionStatePending},
		{name: "the author without separation of duties", given: []events.Envelope{requested(t, lax)}, a: aliceAsOwner,
			want: ok(alice, 1, 2), state: events.PromotionStatePending},
		{name: "a named user is still bound by separation of duties", given: []events.Envelope{requested(t, namesBob)},
			a: bobAsApprover, err: separation},
		{name: "a role the policy does not name", given: pending, a: frankAsEditor, err: forbidden},
		{name: "a viewer", given: pending, a: frankAsViewer, err: forbidden},
		{name: "a named user approves whatever the role", given: pending, a: erinAsViewer, want: ok(erin, 1, 2), state: events.PromotionStatePending},
		{name: "approving twice", given: cat(pending, approved(t, carol, 1, 2)), a: carolAsApprover, err: alreadyApproved},
		{name: "just before expiry", given: pending, a: carolAsApprover, now: beforeExpiry, want: ok(carol, 1, 2), state: events.PromotionStatePending},
		{name: "at expiry", given: pending, a: carolAsApprover, now: atExpiry, err: expired},
		{name: "after expiry, with approvals", given: cat(pending, approved(t, carol, 1, 2)), a: daveAsOwner, now: atExpiry.Add(time.Hour), err: expired},
		{name: "after cancellation", given: cat(pending, cancelled(t)), a: carolAsApprover, err: closed},
		{name: "after rejection", given: cat(pending, rejected(t, dave)), a: carolAsApprover, err: closed},
		{name: "after the gate rejected it", given: cat(pending, gateRejected(t)), a: carolAsApprover, err: closed},
		{name: "after approval", given: cat(pending, approved(t, carol, 1, 2), approved(t, dave, 2, 2)), a: erinAsViewer, err: closed},
		{name: "an approved request past its expiry is still closed", given: cat(pending, approved(t, carol, 1, 2), approved(t, dave, 2, 2)),
			a: erinAsViewer, now: atExpiry, err: closed},
		{name: "after completion", given: cat(pending, approved(t, carol, 1, 2), approved(t, dave, 2, 2), completed(t)), a: erinAsViewer, err: closed},
		{name: "after failure", given: cat(pending, approved(t, carol, 1, 2), approved(t, dave, 2, 2), failed(t)), a: erinAsViewer, err: closed},
		{name: "no request", a: carolAsApprover, err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = duringTheRequest
			}
			s := promotion(t, tc.given)
			got, err := approvals.DecideApprove(s, tc.a, "lgtm", now)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if tc.err.kind != 0 {
				return
			}
			after := fold(t, approvals.Evolve, s, applied(t, promoSubj, got))
			if after.State != tc.state || len(after.Approvals) != len(s.Approvals)+1 || after.Approvals[len(s.Approvals)].UserID != tc.a.UserID {
				t.Fatalf("after the approval: state %s, approvals %+v; want %s with %s's approval added", after.State, after.Approvals, tc.state, tc.a.UserID)
			}
			if len(s.Approvals) > 0 && &s.Approvals[0] == &after.Approvals[0] {
				t.Fatal("the fold wrote into the earlier state's approvals")
			}
		})
	}
}

func TestDecideReject(t *testing.T) {
	t.Parallel()
	pol := policy(t, events.PolicyData{Target: "production", RequiredApprovals: 2, ApproverUsers: []string{erin},
		ApproverRoles: approverRoles, SeparationOfDuties: true})
	pending := []events.Envelope{requested(t, pol)}
	no := func(by string) []handlers.Change {
		return []handlers.Change{{Subject: promoSubj, Type: events.PromotionRejected, Data: events.PromotionRejectedData{
			PromotionID: promoID, ByID: by, Comment: "not yet", Reason: "rejected by an approver"}}}
	}
	cases := []struct {
		name  string
		given []events.Envelope
		a     approvals.Approver
		now   time.Time
		want  []handlers.Change
		err   wantErr
	}{
		{name: "an approver says no", given: pending, a: carolAsApprover, want: no(carol)},
		{name: "a named user says no", given: pending, a: erinAsViewer, want: no(erin)},
		{name: "after an approval, another approver says no", given: cat(pending, approved(t, carol, 1, 2)), a: daveAsOwner, want: no(dave)},
		{name: "the requester under separation of duties", given: pending, a: bobAsApprover, err: separation},
		{name: "the author under separation of duties", given: pending, a: aliceAsOwner, err: separation},
		{name: "a role the policy does not name", given: pending, a: frankAsEditor, err: forbidden},
		{name: "at expiry", given: pending, a: carolAsApprover, now: atExpiry, err: expired},
		{name: "after cancellation", given: cat(pending, cancelled(t)), a: carolAsApprover, err: closed},
		{name: "after rejection", given: cat(pending, rejected(t, dave)), a: carolAsApprover, err: closed},
		{name: "after approval", given: cat(pending, approved(t, carol, 1, 2), approved(t, dave, 2, 2)), a: erinAsViewer, err: closed},
		{name: "no request", a: carolAsApprover, err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = duringTheRequest
			}
			s := promotion(t, tc.given)
			got, err := approvals.DecideReject(s, tc.a, "not yet", now)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if tc.err.kind != 0 {
				return
			}
			after := fold(t, approvals.Evolve, s, applied(t, promoSubj, got))
			if after.State != events.PromotionStateRejected || after.Reason != "rejected by an approver" {
				t.Fatalf("after the rejection: %s (%q), want rejected", after.State, after.Reason)
			}
		})
	}
}

func TestDecideCancel(t *testing.T) {
	t.Parallel()
	pol := policy(t, events.PolicyData{Target: "production", RequiredApprovals: 2, SeparationOfDuties: true})
	pending := []events.Envelope{requested(t, pol)}
	withdrawn := []handlers.Change{{Subject: promoSubj, Type: events.PromotionCancelled, Data: events.PromotionCancelledData{
		PromotionID: promoID, Comment: "wrong version"}}}
	cases := []struct {
		name  string
		given []events.Envelope
		user  string
		role  authz.ProjectRole
		now   time.Time
		want  []handlers.Change
		err   wantErr
	}{
		{name: "the requester withdraws it", given: pending, user: bob, role: authz.ProjectEditor, want: withdrawn},
		{name: "the requester withdraws it after an approval", given: cat(pending, approved(t, carol, 1, 2)), user: bob, role: authz.ProjectEditor, want: withdrawn},
		{name: "a requester now only a viewer may not", given: pending, user: bob, role: authz.ProjectViewer, err: forbidden},
		{name: "an owner may", given: pending, user: dave, role: authz.ProjectOwner, want: withdrawn},
		{name: "an approver may not", given: pending, user: carol, role: authz.ProjectApprover, err: forbidden},
		{name: "the version's author may not", given: pending, user: alice, role: authz.ProjectEditor, err: forbidden},
		{name: "at expiry", given: pending, user: bob, role: authz.ProjectEditor, now: atExpiry, err: expired},
		{name: "after cancellation", given: cat(pending, cancelled(t)), user: bob, role: authz.ProjectEditor, err: closed},
		{name: "after rejection", given: cat(pending, rejected(t, dave)), user: bob, role: authz.ProjectEditor, err: closed},
		{name: "after approval", given: cat(pending, approved(t, carol, 1, 2), approved(t, dave, 2, 2)), user: bob, role: authz.ProjectEditor, err: closed},
		{name: "no request", user: bob, role: authz.ProjectEditor, err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = duringTheRequest
			}
			s := promotion(t, tc.given)
			got, err := approvals.DecideCancel(s, approvals.Approver{UserID: tc.user, Role: tc.role}, "wrong version", now)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if tc.err.kind != 0 {
				return
			}
			if after := fold(t, approvals.Evolve, s, applied(t, promoSubj, got)); after.State != events.PromotionStateCancelled {
				t.Fatalf("after the cancellation: %s, want cancelled", after.State)
			}
		})
	}
}

func TestPromotionStateAt(t *testing.T) {
	t.Parallel()
	pol := policy(t, events.PolicyData{Target: "production"})
	pending := promotion(t, []events.Envelope{requested(t, pol)})
	approvedState := promotion(t, []events.Envelope{requested(t, pol), approved(t, carol, 1, 1)})
	for _, c := range []struct {
		s    approvals.PromotionState
		at   time.Time
		want string
	}{
		{pending, beforeExpiry, events.PromotionStatePending},
		{pending, atExpiry, events.PromotionStateExpired},
		{approvedState, atExpiry, events.PromotionStateApproved},
	} {
		if got := c.s.StateAt(c.at); got != c.want {
			t.Errorf("StateAt(%s) of a %s request = %s, want %s", c.at, c.s.State, got, c.want)
		}
	}
}

func TestDecideComplete(t *testing.T) {
	t.Parallel()
	prodPol := policy(t, events.PolicyData{Target: "production", RequiredApprovals: 2})
	champPol := policy(t, events.PolicyData{Target: "@champion"})
	// v1 in production and champion, v2 the candidate.
	live := cat(versions(t, 2), transitioned(t, 1, "none", "production"), aliasSet(t, "champion", 1, 0))
	toProd := []events.Envelope{requested(t, prodPol), approved(t, carol, 1, 2), approved(t, dave, 2, 2)}
	toChamp := []events.Envelope{requested(t, champPol), approved(t, carol, 1, 1)}
	authority := events.Authority{PromotionID: promoID}
	done := func(target string) handlers.Change {
		return handlers.Change{Subject: promoSubj, Type: events.PromotionCompleted, Data: events.PromotionCompletedData{
			PromotionID: promoID, ModelID: modelID, Version: 2, Target: target}}
	}
	fail := func(reason string) []handlers.Change {
		return []handlers.Change{{Subject: promoSubj, Type: events.PromotionFailed, Data: events.PromotionFailedData{
			PromotionID: promoID, Reason: reason}}}
	}
	stagingPol := policy(t, events.PolicyData{Target: "staging"})
	toStaging1 := []events.Envelope{requestedFor(t, 1, stagingPol), approved(t, carol, 1, 1)}
	archivedProj := project(t, prodPol, champPol)
	archivedProj.Archived = true
	cases := []struct {
		name   string
		ps     *registry.ProjectState // default: production and @champion governed
		promo  []events.Envelope
		model  []events.Envelope
		want   []handlers.Change
		state  string         // the request's folded state after; "" when nothing changes
		stages map[int]string // the model's stages after
		alias  map[string]int // the model's aliases after
	}{
		{name: "pending: nothing to do", promo: toProd[:2], model: live},
		{name: "a staging request may not take the production version out of production", promo: toStaging1, model: live,
			want: fail("the move would also change production, which its own approval policy governs"), state: events.PromotionStateFailed,
			stages: map[int]string{1: "production"}},
		{name: "the project was archived meanwhile", ps: &archivedProj, promo: toProd, model: live,
			want: fail("the project is archived"), state: events.PromotionStateFailed, stages: map[int]string{1: "production", 2: "none"}},
		{name: "rejected: nothing to do", promo: cat(toProd[:2], rejected(t, dave)), model: live},
		{name: "cancelled: nothing to do", promo: cat(toProd[:1], cancelled(t)), model: live},
		{name: "already completed: nothing to do", promo: cat(toProd, completed(t)), model: live},
		{name: "already failed: nothing to do", promo: cat(toProd, failed(t)), model: live},
		{name: "a stage: the transition archives the old production version and names the request", promo: toProd, model: live,
			want: []handlers.Change{{Subject: modelSubj, Type: events.ModelVersionTransition, Data: events.ModelVersionTransitionData{
				ModelID: modelID, Version: 2, From: "none", To: "production",
				Archived: []events.ArchivedVersion{{Version: 1, From: "production"}}, PromotionID: authority.PromotionID}}, done("production")},
			state: events.PromotionStateCompleted, stages: map[int]string{1: "archived", 2: "production"}},
		{name: "a stage nobody holds", promo: toProd, model: versions(t, 2),
			want: []handlers.Change{{Subject: modelSubj, Type: events.ModelVersionTransition, Data: events.ModelVersionTransitionData{
				ModelID: modelID, Version: 2, From: "none", To: "production", PromotionID: authority.PromotionID}}, done("production")},
			state: events.PromotionStateCompleted, stages: map[int]string{1: "none", 2: "production"}},
		{name: "an alias: moved, naming the request", promo: toChamp, model: live,
			want: []handlers.Change{{Subject: modelSubj, Type: events.ModelAliasSet, Data: events.ModelAliasSetData{
				ModelID: modelID, Alias: "champion", Version: 2, PreviousVersion: 1, PromotionID: authority.PromotionID}}, done("@champion")},
			state: events.PromotionStateCompleted, alias: map[string]int{"champion": 2}},
		{name: "a new alias", promo: toChamp, model: versions(t, 2),
			want: []handlers.Change{{Subject: modelSubj, Type: events.ModelAliasSet, Data: events.ModelAliasSetData{
				ModelID: modelID, Alias: "champion", Version: 2, PromotionID: authority.PromotionID}}, done("@champion")},
			state: events.PromotionStateCompleted, alias: map[string]int{"champion": 2}},
		{name: "the version was deleted meanwhile", promo: toProd, model: cat(live, versionDeleted(t, 2)),
			want: fail("model version not found"), state: events.PromotionStateFailed},
		{name: "the version was deleted meanwhile, alias target", promo: toChamp, model: cat(live, versionDeleted(t, 2)),
			want: fail("model version not found"), state: events.PromotionStateFailed, alias: map[string]int{"champion": 1}},
		{name: "the model was deleted meanwhile", promo: toProd, model: cat(live, modelDeleted(t)),
			want: fail("model not found"), state: events.PromotionStateFailed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := promotion(t, tc.promo)
			m := model(t, tc.model)
			ps := project(t, prodPol, champPol, stagingPol)
			if tc.ps != nil {
				ps = *tc.ps
			}
			got, err := approvals.DecideComplete(s, ps, m, "")
			if err != nil {
				t.Fatal(err)
			}
			checkChanges(t, got, tc.want)
			if tc.state == "" {
				return
			}
			after := fold(t, approvals.Evolve, s, applied(t, promoSubj, got))
			if after.State != tc.state || (tc.state == events.PromotionStateFailed && after.Reason == "") {
				t.Fatalf("request after = %s (%q), want %s", after.State, after.Reason, tc.state)
			}
			mAfter := fold(t, registry.EvolveModel, m, applied(t, modelSubj, got))
			for v, stage := range tc.stages {
				if ver, _ := mAfter.Version(v); ver.Stage != stage {
					t.Fatalf("version %d after = %s, want %s", v, ver.Stage, stage)
				}
			}
			if tc.alias != nil && !reflect.DeepEqual(mAfter.Aliases, tc.alias) {
				t.Fatalf("aliases after = %v, want %v", mAfter.Aliases, tc.alias)
			}
			// The completed model event's authority survives the store.
			for _, e := range applied(t, modelSubj, got) {
				var a struct {
					PromotionID string `json:"promotion_id"`
				}
				if err := e.Decode(&a); err != nil || a.PromotionID != promoID {
					t.Fatalf("stored %s names promotion %q (%v), want %s", e.Type, a.PromotionID, err, promoID)
				}
			}
		})
	}
}

// A request whose gate read an explanation is carried out only on that
// same document: one replaced since (a run's explanation can be) fails the
// request, which must be made again.
func TestDecideCompleteNeedsTheExplanationSeen(t *testing.T) {
	t.Parallel()
	champPol := policy(t, events.PolicyData{Target: "@champion", RequiredArtifacts: []string{"explanation.json"}})
	live := cat(versions(t, 2), aliasSet(t, "champion", 1, 0))
	s := promotion(t, []events.Envelope{requested(t, champPol), approved(t, carol, 1, 1)})
	s.Gate.Explanation = &events.ExplanationSeen{Source: "run", Digest: "sha256:aa"}
	m, ps := model(t, live), project(t, champPol)
	for _, now := range []string{"sha256:bb", ""} {
		got, err := approvals.DecideComplete(s, ps, m, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Type != events.PromotionFailed {
			t.Fatalf("explanation now %q: %+v, want the request failed", now, got)
		}
	}
	got, err := approvals.DecideComplete(s, ps, m, "sha256:aa")
	if err != nil || len(got) == 0 || got[len(got)-1].Type != events.PromotionCompleted {
		t.Fatalf("the same explanation: %+v %v, want completed", got, err)
	}
}
