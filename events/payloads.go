package events

import "reflect"

// payloads is the data struct of every catalogued event type: the one
// place that says which XxxData a type carries. The published contract
// (events/contract: the AsyncAPI document and its JSON Schemas) is
// generated from it, so a type added to the catalogue without an entry
// here fails TestEveryCatalogedTypeHasAPayload and the contract's coverage
// test, by name.
var payloads = map[string]any{
	UserRegistered:         UserRegisteredData{},
	UserRoleChanged:        UserRoleChangedData{},
	UserDeactivated:        UserActivationData{},
	UserReactivated:        UserActivationData{},
	UserLoginFailed:        UserLoginFailedData{},
	UserLoginFailuresReset: UserLoginFailuresResetData{},
	EmailReserved:          EmailReservedData{},
	AdminBootstrapped:      AdminBootstrappedData{},

	SessionStarted:   SessionStartedData{},
	SessionRefreshed: SessionRefreshedData{},
	SessionRevoked:   SessionRevokedData{},

	TokenCreated: TokenCreatedData{},
	TokenRevoked: TokenRevokedData{},
	TokenUsed:    TokenUsedData{},

	ProjectCreated:       ProjectCreatedData{},
	ProjectUpdated:       ProjectUpdatedData{},
	ProjectArchived:      ProjectLifecycleData{},
	ProjectRestored:      ProjectLifecycleData{},
	ProjectMemberSet:     ProjectMemberSetData{},
	ProjectMemberRemoved: ProjectMemberRemovedData{},
	ProjectPolicySet:     ProjectPolicySetData{},
	ProjectPolicyRemoved: ProjectPolicyRemovedData{},
	NameReserved:         NameReservedData{},
	NameReleased:         NameReleasedData{},

	ModelCreated:           ModelCreatedData{},
	ModelUpdated:           ModelUpdatedData{},
	ModelDeleted:           ModelLifecycleData{},
	ModelRestored:          ModelLifecycleData{},
	ModelRenamed:           ModelRenamedData{},
	ModelVersionRegistered: ModelVersionRegisteredData{},
	ModelVersionUpdated:    ModelVersionUpdatedData{},
	ModelVersionDeleted:    ModelVersionDeletedData{},
	ModelVersionTransition: ModelVersionTransitionData{},
	ModelAliasSet:          ModelAliasSetData{},
	ModelAliasDeleted:      ModelAliasDeletedData{},
	ModelArtifactRecorded:  ModelArtifactRecordedData{},

	PromotionRequested: PromotionRequestedData{},
	PromotionApproved:  PromotionApprovedData{},
	PromotionRejected:  PromotionRejectedData{},
	PromotionCancelled: PromotionCancelledData{},
	PromotionCompleted: PromotionCompletedData{},
	PromotionFailed:    PromotionFailedData{},

	WebhookCreated:       WebhookCreatedData{},
	WebhookUpdated:       WebhookUpdatedData{},
	WebhookSecretRotated: WebhookSecretRotatedData{},
	WebhookDisabled:      WebhookDisabledData{},
	WebhookDeleted:       WebhookDeletedData{},
	WebhookTestRequested: WebhookTestRequestedData{},

	ExperimentCreated:    ExperimentCreatedData{},
	ExperimentRenamed:    ExperimentRenamedData{},
	ExperimentTagsSet:    TagsSetData{},
	ExperimentTagDeleted: TagDeletedData{},
	ExperimentDeleted:    ExperimentLifecycleData{},
	ExperimentRestored:   ExperimentLifecycleData{},

	RunCreated:          RunCreatedData{},
	RunUpdated:          RunUpdatedData{},
	RunDeleted:          RunLifecycleData{},
	RunRestored:         RunLifecycleData{},
	RunParamsLogged:     RunParamsLoggedData{},
	RunTagsSet:          TagsSetData{},
	RunTagDeleted:       TagDeletedData{},
	RunArtifactRecorded: RunArtifactRecordedData{},
	RunInputsLogged:     RunInputsLoggedData{},

	JobSubmitted:       JobSubmittedData{},
	JobAttemptStarted:  JobAttemptStartedData{},
	JobCancelRequested: JobCancelRequestedData{},
	JobAttemptEnded:    JobAttemptEndedData{},
	JobRequeued:        JobRequeuedData{},
	JobEnded:           JobEndedData{},

	SweepCreated:         SweepCreatedData{},
	SweepTrialSuggested:  SweepTrialSuggestedData{},
	SweepTrialDispatched: SweepTrialDispatchedData{},
	SweepTrialReported:   SweepTrialReportedData{},
	SweepTrialPruned:     SweepTrialPrunedData{},
	SweepTrialEnded:      SweepTrialEndedData{},
	SweepStopRequested:   SweepStopRequestedData{},
	SweepEnded:           SweepEndedData{},
}

// PayloadOf is the Go type of the data of events of type typ (a struct),
// and false for a type with no registered payload.
func PayloadOf(typ string) (reflect.Type, bool) {
	v, ok := payloads[typ]
	if !ok {
		return nil, false
	}
	return reflect.TypeOf(v), true
}
