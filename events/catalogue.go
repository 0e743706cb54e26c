package events

// Types is the event catalogue: every event type Maestro appends to
// MAESTRO_EVENTS, grouped by aggregate (the constants and their data live in
// one file per aggregate). TestCatalogueIsComplete keeps it in step with
// the constants; projections are checked against it.
func Types() []string {
	return []string{
		UserRegistered, UserRoleChanged, UserDeactivated, UserReactivated, UserLoginFailed, UserLoginFailuresReset,
		EmailReserved, AdminBootstrapped,
		SessionStarted, SessionRefreshed, SessionRevoked,
		ProjectCreated, ProjectUpdated, ProjectArchived, ProjectRestored, ProjectMemberSet, ProjectMemberRemoved,
		NameReserved,
		ModelCreated, ModelUpdated, ModelDeleted, ModelRestored,
		ModelVersionRegistered, ModelVersionUpdated, ModelVersionDeleted, ModelVersionTransition,
		ModelAliasSet, ModelAliasDeleted, ModelArtifactRecorded,
	}
}
