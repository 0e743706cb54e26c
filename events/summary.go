package events

import (
	"fmt"
	"net/url"
)

// Summary is a one-line, human-readable account of an event for the audit
// trail. It never includes secrets (password hashes, tokens).
func Summary(e Envelope) string {
	switch e.Type {
	case UserRegistered:
		var d UserRegisteredData
		if e.Decode(&d) == nil {
			if d.Kind == KindServiceAccount {
				return fmt.Sprintf("service account %q (%s) created as %s", d.Name, d.UserID, d.Role)
			}
			return fmt.Sprintf("user %s registered as %s (%s)", d.Email, d.Role, d.Source)
		}
	case UserRoleChanged:
		var d UserRoleChangedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s role changed from %s to %s", d.UserID, d.From, d.To)
		}
	case UserDeactivated:
		var d UserActivationData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s deactivated", d.UserID)
		}
	case UserReactivated:
		var d UserActivationData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s reactivated", d.UserID)
		}
	case UserLoginFailed:
		var d UserLoginFailedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("login failed for user %s (%s) from %s", d.UserID, d.Reason, d.ClientIP)
		}
	case UserLoginFailuresReset:
		return "login failure streak reset by a successful login"
	case EmailReserved:
		var d EmailReservedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("e-mail %s reserved for user %s", d.Email, d.UserID)
		}
	case LoginRejected:
		var d LoginRejectedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("login rejected for %s (%s) from %s", d.Email, d.Reason, d.ClientIP)
		}
	case SessionStarted:
		var d SessionStartedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s logged in (session %s) from %s", d.UserID, d.SessionID, d.ClientIP)
		}
	case SessionRefreshed:
		var d SessionRefreshedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("session %s refreshed (generation %d)", d.SessionID, d.Generation)
		}
	case SessionRevoked:
		var d SessionRevokedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("session %s revoked (%s)", d.SessionID, d.Reason)
		}
	case TokenCreated:
		var d TokenCreatedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("API token %s (%s…) created for user %s", d.TokenID, d.Prefix, d.UserID)
		}
	case TokenRevoked:
		var d TokenRevokedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("API token %s revoked (%s)", d.TokenID, d.Reason)
		}
	case TokenUsed:
		var d TokenUsedData
		if e.Decode(&d) == nil {
			if d.NewAddress {
				return fmt.Sprintf("API token %s used from new address %s", d.TokenID, d.ClientIP)
			}
			return fmt.Sprintf("API token %s used from %s", d.TokenID, d.ClientIP)
		}
	default:
		if s := registrySummary(e); s != "" {
			return s
		}
		if s := trackingSummary(e); s != "" {
			return s
		}
		if s := promotionSummary(e); s != "" {
			return s
		}
	}
	return e.Type
}

// promotionSummary covers approval policies and promotion requests.
func promotionSummary(e Envelope) string {
	switch e.Type {
	case ProjectPolicySet:
		var d ProjectPolicySetData
		if e.Decode(&d) == nil {
			p := d.Policy
			s := fmt.Sprintf("approval policy for %s set: %d approval(s) from roles %v users %v, separation of duties %t",
				p.Target, p.RequiredApprovals, p.ApproverRoles, p.ApproverUsers, p.SeparationOfDuties)
			if p.Gate != "" {
				s += ", gate " + p.Gate
			}
			return s
		}
	case ProjectPolicyRemoved:
		var d ProjectPolicyRemovedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("approval policy for %s removed", d.Target)
		}
	case PromotionRequested:
		var d PromotionRequestedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("promotion %s of %s version %d to %s requested by %s", d.PromotionID, d.ModelName, d.Version, d.Target, d.RequesterID)
		}
	case PromotionApproved:
		var d PromotionApprovedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("promotion %s approved by %s (%d of %d)", d.PromotionID, d.ApproverID, d.Approvals, d.Required)
		}
	case PromotionRejected:
		var d PromotionRejectedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("promotion %s rejected: %s", d.PromotionID, d.Reason)
		}
	case PromotionCancelled:
		var d PromotionCancelledData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("promotion %s cancelled by its requester", d.PromotionID)
		}
	case PromotionCompleted:
		var d PromotionCompletedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("promotion %s carried out: version %d to %s", d.PromotionID, d.Version, d.Target)
		}
	case PromotionFailed:
		var d PromotionFailedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("promotion %s could not be carried out: %s", d.PromotionID, d.Reason)
		}
	}
	return ""
}

// authority names what allowed a governed move, for its summary.
func authority(a Authority) string {
	switch {
	case a.PromotionID != "":
		return " (promotion " + a.PromotionID + ")"
	case a.OverrideReason != "":
		return fmt.Sprintf(" (policy overridden: %q)", a.OverrideReason)
	}
	return ""
}

// registrySummary covers projects and models.
func registrySummary(e Envelope) string {
	switch e.Type {
	case ProjectCreated:
		var d ProjectCreatedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("project %s created by %s", d.Slug, d.OwnerID)
		}
	case ProjectUpdated:
		return "project description changed"
	case ProjectArchived:
		return "project archived"
	case ProjectRestored:
		return "project restored"
	case ProjectMemberSet:
		var d ProjectMemberSetData
		if e.Decode(&d) == nil {
			if d.PreviousRole == "" {
				return fmt.Sprintf("user %s added as %s", d.UserID, d.Role)
			}
			return fmt.Sprintf("user %s role changed from %s to %s", d.UserID, d.PreviousRole, d.Role)
		}
	case ProjectMemberRemoved:
		var d ProjectMemberRemovedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("user %s (%s) removed", d.UserID, d.Role)
		}
	case NameReserved:
		var d NameReservedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("%s name %q reserved for %s", d.Kind, d.Name, d.OwnerID)
		}
	case ModelCreated:
		var d ModelCreatedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("model %s created", d.Name)
		}
	case ModelUpdated:
		return "model description or tags changed"
	case ModelDeleted:
		return "model deleted"
	case ModelRestored:
		return "model restored"
	case ModelRenamed:
		var d ModelRenamedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("model %s renamed to %s", d.PreviousName, d.Name)
		}
	case ModelVersionRegistered:
		var d ModelVersionRegisteredData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("version %d registered from %s", d.Version, d.Source)
		}
	case ModelVersionUpdated:
		var d ModelVersionUpdatedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("version %d description or tags changed", d.Version)
		}
	case ModelVersionDeleted:
		var d ModelVersionDeletedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("version %d deleted", d.Version)
		}
	case ModelVersionTransition:
		var d ModelVersionTransitionData
		if e.Decode(&d) == nil {
			s := fmt.Sprintf("version %d moved from %s to %s", d.Version, d.From, d.To)
			for _, a := range d.Archived {
				s += fmt.Sprintf("; version %d archived (was %s)", a.Version, a.From)
			}
			return s + authority(Authority{PromotionID: d.PromotionID, OverrideReason: d.OverrideReason})
		}
	case ModelAliasSet:
		var d ModelAliasSetData
		if e.Decode(&d) == nil {
			if d.PreviousVersion == 0 {
				return fmt.Sprintf("alias %s set to version %d", d.Alias, d.Version) + authority(Authority{PromotionID: d.PromotionID, OverrideReason: d.OverrideReason})
			}
			return fmt.Sprintf("alias %s moved from version %d to %d", d.Alias, d.PreviousVersion, d.Version) + authority(Authority{PromotionID: d.PromotionID, OverrideReason: d.OverrideReason})
		}
	case ModelAliasDeleted:
		var d ModelAliasDeletedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("alias %s (version %d) deleted", d.Alias, d.Version) + authority(Authority{PromotionID: d.PromotionID, OverrideReason: d.OverrideReason})
		}
	case ModelArtifactRecorded:
		var d ModelArtifactRecordedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("artifact %s of version %d recorded (%s, %d bytes)", d.Path, d.Version, d.Digest, d.Size)
		}
	}
	return ""
}

// trackingSummary covers experiments and runs.
func trackingSummary(e Envelope) string {
	switch e.Type {
	case ExperimentCreated:
		var d ExperimentCreatedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("experiment %q created", d.Name)
		}
	case ExperimentRenamed:
		var d ExperimentRenamedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("experiment %q renamed to %q", d.PreviousName, d.Name)
		}
	case ExperimentTagsSet, RunTagsSet:
		var d TagsSetData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("%d tag(s) set", len(d.Tags))
		}
	case ExperimentTagDeleted, RunTagDeleted:
		var d TagDeletedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("tag %q deleted", d.Key)
		}
	case ExperimentDeleted:
		return "experiment deleted"
	case ExperimentRestored:
		return "experiment restored"
	case NameReleased:
		var d NameReleasedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("%s name %q released by %s", d.Kind, d.Name, d.OwnerID)
		}
	case RunCreated:
		var d RunCreatedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("run %q started in experiment %s", d.Name, d.ExperimentID)
		}
	case RunUpdated:
		var d RunUpdatedData
		if e.Decode(&d) == nil && d.Status != "" {
			return "run status set to " + d.Status
		}
		return "run updated"
	case RunDeleted:
		return "run deleted"
	case RunRestored:
		return "run restored"
	case RunParamsLogged:
		var d RunParamsLoggedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("%d param(s) logged", len(d.Params))
		}
	case RunArtifactRecorded:
		var d RunArtifactRecordedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("run artifact %s recorded (%s, %d bytes)", d.Path, d.Digest, d.Size)
		}
	case RunInputsLogged:
		var d RunInputsLoggedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("%d dataset input(s) logged", len(d.Inputs))
		}
	case JobSubmitted:
		var d JobSubmittedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("job %q queued for run %s", d.Name, d.RunID)
		}
	case JobAttemptStarted:
		var d JobAttemptStartedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("attempt %d started on runner %s (%s)", d.Attempt, d.RunnerID, d.Executor)
		}
	case JobCancelRequested:
		return "cancellation requested"
	case JobAttemptEnded:
		var d JobAttemptEndedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("attempt %d ended: %s %s", d.Attempt, d.Outcome, d.Reason)
		}
	case JobRequeued:
		var d JobRequeuedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("requeued for attempt %d: %s", d.Attempt, d.Reason)
		}
	case JobEnded:
		var d JobEndedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("job %s: %s", d.State, d.Reason)
		}
	case SweepCreated:
		var d SweepCreatedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("sweep %q created: %s search of %d params, %s %s, up to %d trials", d.Name, d.Algorithm, len(d.Space),
				d.Objective.Direction, d.Objective.Metric, d.MaxTrials)
		}
	case SweepTrialSuggested:
		var d SweepTrialSuggestedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("trial %d suggested", d.Trial)
		}
	case SweepTrialDispatched:
		var d SweepTrialDispatchedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("trial %d submitted as job %s", d.Trial, d.JobID)
		}
	case SweepTrialReported:
		var d SweepTrialReportedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("trial %d reported %s at step %d", d.Trial, d.Value.AppendJSON(nil), d.Step)
		}
	case SweepTrialPruned:
		var d SweepTrialPrunedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("trial %d stopped early at step %d (%s): %s", d.Trial, d.Step, d.Rule, d.Reason)
		}
	case SweepTrialEnded:
		var d SweepTrialEndedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("trial %d ended %s %s", d.Trial, d.State, d.Reason)
		}
	case SweepStopRequested:
		return "stop requested"
	case SweepEnded:
		var d SweepEndedData
		if e.Decode(&d) == nil {
			return fmt.Sprintf("sweep %s after %d trials", d.State, d.Trials)
		}
	}
	return ""
}

// secretFields are event data fields the audit trail and other readers must not see.
var secretFields = map[string][]string{
	UserRegistered: {"password_hash"},
	TokenCreated:   {"hash"},
	// Sealed, but still nobody's business outside the delivery worker.
	WebhookCreated:       {"secret_sealed"},
	WebhookSecretRotated: {"secret_sealed"},
}

// urlFields are URL fields that other readers see reduced to their origin
// (URLOrigin): a webhook URL often carries a credential in its path or
// query (Slack's and Teams' incoming webhooks) or user info, so only the
// internal stream and the subscription's owners (its read model) have it
// whole.
var urlFields = map[string][]string{
	WebhookCreated: {"url"},
	WebhookUpdated: {"url"},
}

// SecretFields lists the data fields of events of type t that Redacted
// removes (none for most types, whose data the audit trail can keep as
// it is).
func SecretFields(t string) []string { return secretFields[t] }

// URLFields lists the data fields of events of type t that Redacted
// reduces to their origin.
func URLFields(t string) []string { return urlFields[t] }

// NeedsRedaction reports whether Redacted changes events of type t.
func NeedsRedaction(t string) bool { return len(secretFields[t]) > 0 || len(urlFields[t]) > 0 }

// Redacted returns the event data with secret fields removed and URL
// fields reduced to their origin.
func Redacted(e Envelope) map[string]any {
	var m map[string]any
	if err := e.Decode(&m); err != nil {
		return nil
	}
	for _, f := range secretFields[e.Type] {
		delete(m, f)
	}
	for _, f := range urlFields[e.Type] {
		if u, ok := m[f].(string); ok {
			m[f] = URLOrigin(u)
		}
	}
	return m
}

// URLOrigin is raw's scheme and host (with the port), followed by "/…"
// when it had anything more (path, query, fragment) and without user
// info: where it points, not the credentials it may carry.
func URLOrigin(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "(redacted)"
	}
	out := u.Scheme + "://" + u.Host
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		out += "/…"
	}
	return out
}
