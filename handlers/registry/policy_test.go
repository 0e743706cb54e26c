package registry_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Approval policies: NormalizePolicy's defaults and bounds, the policy
// deciders on the project, and Governing, which every pointer-moving
// decision (MovePointer, DeleteVersion, DeleteModel) consults.

const (
	week       = int64(7 * 24 * 60 * 60)
	ninetyDays = int64(90 * 24 * 60 * 60)
	// carol's id written upper-case: a user id is compared canonical.
	carolUpper = "44444444-4444-4444-8444-44444444444A"
	carol      = "44444444-4444-4444-8444-44444444444a"
)

func policySet(t *testing.T, p events.PolicyData) events.Envelope {
	return ev(t, projSubj, events.ProjectPolicySet, events.ProjectPolicySetData{ProjectID: projID, Policy: p})
}

func policyRemoved(t *testing.T, target string) events.Envelope {
	return ev(t, projSubj, events.ProjectPolicyRemoved, events.ProjectPolicyRemovedData{ProjectID: projID, Target: target})
}

// normalized is p as NormalizePolicy gives it back, for givens.
func normalized(t *testing.T, p events.PolicyData) events.PolicyData {
	t.Helper()
	n, err := registry.NormalizePolicy(p)
	if err != nil {
		t.Fatalf("NormalizePolicy(%+v): %v", p, err)
	}
	return n
}

func TestValidTarget(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"staging": true, "production": true, "@champion": true, "@_x": true, "@a-b_1": true,
		// Stages nothing deploys from, selectors clients read as versions,
		// and malformed names cannot be governed.
		"archived": false, "none": false, "": false, "Production": false, "champion": false,
		"@": false, "@latest": false, "@LATEST": false, "@v2": false, "@V10": false, "@1x": false, "@a b": false,
		"@" + strings.Repeat("a", 64): false,
	}
	for target, want := range cases {
		if got := registry.ValidTarget(target); got != want {
			t.Errorf("ValidTarget(%q) = %v, want %v", target, got, want)
		}
	}
}

func TestNormalizePolicy(t *testing.T) {
	t.Parallel()
	defaults := func(target string) events.PolicyData {
		return events.PolicyData{Target: target, RequiredApprovals: 1, ApproverRoles: []string{"approver", "owner"}, RequestTTLSeconds: week}
	}
	with := func(target string, f func(*events.PolicyData)) events.PolicyData {
		p := defaults(target)
		f(&p)
		return p
	}
	manyUsers := make([]string, registry.MaxApproverUsers+1)
	for i := range manyUsers {
		manyUsers[i] = fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
	}
	manyArtifacts := make([]string, registry.MaxRequiredArtifacts+1)
	for i := range manyArtifacts {
		manyArtifacts[i] = fmt.Sprintf("a%d.json", i)
	}
	cases := []struct {
		name string
		in   events.PolicyData
		want events.PolicyData
		err  wantErr
	}{
		{name: "defaults: one approval by approvers or owners, a week to decide", in: events.PolicyData{Target: "production"},
			want: defaults("production")},
		{name: "an alias target", in: events.PolicyData{Target: "@champion"}, want: defaults("@champion")},
		{name: "staging", in: events.PolicyData{Target: "staging"}, want: defaults("staging")},
		{name: "approvals 0 means 1", in: events.PolicyData{Target: "production", RequiredApprovals: 0}, want: defaults("production")},
		{name: "approvals at the bound", in: events.PolicyData{Target: "production", RequiredApprovals: registry.MaxApprovals},
			want: with("production", func(p *events.PolicyData) { p.RequiredApprovals = registry.MaxApprovals })},
		{name: "approvals over the bound", in: events.PolicyData{Target: "production", RequiredApprovals: registry.MaxApprovals + 1}, err: invalid},
		{name: "negative approvals", in: events.PolicyData{Target: "production", RequiredApprovals: -1}, err: invalid},
		{name: "separation of duties kept", in: events.PolicyData{Target: "production", SeparationOfDuties: true},
			want: with("production", func(p *events.PolicyData) { p.SeparationOfDuties = true })},
		{name: "roles deduplicated and sorted", in: events.PolicyData{Target: "production", ApproverRoles: []string{"owner", "editor", "owner", "approver", "editor"}},
			want: with("production", func(p *events.PolicyData) { p.ApproverRoles = []string{"approver", "editor", "owner"} })},
		{name: "a role that is no project role", in: events.PolicyData{Target: "production", ApproverRoles: []string{"admin"}}, err: invalid},
		{name: "roles are case-sensitive", in: events.PolicyData{Target: "production", ApproverRoles: []string{"Owner"}}, err: invalid},
		{name: "named users alone: no default roles", in: events.PolicyData{Target: "production", ApproverUsers: []string{bob}},
			want: with("production", func(p *events.PolicyData) { p.ApproverRoles, p.ApproverUsers = nil, []string{bob} })},
		{name: "users canonical, deduplicated and sorted", in: events.PolicyData{Target: "production",
			ApproverRoles: []string{"owner"}, ApproverUsers: []string{carolUpper, bob, carol, alice, bob}},
			want: with("production", func(p *events.PolicyData) {
				p.ApproverRoles, p.ApproverUsers = []string{"owner"}, []string{alice, bob, carol}
			})},
		{name: "a user id that is no uuid", in: events.PolicyData{Target: "production", ApproverUsers: []string{"bob"}}, err: invalid},
		{name: "a uuid without hyphens is no user id", in: events.PolicyData{Target: "production",
			ApproverUsers: []string{strings.ReplaceAll(bob, "-", "")}}, err: invalid},
		{name: "a urn is no user id", in: events.PolicyData{Target: "production", ApproverUsers: []string{"urn:uuid:" + bob}}, err: invalid},
		{name: "too many named users", in: events.PolicyData{Target: "production", ApproverUsers: manyUsers}, err: invalid},
		{name: "artifacts deduplicated and sorted", in: events.PolicyData{Target: "production",
			RequiredArtifacts: []string{"model/weights.bin", "explanation.json", "model/weights.bin"}},
			want: with("production", func(p *events.PolicyData) {
				p.RequiredArtifacts = []string{"explanation.json", "model/weights.bin"}
			})},
		{name: "an absolute artifact path", in: events.PolicyData{Target: "production", RequiredArtifacts: []string{"/etc/passwd"}}, err: invalid},
		{name: "an artifact path leaving the version", in: events.PolicyData{Target: "production", RequiredArtifacts: []string{"../x"}}, err: invalid},
		{name: "too many artifacts", in: events.PolicyData{Target: "production", RequiredArtifacts: manyArtifacts}, err: invalid},
		{name: "gate in canonical form", in: events.PolicyData{Target: "production", Gate: "  metric.auc>=0.9 and metrics.latency_ms < 50 "},
			want: with("production", func(p *events.PolicyData) { p.Gate = "metrics.auc >= 0.9 AND metrics.latency_ms < 50" })},
		{name: "blank gate is none", in: events.PolicyData{Target: "production", Gate: "   "}, want: defaults("production")},
		{name: "gate on params", in: events.PolicyData{Target: "production", Gate: "params.lr = '0.1'"}, err: invalid},
		{name: "gate on tags", in: events.PolicyData{Target: "production", Gate: "metrics.auc > 0.9 AND tags.team = 'x'"}, err: invalid},
		{name: "gate on attributes", in: events.PolicyData{Target: "production", Gate: "attributes.status = 'FINISHED'"}, err: invalid},
		{name: "gate that does not parse", in: events.PolicyData{Target: "production", Gate: "metrics.auc >="}, err: invalid},
		{name: "gate with a control character", in: events.PolicyData{Target: "production", Gate: "metrics.auc > 0.9\x00"}, err: invalid},
		{name: "gate too long", in: events.PolicyData{Target: "production", Gate: "metrics.auc > 0.9" + strings.Repeat(" ", registry.MaxGateLen)}, err: invalid},
		{name: "TTL at its lower bound", in: events.PolicyData{Target: "production", RequestTTLSeconds: 60},
			want: with("production", func(p *events.PolicyData) { p.RequestTTLSeconds = 60 })},
		{name: "TTL at its upper bound", in: events.PolicyData{Target: "production", RequestTTLSeconds: ninetyDays},
			want: with("production", func(p *events.PolicyData) { p.RequestTTLSeconds = ninetyDays })},
		{name: "TTL under a minute", in: events.PolicyData{Target: "production", RequestTTLSeconds: 59}, err: invalid},
		{name: "TTL over 90 days", in: events.PolicyData{Target: "production", RequestTTLSeconds: ninetyDays + 1}, err: invalid},
		{name: "negative TTL", in: events.PolicyData{Target: "production", RequestTTLSeconds: -60}, err: invalid},
		{name: "target archived", in: events.PolicyData{Target: "archived"}, err: invalid},
		{name: "target none", in: events.PolicyData{Target: "none"}, err: invalid},
		{name: "no target", in: events.PolicyData{}, err: invalid},
		{name: "target @latest", in: events.PolicyData{Target: "@latest"}, err: invalid},
		{name: "target @v2", in: events.PolicyData{Target: "@v2"}, err: invalid},
		{name: "target @", in: events.PolicyData{Target: "@"}, err: invalid},
		{name: "an alias without @", in: events.PolicyData{Target: "champion"}, err: invalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := registry.NormalizePolicy(tc.in)
			checkErr(t, err, tc.err)
			if tc.err.kind != 0 {
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("NormalizePolicy:\n got  %+v\n want %+v", got, tc.want)
			}
			// Normal form is a fixed point: setting it again is a no-op.
			again, err := registry.NormalizePolicy(got)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("NormalizePolicy of its own result = %+v, %v; want %+v", again, err, got)
			}
		})
	}
}

func TestDecideSetPolicy(t *testing.T) {
	t.Parallel()
	prod := normalized(t, events.PolicyData{Target: "production", RequiredApprovals: 2, SeparationOfDuties: true, Gate: "metrics.auc >= 0.9"})
	set := func(p events.PolicyData) []handlers.Change {
		return []handlers.Change{{Subject: projSubj, Type: events.ProjectPolicySet, Data: events.ProjectPolicySetData{ProjectID: projID, Policy: p}}}
	}
	live := []events.Envelope{projectCreated(t)}
	governed := cat(live, policySet(t, prod))
	changed := prod
	changed.RequiredApprovals = 3
	cases := []struct {
		name  string
		given []events.Envelope
		in    events.PolicyData
		want  []handlers.Change
		err   wantErr
	}{
		{name: "a new policy, normalized", given: live, in: events.PolicyData{Target: "production", RequiredApprovals: 2,
			SeparationOfDuties: true, Gate: "metric.auc>=0.9"}, want: set(prod)},
		{name: "the same policy, written differently, is a no-op", given: governed, in: events.PolicyData{Target: "production",
			RequiredApprovals: 2, ApproverRoles: []string{"owner", "approver"}, SeparationOfDuties: true, Gate: "metrics.auc >= 0.9",
			RequestTTLSeconds: week}},
		{name: "a changed policy replaces it", given: governed, in: changed, want: set(changed)},
		{name: "separation of duties switched off is a change", given: governed,
			in:   func() events.PolicyData { p := prod; p.SeparationOfDuties = false; return p }(),
			want: set(func() events.PolicyData { p := prod; p.SeparationOfDuties = false; return p }())},
		{name: "another target is another policy", given: governed, in: events.PolicyData{Target: "@champion"},
			want: set(normalized(t, events.PolicyData{Target: "@champion"}))},
		{name: "an invalid policy", given: live, in: events.PolicyData{Target: "archived"}, err: invalid},
		{name: "an archived project", given: cat(live, projArchived(t)), in: prod, err: archivedErr},
		{name: "a restored project", given: cat(live, projArchived(t), projRestored(t)), in: prod, want: set(prod)},
		{name: "no project", in: prod, err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := fold(t, registry.EvolveProject, tc.given)
			got, err := registry.DecideSetPolicy(s, tc.in)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if len(got) > 0 {
				after := foldInto(t, registry.EvolveProject, s, applied(t, got))
				p := got[0].Data.(events.ProjectPolicySetData).Policy
				if !reflect.DeepEqual(after.Policies[p.Target], p) {
					t.Fatalf("policy after evolve = %+v, want %+v", after.Policies[p.Target], p)
				}
			}
		})
	}
}

func TestDecideRemovePolicy(t *testing.T) {
	t.Parallel()
	prod := normalized(t, events.PolicyData{Target: "production"})
	champ := normalized(t, events.PolicyData{Target: "@champion"})
	live := []events.Envelope{projectCreated(t)}
	governed := cat(live, policySet(t, prod), policySet(t, champ))
	cases := []struct {
		name   string
		given  []events.Envelope
		target string
		want   []handlers.Change
		err    wantErr
	}{
		{name: "a policy in force is lifted", given: governed, target: "@champion", want: []handlers.Change{{Subject: projSubj,
			Type: events.ProjectPolicyRemoved, Data: events.ProjectPolicyRemovedData{ProjectID: projID, Target: "@champion"}}}},
		{name: "no policy for the target", given: governed, target: "staging", err: notFound},
		{name: "a policy already lifted", given: cat(governed, policyRemoved(t, "production")), target: "production", err: notFound},
		{name: "an archived project", given: cat(governed, projArchived(t)), target: "production", err: archivedErr},
		{name: "no project", target: "production", err: notFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := fold(t, registry.EvolveProject, tc.given)
			got, err := registry.DecideRemovePolicy(s, tc.target)
			checkErr(t, err, tc.err)
			checkChanges(t, got, tc.want)
			if len(got) > 0 {
				after := foldInto(t, registry.EvolveProject, s, applied(t, got))
				if _, ok := after.Policies[tc.target]; ok {
					t.Fatalf("policy %s still in force after evolve: %+v", tc.target, after.Policies)
				}
				if len(after.Policies) != len(s.Policies)-1 {
					t.Fatalf("policies after evolve = %+v, want the others of %+v kept", after.Policies, s.Policies)
				}
			}
		})
	}
}

// TestEvolveProjectPolicies: a fold replaces the policy map, so a state
// read before an event (a cached one) keeps the policies it saw.
func TestEvolveProjectPolicies(t *testing.T) {
	t.Parallel()
	prod := normalized(t, events.PolicyData{Target: "production"})
	stricter := normalized(t, events.PolicyData{Target: "production", RequiredApprovals: 2})
	before := fold(t, registry.EvolveProject, []events.Envelope{projectCreated(t), policySet(t, prod)})
	replaced := foldInto(t, registry.EvolveProject, before, []events.Envelope{policySet(t, stricter)})
	removed := foldInto(t, registry.EvolveProject, replaced, []events.Envelope{policyRemoved(t, "production")})
	if got := before.Policies["production"]; !reflect.DeepEqual(got, prod) {
		t.Fatalf("earlier state's policy = %+v, want %+v untouched", got, prod)
	}
	if got := replaced.Policies["production"]; !reflect.DeepEqual(got, stricter) {
		t.Fatalf("replaced policy = %+v, want %+v", got, stricter)
	}
	if len(removed.Policies) != 0 || len(replaced.Policies) != 1 {
		t.Fatalf("after removal: %+v (the state before it: %+v)", removed.Policies, replaced.Policies)
	}
}

func TestGoverning(t *testing.T) {
	t.Parallel()
	const (
		none, staging, prod, arch = events.StageNone, events.StageStaging, events.StageProduction, events.StageArchived
	)
	prodPol := normalized(t, events.PolicyData{Target: prod, RequiredApprovals: 2})
	stagingPol := normalized(t, events.PolicyData{Target: staging})
	champPol := normalized(t, events.PolicyData{Target: "@champion"})
	project := func(ps ...events.PolicyData) registry.ProjectState {
		evs := []events.Envelope{projectCreated(t)}
		for _, p := range ps {
			evs = append(evs, policySet(t, p))
		}
		return fold(t, registry.EvolveProject, evs)
	}
	governed := project(prodPol, champPol)
	v3 := withVersions(t, 3)
	// v1 in production, v2 in staging, champion on v3, challenger on v2.
	deployed := cat(v3, transitioned(t, 1, none, prod), transitioned(t, 2, none, staging), aliasSet(t, "champion", 3, 0),
		aliasSet(t, "challenger", 2, 0))
	transition := func(v int, to string, archive bool) func(registry.ModelState) ([]handlers.Change, error) {
		return func(m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideTransition(m, v, to, archive)
		}
	}
	setAlias := func(a string, v int) func(registry.ModelState) ([]handlers.Change, error) {
		return func(m registry.ModelState) ([]handlers.Change, error) { return registry.DecideSetAlias(m, a, v) }
	}
	delAlias := func(a string) func(registry.ModelState) ([]handlers.Change, error) {
		return func(m registry.ModelState) ([]handlers.Change, error) { return registry.DecideDeleteAlias(m, a) }
	}
	delVersion := func(v int) func(registry.ModelState) ([]handlers.Change, error) {
		return func(m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideDeleteVersion(m, v, true)
		}
	}
	delModel := func(del bool) func(registry.ModelState) ([]handlers.Change, error) {
		return func(m registry.ModelState) ([]handlers.Change, error) {
			return registry.DecideDeleteModel(m, del, true)
		}
	}
	// emptied is a transition only archive_existing's list names
	// production in: Archived is what the pointer leaves, whatever To says.
	emptied := func(m registry.ModelState) ([]handlers.Change, error) {
		return []handlers.Change{{Subject: modelSubj, Type: events.ModelVersionTransition, Data: events.ModelVersionTransitionData{
			ModelID: modelID, Version: 2, From: none, To: staging, Archived: []events.ArchivedVersion{{Version: 1, From: prod}}}}}, nil
	}
	register := func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideRegisterVersion(m, registry.RegisterVersion{Source: "s3://y"})
	}
	cases := []struct {
		name   string
		ps     registry.ProjectState
		given  []events.Envelope
		decide func(registry.ModelState) ([]handlers.Change, error)
		want   string // the governing policy's target; "" for none
	}{
		{name: "into production", ps: governed, given: v3, decide: transition(2, prod, false), want: prod},
		{name: "out of production to archived", ps: governed, given: deployed, decide: transition(1, arch, false), want: prod},
		{name: "out of production to none", ps: governed, given: deployed, decide: transition(1, none, false), want: prod},
		{name: "out of production to ungoverned staging", ps: governed, given: deployed, decide: transition(1, staging, false), want: prod},
		{name: "replacing production with archive_existing", ps: governed, given: deployed, decide: transition(3, prod, true), want: prod},
		{name: "archive_existing emptying production", ps: governed, given: deployed, decide: emptied, want: prod},
		{name: "into ungoverned staging", ps: governed, given: v3, decide: transition(3, staging, false)},
		{name: "staging to archived, ungoverned", ps: governed, given: deployed, decide: transition(2, arch, false)},
		{name: "into governed staging", ps: project(stagingPol), given: v3, decide: transition(3, staging, false), want: staging},
		{name: "staging archive_existing under a staging policy", ps: project(stagingPol), given: deployed,
			decide: transition(3, staging, true), want: staging},
		{name: "both stages governed: the first target in order", ps: project(stagingPol, prodPol), given: deployed,
			decide: transition(1, staging, false), want: prod},
		{name: "a governed alias set", ps: governed, given: deployed, decide: setAlias("champion", 1), want: "@champion"},
		{name: "a governed alias created", ps: governed, given: v3, decide: setAlias("champion", 1), want: "@champion"},
		{name: "a governed alias deleted", ps: governed, given: deployed, decide: delAlias("champion"), want: "@champion"},
		{name: "an ungoverned alias set", ps: governed, given: deployed, decide: setAlias("challenger", 1)},
		{name: "an ungoverned alias deleted", ps: governed, given: deployed, decide: delAlias("challenger")},
		{name: "an alias policy does not govern the stage of the same name", ps: project(champPol), given: v3,
			decide: transition(1, prod, false)},
		{name: "deleting the production version", ps: governed, given: deployed, decide: delVersion(1), want: prod},
		{name: "deleting the version a governed alias names", ps: governed, given: deployed, decide: delVersion(3), want: "@champion"},
		{name: "deleting a staging version with an ungoverned alias", ps: governed, given: deployed, decide: delVersion(2)},
		{name: "deleting an undeployed version", ps: governed, given: cat(deployed, versionRegistered(t, 4)), decide: delVersion(4)},
		{name: "deleting a model with a governed alias", ps: project(champPol), given: cat(v3, aliasSet(t, "champion", 2, 0)),
			decide: delModel(true), want: "@champion"},
		{name: "deleting a model with a production version", ps: project(prodPol), given: cat(v3, transitioned(t, 1, none, prod)),
			decide: delModel(true), want: prod},
		{name: "deleting a model whose production version is deleted", ps: project(prodPol),
			given: cat(v3, transitioned(t, 1, none, prod), versionDeleted(t, 1)), decide: delModel(true)},
		{name: "deleting a model with ungoverned pointers", ps: governed, given: cat(v3, transitioned(t, 2, none, staging),
			aliasSet(t, "challenger", 2, 0)), decide: delModel(true)},
		{name: "restoring a model brings a governed alias back", ps: governed, given: cat(deployed, modelDeleted(t)),
			decide: delModel(false), want: "@champion"},
		{name: "registering a version", ps: governed, given: deployed, decide: register},
		{name: "no policies", ps: project(), given: deployed, decide: transition(3, prod, true)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := fold(t, registry.EvolveModel, tc.given)
			changes, err := tc.decide(m)
			if err != nil || len(changes) == 0 {
				t.Fatalf("decision = %v, %v; the case needs a change to judge", changes, err)
			}
			p, ok := registry.Governing(tc.ps, m, changes)
			if tc.want == "" {
				if ok {
					t.Fatalf("governed by %+v, want ungoverned", p)
				}
				return
			}
			if !ok || p.Target != tc.want || !reflect.DeepEqual(p, tc.ps.Policies[tc.want]) {
				t.Fatalf("Governing = %+v, %v; want the policy of %s", p, ok, tc.want)
			}
		})
	}
}

func TestWithAuthority(t *testing.T) {
	t.Parallel()
	a := events.Authority{PromotionID: "dddddddd-dddd-4ddd-8ddd-dddddddddddd"}
	in := []handlers.Change{
		{Subject: modelSubj, Type: events.ModelVersionTransition, Data: events.ModelVersionTransitionData{ModelID: modelID, Version: 1, From: "none", To: "production"}},
		{Subject: modelSubj, Type: events.ModelAliasSet, Data: events.ModelAliasSetData{ModelID: modelID, Alias: "champion", Version: 1}},
		{Subject: modelSubj, Type: events.ModelAliasDeleted, Data: events.ModelAliasDeletedData{ModelID: modelID, Alias: "old", Version: 1}},
		{Subject: modelSubj, Type: events.ModelVersionDeleted, Data: events.ModelVersionDeletedData{ModelID: modelID, Version: 2}},
	}
	orig := append([]handlers.Change{}, in...)
	got := registry.WithAuthority(in, a)
	want := []handlers.Change{
		{Subject: modelSubj, Type: events.ModelVersionTransition, Data: events.ModelVersionTransitionData{ModelID: modelID, Version: 1, From: "none", To: "production", PromotionID: a.PromotionID}},
		{Subject: modelSubj, Type: events.ModelAliasSet, Data: events.ModelAliasSetData{ModelID: modelID, Alias: "champion", Version: 1, PromotionID: a.PromotionID}},
		{Subject: modelSubj, Type: events.ModelAliasDeleted, Data: events.ModelAliasDeletedData{ModelID: modelID, Alias: "old", Version: 1, PromotionID: a.PromotionID}},
		{Subject: modelSubj, Type: events.ModelVersionDeleted, Data: events.ModelVersionDeletedData{ModelID: modelID, Version: 2}},
	}
	checkChanges(t, got, want)
	if !reflect.DeepEqual(in, orig) {
		t.Fatalf("WithAuthority wrote into its input: %+v", in)
	}
}
