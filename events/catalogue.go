package events

import (
	"fmt"
	"slices"
	"strings"
)

// catalogue is every event type Maestro appends to MAESTRO_EVENTS, grouped
// by aggregate (the constants and their data live in one file per
// aggregate), with the aggregate types whose subjects may carry it.
// Projections read only the aggregates they declare, so an event appended
// on another aggregate's subject would go unseen: CheckSubject refuses it
// before it is appended. TestCatalogueIsComplete keeps the list in step with
// the constants; projections are checked against it.
var catalogue = []struct {
	types      []string
	aggregates []string
}{
	{[]string{UserRegistered, UserRoleChanged, UserDeactivated, UserReactivated, UserLoginFailed, UserLoginFailuresReset}, []string{AggUser}},
	{[]string{EmailReserved}, []string{AggEmail}},
	{[]string{AdminBootstrapped}, []string{AggSystem}},
	{[]string{SessionStarted, SessionRefreshed, SessionRevoked}, []string{AggSession}},
	{[]string{TokenCreated, TokenRevoked, TokenUsed}, []string{AggToken}},
	{[]string{ProjectCreated, ProjectUpdated, ProjectArchived, ProjectRestored, ProjectMemberSet, ProjectMemberRemoved,
		ProjectPolicySet, ProjectPolicyRemoved}, []string{AggProject}},
	{[]string{NameReserved}, []string{AggProjectSlug, AggModelName, AggExperimentName}},
	{[]string{NameReleased}, []string{AggExperimentName}},
	{[]string{ModelCreated, ModelUpdated, ModelDeleted, ModelRestored, ModelRenamed,
		ModelVersionRegistered, ModelVersionUpdated, ModelVersionDeleted, ModelVersionTransition,
		ModelAliasSet, ModelAliasDeleted, ModelArtifactRecorded}, []string{AggModel}},
	{[]string{ExperimentCreated, ExperimentRenamed, ExperimentTagsSet, ExperimentTagDeleted, ExperimentDeleted, ExperimentRestored}, []string{AggExperiment}},
	{[]string{RunCreated, RunUpdated, RunDeleted, RunRestored, RunParamsLogged, RunTagsSet, RunTagDeleted, RunArtifactRecorded,
		RunInputsLogged}, []string{AggRun}},
	{[]string{PromotionRequested, PromotionApproved, PromotionRejected, PromotionCancelled, PromotionCompleted, PromotionFailed},
		[]string{AggPromotion}},
	{[]string{JobSubmitted, JobAttemptStarted, JobCancelRequested, JobAttemptEnded, JobRequeued, JobEnded}, []string{AggJob}},
	{[]string{SweepCreated, SweepTrialSuggested, SweepTrialDispatched, SweepTrialReported, SweepTrialPruned, SweepTrialEnded,
		SweepStopRequested, SweepEnded}, []string{AggSweep}},
	{[]string{WebhookCreated, WebhookUpdated, WebhookSecretRotated, WebhookDisabled, WebhookDeleted, WebhookTestRequested}, []string{AggWebhook}},
}

// aggregatesOf indexes the catalogue by type.
var aggregatesOf = func() map[string][]string {
	m := map[string][]string{}
	for _, g := range catalogue {
		for _, t := range g.types {
			m[t] = g.aggregates
		}
	}
	return m
}()

// Types is the event catalogue: every event type Maestro appends to
// MAESTRO_EVENTS, in the catalogue's order.
func Types() []string {
	var out []string
	for _, g := range catalogue {
		out = append(out, g.types...)
	}
	return out
}

// AggregatesOf is the aggregate types whose subjects may carry events of
// type typ (nil for a type outside the catalogue).
func AggregatesOf(typ string) []string { return slices.Clone(aggregatesOf[typ]) }

// CheckSubject refuses an event of type typ on an event subject of an
// aggregate the catalogue does not list for it (or of a type it does not
// list at all). Subjects outside MAESTRO_EVENTS (the security stream's) are
// not its concern.
func CheckSubject(typ, subject string) error {
	if !strings.HasPrefix(subject, SubjectPrefix) {
		return nil
	}
	aggs, ok := aggregatesOf[typ]
	if !ok {
		return fmt.Errorf("event type %q is not in the event catalogue", typ)
	}
	if agg, _ := AggregateOf(subject); !slices.Contains(aggs, agg) {
		return fmt.Errorf("event type %s is not appended on %s subjects (the catalogue lists %v)", typ, agg, aggs)
	}
	return nil
}
