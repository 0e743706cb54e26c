package approvals_test

import (
	"strings"
	"testing"
	"time"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/explain"
	"github.com/maestro-ml/maestro/handlers/approvals"
)

// Gates over a version's explanation: importance.<feature> compares the
// feature's global importance (its first entry); a gate naming one refuses
// a version without a valid explanation; a required explanation.json is
// met by the explanation the version carries from its run.

func explained(scores ...any) *approvals.VersionExplanation {
	x := &explain.Explanation{SchemaVersion: 1, Dataset: explain.Dataset{Name: "holdout", Rows: 10}}
	for i := 0; i+1 < len(scores); i += 2 {
		x.FeatureImportances = append(x.FeatureImportances,
			explain.Importance{Feature: scores[i].(string), Method: "permutation", Score: scores[i+1].(float64)})
	}
	return &approvals.VersionExplanation{Source: approvals.SourceRun, Digest: "sha256:" + strings.Repeat("ab", 32), Doc: x}
}

func TestDecideRequestOverExplanations(t *testing.T) {
	t.Parallel()
	importanceGate := policy(t, events.PolicyData{Target: "production", Gate: "importance.age < 0.1 AND metrics.auc >= 0.9"})
	required := policy(t, events.PolicyData{Target: "@champion", RequiredArtifacts: []string{explanation}})
	ps := project(t, importanceGate, required)
	now := t0.Add(10 * time.Minute)
	// v1 in production; v2 and v3 plain (no artifacts of their own).
	given := cat(versions(t, 3), transitioned(t, 1, "none", "production"))
	auc := map[string]float64{"auc": 0.95}
	invalid := &approvals.VersionExplanation{Source: approvals.SourceVersion, Problem: "/dataset: required"}
	cases := []struct {
		name     string
		target   string
		in       approvals.GateInputs
		rejected []string // nil: passed
		missing  []string
	}{
		{name: "importance under the bound", target: "production", in: approvals.GateInputs{Metrics: auc, Explanation: explained("income", 0.5, "age", 0.05)}},
		{name: "importance over the bound", target: "production", in: approvals.GateInputs{Metrics: auc, Explanation: explained("age", 0.3)},
			rejected: []string{"gate not met", "importance of age = 0.3", "auc = 0.95"}},
		{name: "the bound is strict", target: "production", in: approvals.GateInputs{Metrics: auc, Explanation: explained("age", 0.1)},
			rejected: []string{"importance of age = 0.1"}},
		{name: "a feature the explanation lacks", target: "production", in: approvals.GateInputs{Metrics: auc, Explanation: explained("income", 0.01)},
			rejected: []string{"gate not met"}},
		{name: "no explanation", target: "production", in: approvals.GateInputs{Metrics: auc},
			rejected: []string{"gate not met", "no explanation"}},
		{name: "an invalid explanation", target: "production", in: approvals.GateInputs{Metrics: auc, Explanation: invalid},
			rejected: []string{"not a valid explanation", "/dataset: required"}},
		{name: "importance met, metric not", target: "production", in: approvals.GateInputs{Metrics: map[string]float64{"auc": 0.5}, Explanation: explained("age", 0.01)},
			rejected: []string{"auc = 0.5"}},
		{name: "explanation required: carried from the run", target: "@champion", in: approvals.GateInputs{Explanation: explained("age", 0.9)}},
		{name: "explanation required: none", target: "@champion", rejected: []string{"required artifacts missing: explanation.json"}, missing: []string{explanation}},
		{name: "explanation required: not a valid one", target: "@champion", in: approvals.GateInputs{Explanation: invalid},
			rejected: []string{"required artifact explanation.json is not a valid explanation"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := approvals.DecideRequest(promoID, ps, model(t, given), approvals.Request{Model: "resnet", Version: 2, Target: tc.target},
				bob, tc.in, now)
			if err != nil {
				t.Fatal(err)
			}
			gate := got[0].Data.(events.PromotionRequestedData).Gate
			if x := tc.in.Explanation; (x == nil) != (gate.Explanation == nil) || x != nil && (gate.Explanation.Source != x.Source || gate.Explanation.Digest != x.Digest) {
				t.Fatalf("gate.explanation = %+v, want what was read: %+v", gate.Explanation, x)
			}
			if tc.rejected != nil {
				checkGateRejection(t, got, tc.rejected, tc.missing)
				return
			}
			if len(got) != 1 || !got[0].Data.(events.PromotionRequestedData).Gate.Passed {
				t.Fatalf("changes = %+v, want one passed request", got)
			}
		})
	}
}

// The importances a gate compared are recorded in the request's event.
func TestDecideRequestRecordsImportancesSeen(t *testing.T) {
	t.Parallel()
	ps := project(t, policy(t, events.PolicyData{Target: "production", Gate: "importance.age < 0.1 AND importance.zip < 1"}))
	got, err := approvals.DecideRequest(promoID, ps, model(t, versions(t, 2)), approvals.Request{Model: "resnet", Version: 2, Target: "production"},
		bob, approvals.GateInputs{Explanation: explained("age", 0.3, "income", 0.9)}, t0)
	if err != nil {
		t.Fatal(err)
	}
	gate := got[0].Data.(events.PromotionRequestedData).Gate
	if len(gate.Importances) != 1 || gate.Importances["age"] != 0.3 || gate.Passed {
		t.Fatalf("gate = %+v, want age's importance (income is not named, zip is missing) and a failure", gate)
	}
	checkGateRejection(t, got, []string{"importance of age = 0.3"}, nil)
}
