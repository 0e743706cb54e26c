// Package tracking is the write side of experiment tracking: experiments
// and runs, their pure deciders and Evolve folds, and the service that
// authorizes on the project's event-sourced membership, decides and appends.
// Limits follow MLflow's documented ones, so an MLflow client meets the
// same rules here as on its own server.
package tracking

import (
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
)

// Limits (MLflow's where it documents one).
const (
	MaxNameLen       = 500  // experiment and run names
	MaxKeyLen        = 250  // param, tag and metric keys
	MaxParamValueLen = 6000 // MLflow 2.x
	MaxTagValueLen   = 8000
	MaxTagsPerCall   = 100
	MaxParamsPerCall = 100
	// MaxParamsPerRun and MaxTagsPerRun bound a run's aggregate state (and so
	// the cost of folding it); MLflow has no such limit, nobody comes near it.
	MaxParamsPerRun = 10_000
	MaxTagsPerRun   = 1_000
	// MaxRunBytes bounds the keys and values of a run's params and tags
	// together: what a run's state (and a cache of runs) may weigh.
	MaxRunBytes = 4 << 20
	// RunNameTag mirrors a run's name (MLflow's reserved tag).
	RunNameTag = "mlflow.runName"
	// MaxArtifactsPerRun bounds a run's distinct artifact paths, as
	// registry.MaxArtifactsPerVersion does a version's: the write side keeps
	// them all in the run's state.
	MaxArtifactsPerRun = 10_000
)

// Run statuses (MLflow's RunStatus).
const (
	StatusRunning   = "RUNNING"
	StatusScheduled = "SCHEDULED"
	StatusFinished  = "FINISHED"
	StatusFailed    = "FAILED"
	StatusKilled    = "KILLED"
)

// ValidStatus reports whether s is a run status.
func ValidStatus(s string) bool {
	switch s {
	case StatusRunning, StatusScheduled, StatusFinished, StatusFailed, StatusKilled:
		return true
	}
	return false
}

// keyPattern is MLflow's key syntax: alphanumerics (any script, as
// Python's \w), underscores, dashes, colons,
// periods, spaces and slashes.
var keyPattern = regexp.MustCompile(`^[/\p{L}\p{N}_.\-: ]+$`)

// ValidKey checks a param, tag or metric key: MLflow's syntax and length,
// and no path traversal (keys become file names in MLflow's file store).
func ValidKey(kind, key string) error {
	if key == "" || utf8.RuneCountInString(key) > MaxKeyLen || !keyPattern.MatchString(key) {
		return handlers.Errorf(handlers.Invalid, "validation-failed",
			"invalid %s key %q: 1 to %d characters of letters, digits, _ - . : space and /", kind, truncate(key, 40), MaxKeyLen)
	}
	// As MLflow's path_not_unique: a key is a relative path naming one
	// file, so no empty, "." or ".." segment (no "a//b", "./a", "a/").
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return handlers.Errorf(handlers.Invalid, "validation-failed", "invalid %s key %q: a relative path without empty, . or .. parts", kind, truncate(key, 40))
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// checkName refuses a name with surrounding whitespace rather than trim
// it: the name is a lookup key (get-by-name, the reservation), and a client
// that sent "x " must not find "x" missing and then collide with it.
func checkName(kind, name string, required bool) (string, error) {
	if !required && strings.TrimSpace(name) == "" {
		return "", nil // a blank optional name is no name
	}
	if (required && name == "") || utf8.RuneCountInString(name) > MaxNameLen || !handlers.PlainText(name) || strings.ContainsAny(name, "\r\n") {
		return "", handlers.Errorf(handlers.Invalid, "validation-failed", "%s name must be 1 to %d characters on one line", kind, MaxNameLen)
	}
	if name != strings.TrimSpace(name) {
		return "", handlers.Errorf(handlers.Invalid, "validation-failed", "%s name must not start or end with whitespace", kind)
	}
	return name, nil
}

// CheckTags validates tags to be set (at most MaxTagsPerCall).
func CheckTags(tags map[string]string) error {
	if len(tags) > MaxTagsPerCall {
		return handlers.Errorf(handlers.Invalid, "validation-failed", "at most %d tags per request", MaxTagsPerCall)
	}
	for k, v := range tags {
		if err := ValidKey("tag", k); err != nil {
			return err
		}
		if len(v) > MaxTagValueLen || !handlers.PlainText(v) {
			return handlers.Errorf(handlers.Invalid, "validation-failed", "tag %q: the value must be at most %d bytes of text", k, MaxTagValueLen)
		}
	}
	return nil
}

// ExperimentState is an experiment folded from its events.
type ExperimentState struct {
	Created          bool
	ID               string
	ProjectID        string
	Name             string
	ArtifactLocation string
	Tags             map[string]string
	Deleted          bool
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// CloneExperiment copies the map evolve writes into.
func CloneExperiment(s ExperimentState) ExperimentState {
	s.Tags = maps.Clone(s.Tags)
	return s
}

// EvolveExperiment folds one event into experiment state.
func EvolveExperiment(s ExperimentState, e events.Envelope) (ExperimentState, error) {
	at := e.Time
	switch e.Type {
	case events.ExperimentCreated:
		var d events.ExperimentCreatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = ExperimentState{Created: true, ID: d.ExperimentID, ProjectID: d.ProjectID, Name: d.Name,
			ArtifactLocation: d.ArtifactLocation, Tags: maps.Clone(d.Tags), CreatedAt: at}
	case events.ExperimentRenamed:
		var d events.ExperimentRenamedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Name = d.Name
	case events.ExperimentTagsSet:
		var d events.TagsSetData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if s.Tags == nil {
			s.Tags = map[string]string{}
		}
		maps.Copy(s.Tags, d.Tags)
	case events.ExperimentTagDeleted:
		var d events.TagDeletedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		delete(s.Tags, d.Key)
	case events.ExperimentDeleted:
		s.Deleted = true
	case events.ExperimentRestored:
		s.Deleted = false
	}
	s.UpdatedAt = at
	return s, nil
}

// ExperimentNameKey is the reservation key of an experiment name: names are
// unique per project, case-sensitive as in MLflow.
func ExperimentNameKey(projectID, name string) string { return projectID + "/" + name }

func experimentNameSubject(projectID, name string) string {
	return events.ReservationSubject(events.AggExperimentName, ExperimentNameKey(projectID, name))
}

// ReservationState is a name reservation folded from its events.
type ReservationState struct {
	Taken   bool
	OwnerID string
}

// EvolveReservation folds reserved and released events.
func EvolveReservation(s ReservationState, e events.Envelope) (ReservationState, error) {
	switch e.Type {
	case events.NameReserved:
		var d events.NameReservedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = ReservationState{Taken: true, OwnerID: d.OwnerID}
	case events.NameReleased:
		s = ReservationState{}
	}
	return s, nil
}

// CreateExperiment is the command to create an experiment.
type CreateExperiment struct {
	ExperimentID     string
	ProjectID        string
	Name             string
	ArtifactLocation string
	Tags             map[string]string
}

// DecideCreateExperiment creates an experiment and reserves its name.
func DecideCreateExperiment(name ReservationState, c CreateExperiment) ([]handlers.Change, error) {
	n, err := checkName("experiment", c.Name, true)
	if err != nil {
		return nil, err
	}
	if err := CheckTags(c.Tags); err != nil {
		return nil, err
	}
	if len(c.ArtifactLocation) > 2000 || !handlers.PlainText(c.ArtifactLocation) {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "artifact_location must be at most 2000 characters of text")
	}
	if name.Taken {
		return nil, handlers.Errorf(handlers.Conflict, "experiment-exists", "an experiment named %q already exists in the project (perhaps deleted)", n)
	}
	return []handlers.Change{
		{Subject: experimentNameSubject(c.ProjectID, n), Type: events.NameReserved,
			Data: events.NameReservedData{Kind: "experiment", Name: n, OwnerID: c.ExperimentID, Scope: c.ProjectID}},
		{Subject: events.Subject(events.AggExperiment, c.ExperimentID), Type: events.ExperimentCreated,
			Data: events.ExperimentCreatedData{ExperimentID: c.ExperimentID, ProjectID: c.ProjectID, Name: n,
				ArtifactLocation: c.ArtifactLocation, Tags: c.Tags}},
	}, nil
}

func activeExperiment(x ExperimentState) error {
	if !x.Created {
		return handlers.Errorf(handlers.NotFound, "not-found", "experiment not found")
	}
	if x.Deleted {
		return handlers.Errorf(handlers.Conflict, "experiment-deleted", "the experiment %s is deleted; restore it first", x.ID)
	}
	return nil
}

// DecideRenameExperiment renames an active experiment: the new name is
// reserved and the old one released, with the rename, in one append.
func DecideRenameExperiment(x ExperimentState, newName ReservationState, name string) ([]handlers.Change, error) {
	if err := activeExperiment(x); err != nil {
		return nil, err
	}
	n, err := checkName("experiment", name, true)
	if err != nil {
		return nil, err
	}
	if n == x.Name {
		return nil, nil
	}
	if newName.Taken {
		return nil, handlers.Errorf(handlers.Conflict, "experiment-exists", "an experiment named %q already exists in the project (perhaps deleted)", n)
	}
	return []handlers.Change{
		{Subject: experimentNameSubject(x.ProjectID, n), Type: events.NameReserved,
			Data: events.NameReservedData{Kind: "experiment", Name: n, OwnerID: x.ID, Scope: x.ProjectID}},
		{Subject: experimentNameSubject(x.ProjectID, x.Name), Type: events.NameReleased,
			Data: events.NameReleasedData{Kind: "experiment", Name: x.Name, OwnerID: x.ID, Scope: x.ProjectID}},
		{Subject: events.Subject(events.AggExperiment, x.ID), Type: events.ExperimentRenamed,
			Data: events.ExperimentRenamedData{ExperimentID: x.ID, ProjectID: x.ProjectID, Name: n, PreviousName: x.Name}},
	}, nil
}

// UpdateExperiment renames an experiment and/or sets its tags (nil:
// unchanged), as one command: all of it is applied or none.
type UpdateExperiment struct {
	Name *string
	Tags map[string]string
}

// DecideUpdateExperiment decides a rename (on the new name's reservation)
// and a tag change together.
func DecideUpdateExperiment(x ExperimentState, newName ReservationState, c UpdateExperiment) ([]handlers.Change, error) {
	var out []handlers.Change
	if c.Name != nil {
		ch, err := DecideRenameExperiment(x, newName, *c.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, ch...)
	}
	if c.Tags != nil {
		ch, err := DecideSetExperimentTags(x, c.Tags)
		if err != nil {
			return nil, err
		}
		out = append(out, ch...)
	}
	return out, nil
}

// DecideSetExperimentTags sets tags on an active experiment (a no-op when
// they hold already).
func DecideSetExperimentTags(x ExperimentState, tags map[string]string) ([]handlers.Change, error) {
	if err := activeExperiment(x); err != nil {
		return nil, err
	}
	if err := CheckTags(tags); err != nil {
		return nil, err
	}
	changed := changedTags(x.Tags, tags)
	if len(changed) == 0 {
		return nil, nil
	}
	if len(x.Tags)+newKeys(x.Tags, changed) > MaxTagsPerRun {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "an experiment holds at most %d tags", MaxTagsPerRun)
	}
	return []handlers.Change{{Subject: events.Subject(events.AggExperiment, x.ID), Type: events.ExperimentTagsSet,
		Data: events.TagsSetData{ID: x.ID, Tags: changed}}}, nil
}

// changedTags is the part of tags that differs from cur.
func changedTags(cur, tags map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range tags {
		if old, ok := cur[k]; !ok || old != v {
			out[k] = v
		}
	}
	return out
}

// newKeys counts the keys of changed that cur does not hold yet.
func newKeys(cur, changed map[string]string) int {
	n := 0
	for k := range changed {
		if _, ok := cur[k]; !ok {
			n++
		}
	}
	return n
}

// DecideDeleteExperimentTag removes a tag; a missing tag is a 404, as in
// MLflow.
func DecideDeleteExperimentTag(x ExperimentState, key string) ([]handlers.Change, error) {
	if err := activeExperiment(x); err != nil {
		return nil, err
	}
	if _, ok := x.Tags[key]; !ok {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "the experiment has no tag %q", truncate(key, 40))
	}
	return []handlers.Change{{Subject: events.Subject(events.AggExperiment, x.ID), Type: events.ExperimentTagDeleted,
		Data: events.TagDeletedData{ID: x.ID, Key: key}}}, nil
}

// DecideDeleteExperiment deletes (del) or restores an experiment; doing it
// twice is a no-op. Its runs keep their own lifecycle; while it is deleted
// they take no writes (Service.liveExperiment), as MLflow's deleted runs.
func DecideDeleteExperiment(x ExperimentState, del bool) ([]handlers.Change, error) {
	if !x.Created {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "experiment not found")
	}
	if x.Deleted == del {
		return nil, nil
	}
	typ := events.ExperimentRestored
	if del {
		typ = events.ExperimentDeleted
	}
	return []handlers.Change{{Subject: events.Subject(events.AggExperiment, x.ID), Type: typ,
		Data: events.ExperimentLifecycleData{ExperimentID: x.ID, ProjectID: x.ProjectID}}}, nil
}

// RunState is a run folded from its events.
type RunState struct {
	Created      bool
	ID           string
	ExperimentID string
	ProjectID    string
	Name         string
	UserID       string
	Status       string
	StartTime    int64
	EndTime      *int64
	Deleted      bool
	Params       map[string]string
	Tags         map[string]string
	// Artifacts maps path → the artifact recorded there (nil until the
	// first one).
	Artifacts map[string]registry.Artifact
	// Inputs holds the datasets the run used, by InputKey (nil until the
	// first): only what deduplicates them, the rest is in the events.
	Inputs map[string]bool
}

// CloneRun copies the maps evolve writes into.
func CloneRun(s RunState) RunState {
	s.Params, s.Tags, s.Artifacts, s.Inputs = maps.Clone(s.Params), maps.Clone(s.Tags), maps.Clone(s.Artifacts), maps.Clone(s.Inputs)
	return s
}

// EvolveRun folds one event into run state.
func EvolveRun(s RunState, e events.Envelope) (RunState, error) {
	switch e.Type {
	case events.RunCreated:
		var d events.RunCreatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = RunState{Created: true, ID: d.RunID, ExperimentID: d.ExperimentID, ProjectID: d.ProjectID, Name: d.Name,
			UserID: d.UserID, Status: StatusRunning, StartTime: d.StartTime, Tags: maps.Clone(d.Tags), Params: map[string]string{}}
		if s.Tags == nil {
			s.Tags = map[string]string{}
		}
	case events.RunUpdated:
		var d events.RunUpdatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if d.Status != "" {
			s.Status = d.Status
		}
		if d.EndTime != nil {
			end := *d.EndTime
			s.EndTime = &end
		}
		if d.Name != nil {
			s.Name = *d.Name
		}
	case events.RunDeleted:
		s.Deleted = true
	case events.RunRestored:
		s.Deleted = false
	case events.RunParamsLogged:
		var d events.RunParamsLoggedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		for _, p := range d.Params {
			s.Params[p.Key] = p.Value
		}
	case events.RunTagsSet:
		var d events.TagsSetData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		maps.Copy(s.Tags, d.Tags)
	case events.RunTagDeleted:
		var d events.TagDeletedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		delete(s.Tags, d.Key)
	case events.RunArtifactRecorded:
		var d events.RunArtifactRecordedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if s.Artifacts == nil {
			s.Artifacts = map[string]registry.Artifact{}
		}
		s.Artifacts[d.Path] = registry.Artifact{Path: d.Path, Digest: d.Digest, Size: d.Size, ContentType: d.ContentType, RecordedAt: e.Time}
	case events.RunInputsLogged:
		var d events.RunInputsLoggedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if s.Inputs == nil {
			s.Inputs = map[string]bool{}
		}
		for _, in := range d.Inputs {
			s.Inputs[InputKey(in)] = true
		}
	}
	return s, nil
}

// CreateRun is the command to start a run.
type CreateRun struct {
	RunID     string
	UserID    string
	Name      string
	StartTime int64 // ms; 0 = now
	Tags      map[string]string
	Now       int64 // ms
	// Status, when set, is the status the run starts in (a job's run is
	// SCHEDULED until its job runs); "" = RUNNING.
	Status string
	// Params are logged with the run's creation (a job's params).
	Params []events.Param
}

// DecideCreateRun starts a run in an active experiment. The name and the
// mlflow.runName tag mirror each other: either one gives both. A status
// and params, when given, are recorded in the same append.
func DecideCreateRun(x ExperimentState, r RunState, c CreateRun) ([]handlers.Change, error) {
	if err := activeExperiment(x); err != nil {
		return nil, err
	}
	if r.Created {
		return nil, handlers.Errorf(handlers.Conflict, "run-exists", "run %s already exists", c.RunID)
	}
	if err := CheckTags(c.Tags); err != nil {
		return nil, err
	}
	name, err := checkName("run", c.Name, false)
	if err != nil {
		return nil, err
	}
	tags := maps.Clone(c.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	tag, ok := tags[RunNameTag]
	if ok && strings.TrimSpace(tag) == "" {
		ok = false // a blank tag names nothing
	}
	switch {
	case name == "" && ok:
		if name, err = checkName("run", tag, false); err != nil {
			return nil, err
		}
	case name != "" && ok && strings.TrimSpace(tag) != name:
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "run_name and the %s tag differ", RunNameTag)
	case name == "":
		name = generatedRunName(c.RunID)
	}
	tags[RunNameTag] = name
	start := c.StartTime
	if start == 0 {
		start = c.Now
	}
	if start < 0 {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "start_time must be milliseconds since the epoch")
	}
	changes := []handlers.Change{{Subject: events.Subject(events.AggRun, c.RunID), Type: events.RunCreated,
		Data: events.RunCreatedData{RunID: c.RunID, ExperimentID: x.ID, ProjectID: x.ProjectID, Name: name, UserID: c.UserID,
			StartTime: start, Tags: tags}}}
	created := RunState{Created: true, ID: c.RunID, ExperimentID: x.ID, ProjectID: x.ProjectID, Name: name, Status: StatusRunning, Tags: tags}
	if c.Status != "" && c.Status != created.Status {
		more, err := DecideUpdateRun(created, UpdateRun{Status: c.Status})
		if err != nil {
			return nil, err
		}
		changes = append(changes, more...)
	}
	if len(c.Params) > 0 {
		more, err := DecideLogParams(created, c.Params)
		if err != nil {
			return nil, err
		}
		changes = append(changes, more...)
	}
	return changes, nil
}

// generatedRunName names a run that was given none, as MLflow does (it
// picks two random words; a stable name from the id serves the same end).
func generatedRunName(runID string) string {
	id := strings.ReplaceAll(runID, "-", "")
	return "run-" + id[:min(8, len(id))]
}

func activeRun(r RunState) error {
	if !r.Created {
		return handlers.Errorf(handlers.NotFound, "not-found", "run not found")
	}
	if r.Deleted {
		return handlers.Errorf(handlers.Conflict, "run-deleted", "the run %s is deleted; restore it first", r.ID)
	}
	return nil
}

// UpdateRun changes a run's status, end time, name or tags (nil or empty:
// unchanged). It is one command, so one request's changes are applied all
// together or not at all.
type UpdateRun struct {
	Status  string
	EndTime *int64
	Name    *string
	Tags    map[string]string
}

// DecideUpdateRun updates an active run. The name and the mlflow.runName
// tag are one thing: setting either sets both (a request giving both must
// give them equal).
func DecideUpdateRun(r RunState, c UpdateRun) ([]handlers.Change, error) {
	if err := activeRun(r); err != nil {
		return nil, err
	}
	d := events.RunUpdatedData{RunID: r.ID}
	if c.Status != "" && !ValidStatus(c.Status) {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "status must be one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED")
	}
	if c.Status != "" && c.Status != r.Status {
		d.Status = c.Status
	}
	if c.EndTime != nil {
		if *c.EndTime < 0 {
			return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "end_time must be milliseconds since the epoch")
		}
		if r.EndTime == nil || *r.EndTime != *c.EndTime {
			d.EndTime = c.EndTime
		}
	}
	if err := CheckTags(c.Tags); err != nil {
		return nil, err
	}
	tags := c.Tags
	if tag, ok := tags[RunNameTag]; ok {
		if _, err := checkName("run", tag, true); err != nil {
			return nil, err
		}
	}
	if c.Name != nil {
		name, err := checkName("run", *c.Name, false)
		if err != nil {
			return nil, err
		}
		if tag, ok := tags[RunNameTag]; ok && name != "" && tag != name {
			return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "name and the %s tag differ", RunNameTag)
		}
		if name != "" {
			tags = maps.Clone(tags)
			if tags == nil {
				tags = map[string]string{}
			}
			tags[RunNameTag] = name
		}
	}
	changed := changedTags(r.Tags, tags)
	if len(r.Tags)+newKeys(r.Tags, changed) > MaxTagsPerRun {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "a run holds at most %d tags", MaxTagsPerRun)
	}
	if err := fits(r, changed); err != nil { // an overwrite counted whole: a safe overestimate
		return nil, err
	}
	if name, ok := changed[RunNameTag]; ok && name != r.Name {
		d.Name = &name
	}
	var out []handlers.Change
	if d.Status != "" || d.EndTime != nil || d.Name != nil {
		out = append(out, handlers.Change{Subject: events.Subject(events.AggRun, r.ID), Type: events.RunUpdated, Data: d})
	}
	if len(changed) > 0 {
		out = append(out, handlers.Change{Subject: events.Subject(events.AggRun, r.ID), Type: events.RunTagsSet,
			Data: events.TagsSetData{ID: r.ID, Tags: changed}})
	}
	return out, nil
}

// DecideLogParams logs params on an active run: write-once per key, as in
// MLflow (the same value again is fine and changes nothing; another value
// is refused, naming the key).
func DecideLogParams(r RunState, params []events.Param) ([]handlers.Change, error) {
	if err := activeRun(r); err != nil {
		return nil, err
	}
	if len(params) > MaxParamsPerCall {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "at most %d params per request", MaxParamsPerCall)
	}
	seen := map[string]string{}
	var fresh []events.Param
	for i, p := range params {
		if err := ValidKey("param", p.Key); err != nil {
			return nil, indexed(err, i)
		}
		if len(p.Value) > MaxParamValueLen || !handlers.PlainText(p.Value) {
			return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "params[%d] %q: the value must be at most %d bytes of text", i, p.Key, MaxParamValueLen)
		}
		if v, ok := seen[p.Key]; ok {
			if v != p.Value {
				return nil, handlers.Errorf(handlers.Invalid, "param-overwrite", "params[%d]: param %q is given twice with different values", i, p.Key)
			}
			continue
		}
		seen[p.Key] = p.Value
		if v, ok := r.Params[p.Key]; ok {
			if v != p.Value {
				return nil, handlers.Errorf(handlers.Invalid, "param-overwrite",
					"params[%d]: param %q was already logged with value %q; params are written once", i, p.Key, truncate(v, 100))
			}
			continue
		}
		fresh = append(fresh, p)
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	if len(r.Params)+len(fresh) > MaxParamsPerRun {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "a run holds at most %d params", MaxParamsPerRun)
	}
	added := make(map[string]string, len(fresh))
	for _, p := range fresh {
		added[p.Key] = p.Value
	}
	if err := fits(r, added); err != nil {
		return nil, err
	}
	return []handlers.Change{{Subject: events.Subject(events.AggRun, r.ID), Type: events.RunParamsLogged,
		Data: events.RunParamsLoggedData{RunID: r.ID, Params: fresh}}}, nil
}

// runBytes is the weight of a run's params and tags (MaxRunBytes).
func runBytes(r RunState) int {
	n := 0
	for _, m := range []map[string]string{r.Params, r.Tags} {
		for k, v := range m {
			n += len(k) + len(v)
		}
	}
	return n
}

// fits refuses changes that would take a run beyond MaxRunBytes.
func fits(r RunState, add map[string]string) error {
	n := runBytes(r)
	for k, v := range add {
		n += len(k) + len(v)
	}
	if n > MaxRunBytes {
		return handlers.Errorf(handlers.Invalid, "validation-failed", "a run holds at most %d bytes of params and tags", MaxRunBytes)
	}
	return nil
}

// indexed prefixes a validation error's detail with the param's index.
func indexed(err error, i int) error { return indexedAs("params", err, i) }

// indexedAs prefixes a validation error's detail with list[i].
func indexedAs(list string, err error, i int) error {
	if e, ok := handlers.AsError(err); ok {
		c := *e
		c.Detail = list + "[" + strconv.Itoa(i) + "]: " + c.Detail
		return &c
	}
	return err
}

// DecideSetRunTags sets tags on an active run; setting mlflow.runName also
// renames the run.
func DecideSetRunTags(r RunState, tags map[string]string) ([]handlers.Change, error) {
	return DecideUpdateRun(r, UpdateRun{Tags: tags})
}

// DecideDeleteRunTag removes a tag from an active run (404 if absent).
// mlflow.runName cannot be deleted: it is the run's name.
func DecideDeleteRunTag(r RunState, key string) ([]handlers.Change, error) {
	if err := activeRun(r); err != nil {
		return nil, err
	}
	if _, ok := r.Tags[key]; !ok {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "the run has no tag %q", truncate(key, 40))
	}
	if key == RunNameTag {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "%s is the run's name; rename the run instead", RunNameTag)
	}
	return []handlers.Change{{Subject: events.Subject(events.AggRun, r.ID), Type: events.RunTagDeleted, Data: events.TagDeletedData{ID: r.ID, Key: key}}}, nil
}

// DecideDeleteRun deletes (del) or restores a run; twice is a no-op.
func DecideDeleteRun(r RunState, del bool) ([]handlers.Change, error) {
	if !r.Created {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "run not found")
	}
	if r.Deleted == del {
		return nil, nil
	}
	typ := events.RunRestored
	if del {
		typ = events.RunDeleted
	}
	return []handlers.Change{{Subject: events.Subject(events.AggRun, r.ID), Type: typ,
		Data: events.RunLifecycleData{RunID: r.ID, ExperimentID: r.ExperimentID}}}, nil
}

// DecideRecordRunArtifact records a stored blob as the run's artifact at
// a.Path, by the rules of a model version's (registry.RecordableArtifact):
// the same bytes again change nothing, a run holds at most
// MaxArtifactsPerRun paths, and a deleted run takes none.
func DecideRecordRunArtifact(r RunState, a registry.Artifact) ([]handlers.Change, error) {
	if err := activeRun(r); err != nil {
		return nil, err
	}
	if changed, err := registry.RecordableArtifact("the run", r.Artifacts, a, MaxArtifactsPerRun); !changed {
		return nil, err
	}
	return []handlers.Change{{Subject: events.Subject(events.AggRun, r.ID), Type: events.RunArtifactRecorded,
		Data: events.RunArtifactRecordedData{RunID: r.ID, Path: a.Path, Digest: a.Digest, Size: a.Size, ContentType: a.ContentType}}}, nil
}

// SortedParams returns params ordered by key (stable answers).
func SortedParams(m map[string]string) []events.Param {
	out := make([]events.Param, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, events.Param{Key: k, Value: m[k]})
	}
	return out
}

// MaxMetricsPerCall bounds one metric logging request (Maestro's batch
// API; MLflow's log-batch allows 1,000).
const MaxMetricsPerCall = 10_000

// Metric is one point to log.
type Metric struct {
	Key       string
	Value     events.MetricValue
	Step      int64
	Timestamp int64 // ms since the epoch
}

// DecideLogMetrics logs points on an active run: one message on the run's
// metrics subject (MAESTRO_METRICS), points grouped by key in the order
// sent. A refused point is named by its index and nothing is logged.
func DecideLogMetrics(r RunState, metrics []Metric) ([]handlers.Change, error) {
	if err := activeRun(r); err != nil {
		return nil, err
	}
	if len(metrics) == 0 || len(metrics) > MaxMetricsPerCall {
		return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "send 1 to %d metric points", MaxMetricsPerCall)
	}
	counts := map[string]int{}
	for i, m := range metrics {
		n, seen := counts[m.Key]
		if !seen { // a series' key is checked once, not per point
			if err := ValidKey("metric", m.Key); err != nil {
				return nil, indexedAs("metrics", err, i)
			}
		}
		if m.Timestamp < 0 {
			return nil, handlers.Errorf(handlers.Invalid, "validation-failed", "metrics[%d]: timestamp must be milliseconds since the epoch", i)
		}
		counts[m.Key] = n + 1
	}
	// The series share one array, cut to their counts: no growing.
	all := make([]events.MetricPoint, len(metrics))
	byKey := make(map[string][]events.MetricPoint, len(counts))
	for k, n := range counts {
		byKey[k], all = all[:0:n], all[n:]
	}
	for _, m := range metrics {
		byKey[m.Key] = append(byKey[m.Key], events.MetricPoint{Value: m.Value, Step: m.Step, Timestamp: m.Timestamp})
	}
	return []handlers.Change{{Subject: events.MetricsSubject(r.ID), Type: events.MetricsLogged,
		Data: events.MetricsLoggedData{RunID: r.ID, ExperimentID: r.ExperimentID, ProjectID: r.ProjectID, Metrics: byKey}}}, nil
}
