package registry

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/google/uuid"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Input bounds of the registry.
const (
	MaxSourceLen    = 2048
	MaxRunIDLen     = 256
	MaxMetrics      = 200
	MaxSignatureLen = 64 << 10
	MaxPathLen      = 1024
	// MaxArtifactsPerVersion bounds the distinct paths of one version: the
	// write side keeps them all in memory, and the artifacts list pages
	// through them.
	MaxArtifactsPerVersion = 10000
)

// Artifact is one stored file of a version.
type Artifact struct {
	Path        string
	Digest      string
	Size        int64
	ContentType string
	RecordedAt  time.Time
}

// VersionState is one model version.
type VersionState struct {
	Version     int
	Description string
	Tags        map[string]string
	Source      string
	RunID       string
	Metrics     map[string]float64
	Signature   json.RawMessage
	Stage       string
	Deleted     bool
	// Author is who registered the version (the actor's id): separation
	// of duties keeps them from approving its promotion.
	Author string
	// Artifacts maps path → artifact. Evolve writes into it in place when
	// the fold that is running created it (see foldToken), so folding n
	// artifact events costs O(n), not O(n²).
	Artifacts map[string]Artifact
	CreatedAt time.Time
	UpdatedAt time.Time

	artifactsOwner *foldToken
}

// foldToken identifies one run of folds into one copy of a model state.
// Maps that a state's own fold created are updated in place; maps shared
// with an earlier copy (a cached state, a snapshot) are copied once, on the
// first write. It has a field because pointers to zero-size values need not
// be distinct.
type foldToken struct{ _ byte }

// ModelState is a registered model folded from its events.
type ModelState struct {
	Created     bool
	ID          string
	ProjectID   string
	Name        string
	Description string
	Tags        map[string]string
	Deleted     bool
	// Versions[i].Version == i+1. Pointers, copied on write: evolve replaces
	// a changed version. The array is shared between copies of a state (see
	// appendVersion and ownVersions), so cloning a state costs nothing per
	// version and a registration appends in place.
	Versions  []*VersionState
	Aliases   map[string]int // alias → version; written in place only by the fold that owns it
	CreatedAt time.Time
	UpdatedAt time.Time

	// held is every name the model has borne (lower case, as reservations
	// key them): its names stay reserved by it, so a rename to one of them
	// reserves nothing. Replaced, never written in place (renames are rare).
	held map[string]bool

	fold          *foldToken // this copy's fold; nil until created or cloned
	aliasesOwner  *foldToken
	versionsOwner *foldToken    // the fold that may write Versions' elements in place
	versionsTail  *versionsTail // shared by every copy using Versions' array
}

// versionsTail counts the slots of a versions array some state uses: a copy
// whose length is that count may append into the array's spare capacity (and
// claims the slot), any other copy must not, because a slot beyond its own
// length may belong to another copy's newer version.
type versionsTail struct{ used atomic.Int64 }

// appendVersion adds the next version: in place when this copy holds the
// array's last used slot and there is room, otherwise into a new array
// this fold owns (amortised O(1) either way for a chain of copies).
func (s *ModelState) appendVersion(v *VersionState) {
	n := len(s.Versions)
	if s.versionsTail != nil && n < cap(s.Versions) && s.versionsTail.used.CompareAndSwap(int64(n), int64(n+1)) {
		s.Versions = append(s.Versions, v)
		return
	}
	grown := make([]*VersionState, n, max(2*n, 8))
	copy(grown, s.Versions)
	s.Versions = append(grown, v)
	s.versionsTail = &versionsTail{}
	s.versionsTail.used.Store(int64(n + 1))
	if s.fold == nil {
		s.fold = &foldToken{}
	}
	s.versionsOwner = s.fold
}

// ownVersions makes Versions an array this fold may write elements of.
func (s *ModelState) ownVersions() {
	if s.fold == nil {
		s.fold = &foldToken{}
	}
	if s.versionsOwner != s.fold {
		s.Versions = slices.Clone(s.Versions)
		s.versionsTail = &versionsTail{}
		s.versionsTail.used.Store(int64(len(s.Versions)))
		s.versionsOwner = s.fold
	}
}

// CloneModel starts a new fold on a copy of s, so the versions array and the
// alias and artifact maps are copied on their first change (a new version
// is appended without copying when it can be; see appendVersion): a cached
// state stays untouched while new events are folded into the copy. Keep a
// state you still need by folding into its clone, never into it.
func CloneModel(s ModelState) ModelState {
	s.fold = &foldToken{}
	return s
}

// ownAliases makes s.Aliases a map this fold may write.
func (s *ModelState) ownAliases() {
	if s.fold == nil {
		s.fold = &foldToken{}
	}
	if s.aliasesOwner != s.fold {
		s.Aliases = maps.Clone(s.Aliases)
		if s.Aliases == nil {
			s.Aliases = map[string]int{}
		}
		s.aliasesOwner = s.fold
	}
}

// Version returns version v, if it exists (deleted or not).
func (s ModelState) Version(v int) (VersionState, bool) {
	if v < 1 || v > len(s.Versions) {
		return VersionState{}, false
	}
	return *s.Versions[v-1], true
}

// EvolveModel folds one event into model state.
func EvolveModel(s ModelState, e events.Envelope) (ModelState, error) {
	switch e.Type {
	case events.ModelCreated:
		var d events.ModelCreatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		fold := &foldToken{}
		return ModelState{Created: true, ID: d.ModelID, ProjectID: d.ProjectID, Name: d.Name, Description: d.Description,
			Tags: d.Tags, Aliases: map[string]int{}, CreatedAt: e.Time, UpdatedAt: e.Time, held: map[string]bool{strings.ToLower(d.Name): true},
			fold: fold, aliasesOwner: fold}, nil
	case events.ModelUpdated:
		var d events.ModelUpdatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if d.Description != nil {
			s.Description = *d.Description
		}
		if d.Tags != nil {
			s.Tags = d.Tags
		}
	case events.ModelDeleted:
		s.Deleted = true
	case events.ModelRestored:
		s.Deleted = false
	case events.ModelRenamed:
		var d events.ModelRenamedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Name = d.Name
		held := make(map[string]bool, len(s.held)+1)
		maps.Copy(held, s.held)
		held[strings.ToLower(d.Name)] = true
		s.held = held
	case events.ModelVersionRegistered:
		var d events.ModelVersionRegisteredData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.appendVersion(&VersionState{Version: d.Version, Description: d.Description, Tags: d.Tags,
			Source: d.Source, RunID: d.RunID, Metrics: d.Metrics, Signature: d.Signature, Stage: events.StageNone,
			Author: e.Actor.ID, CreatedAt: e.Time, UpdatedAt: e.Time})
	case events.ModelVersionUpdated:
		var d events.ModelVersionUpdatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.updateVersion(d.Version, e.Time, func(v *VersionState) {
			if d.Description != nil {
				v.Description = *d.Description
			}
			if d.Tags != nil {
				v.Tags = d.Tags
			}
		})
	case events.ModelVersionDeleted:
		var d events.ModelVersionDeletedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.updateVersion(d.Version, e.Time, func(v *VersionState) { v.Deleted = true })
		if len(d.RemovedAliases) > 0 {
			s.ownAliases()
			for _, a := range d.RemovedAliases {
				delete(s.Aliases, a)
			}
		}
	case events.ModelVersionTransition:
		var d events.ModelVersionTransitionData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		for _, a := range d.Archived {
			s.updateVersion(a.Version, e.Time, func(v *VersionState) { v.Stage = events.StageArchived })
		}
		s.updateVersion(d.Version, e.Time, func(v *VersionState) { v.Stage = d.To })
	case events.ModelAliasSet:
		var d events.ModelAliasSetData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.ownAliases()
		s.Aliases[d.Alias] = d.Version
	case events.ModelAliasDeleted:
		var d events.ModelAliasDeletedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.ownAliases()
		delete(s.Aliases, d.Alias)
	case events.ModelArtifactRecorded:
		var d events.ModelArtifactRecordedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if s.fold == nil {
			s.fold = &foldToken{}
		}
		s.updateVersion(d.Version, e.Time, func(v *VersionState) {
			if v.artifactsOwner != s.fold {
				v.Artifacts = maps.Clone(v.Artifacts)
				if v.Artifacts == nil {
					v.Artifacts = map[string]Artifact{}
				}
				v.artifactsOwner = s.fold
			}
			v.Artifacts[d.Path] = Artifact{Path: d.Path, Digest: d.Digest, Size: d.Size, ContentType: d.ContentType, RecordedAt: e.Time}
		})
	default:
		return s, nil
	}
	s.UpdatedAt = e.Time
	return s, nil
}

func (s *ModelState) updateVersion(v int, t time.Time, f func(*VersionState)) {
	if v >= 1 && v <= len(s.Versions) {
		s.ownVersions()
		nv := *s.Versions[v-1]
		f(&nv)
		nv.UpdatedAt = t
		s.Versions[v-1] = &nv
	}
}

func modelSubject(s ModelState) string { return events.Subject(events.AggModel, s.ID) }

// ModelNameKey is what model-name uniqueness is decided on within a project.
func ModelNameKey(projectID, name string) string {
	return projectID + "/" + strings.ToLower(strings.TrimSpace(name))
}

var modelNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// ValidModelName reports whether name can name a model (it appears in URLs).
func ValidModelName(name string) bool { return modelNameRe.MatchString(name) }

// CreateModel is the command to register a new model.
type CreateModel struct {
	ModelID, Name, Description string
	Tags                       map[string]string
}

// DecideCreateModel reserves the name in the project and creates the model.
func DecideCreateModel(p ProjectState, res ReservationState, c CreateModel) ([]handlers.Change, error) {
	if err := NotArchived(p); err != nil {
		return nil, err
	}
	if !ValidModelName(c.Name) {
		return nil, invalid("name must be 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	if err := checkText("description", c.Description, MaxDescriptionLen, false); err != nil {
		return nil, err
	}
	if err := CheckTags(c.Tags); err != nil {
		return nil, err
	}
	if res.Taken {
		return nil, handlers.Errorf(handlers.Conflict, "model-exists", "a model named %q already exists in this project", c.Name)
	}
	tags := c.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return []handlers.Change{
		{Subject: events.ReservationSubject(events.AggModelName, ModelNameKey(p.ID, c.Name)), Type: events.NameReserved,
			Data: events.NameReservedData{Kind: "model", Name: c.Name, OwnerID: c.ModelID, Scope: p.ID}},
		{Subject: events.Subject(events.AggModel, c.ModelID), Type: events.ModelCreated,
			Data: events.ModelCreatedData{ModelID: c.ModelID, ProjectID: p.ID, Name: c.Name, Description: c.Description, Tags: tags}},
	}, nil
}

func modelMissing() error { return handlers.Errorf(handlers.NotFound, "not-found", "model not found") }

func versionMissing() error {
	return handlers.Errorf(handlers.NotFound, "not-found", "model version not found")
}

// liveModel refuses commands on a missing or deleted model.
func liveModel(s ModelState) error {
	if !s.Created || s.Deleted {
		return modelMissing()
	}
	return nil
}

// changes keeps the description and tags of a patch that differ from the
// current ones (nil = unchanged), after checking their bounds.
func changes(curDesc string, curTags map[string]string, description *string, tags map[string]string) (*string, map[string]string, error) {
	if description != nil {
		if err := checkText("description", *description, MaxDescriptionLen, false); err != nil {
			return nil, nil, err
		}
		if *description == curDesc {
			description = nil
		}
	}
	if tags != nil {
		if err := CheckTags(tags); err != nil {
			return nil, nil, err
		}
		if maps.Equal(tags, curTags) {
			tags = nil
		}
	}
	return description, tags, nil
}

// DecideUpdateModel changes description and/or tags.
func DecideUpdateModel(s ModelState, description *string, tags map[string]string) ([]handlers.Change, error) {
	if err := liveModel(s); err != nil {
		return nil, err
	}
	description, tags, err := changes(s.Description, s.Tags, description, tags)
	if err != nil || (description == nil && tags == nil) {
		return nil, err
	}
	return []handlers.Change{{Subject: modelSubject(s), Type: events.ModelUpdated,
		Data: events.ModelUpdatedData{ModelID: s.ID, Description: description, Tags: tags}}}, nil
}

// DecideDeleteModel soft-deletes (del=true) or restores a model. Deleting
// a model that has a version in staging or production, or any alias, takes
// those deployment pointers offline, so it needs mayPromote (the caller's
// VersionPromote permission), like moving them would.
func DecideDeleteModel(s ModelState, del, mayPromote bool) ([]handlers.Change, error) {
	if !s.Created {
		return nil, modelMissing()
	}
	if s.Deleted == del {
		return nil, nil
	}
	typ := events.ModelRestored
	if del {
		typ = events.ModelDeleted
	}
	// Deleting takes the model's deployment pointers offline, restoring
	// brings them back: either way only someone who may promote moves them.
	if !mayPromote && len(s.Aliases) > 0 {
		return nil, deploymentPointer("the model has aliases")
	}
	for _, v := range s.Versions {
		if !mayPromote && deployed(s, *v) {
			return nil, deploymentPointer(fmt.Sprintf("version %d of the model is in %s", v.Version, v.Stage))
		}
	}
	return []handlers.Change{{Subject: modelSubject(s), Type: typ, Data: events.ModelLifecycleData{ModelID: s.ID, ProjectID: s.ProjectID}}}, nil
}

// deployed reports whether a live version is a deployment pointer's target:
// in staging or production, or named by an alias.
func deployed(s ModelState, v VersionState) bool {
	if v.Deleted {
		return false
	}
	if v.Stage == events.StageStaging || v.Stage == events.StageProduction {
		return true
	}
	for _, av := range s.Aliases {
		if av == v.Version {
			return true
		}
	}
	return false
}

func deploymentPointer(what string) error {
	return handlers.Errorf(handlers.Forbidden, "forbidden",
		"%s: deleting it needs the approver role (demote the version and remove its aliases first, or ask an approver)", what)
}

// RegisterVersion is the command to add a version.
type RegisterVersion struct {
	Description string
	Tags        map[string]string
	Source      string
	RunID       string
	Metrics     map[string]float64
	Signature   json.RawMessage
	// RunFound is the service's finding (Service.RegisterVersion) that the
	// run the registration names (LineageRun) is a run of the model's
	// project, as the run's own events say. Without it a named run is
	// refused: the decider cannot look, and must not take a client's word.
	RunFound bool
}

// runsScheme starts MLflow's name of a run's artifact, runs:/<run_id>/<path>.
const runsScheme = "runs:/"

func noSuchRun() error { return invalid("run_id: no such run in this project") }

// LineageRun is the run a registration names: run_id, or the run of a
// source in MLflow's form runs:/<run_id>/<artifact path> (with both, they
// must agree), "" for none. It comes back canonical (lower-case,
// hyphenated), as run subjects and rows hold it; MLflow's 32-hex-digit
// form is accepted. An id that is no uuid names no run: the same refusal
// as a missing run or one of another project, so nothing tells them apart.
func LineageRun(source, runID string) (string, error) {
	var fromSource string
	if len(source) >= len(runsScheme) && strings.EqualFold(source[:len(runsScheme)], runsScheme) {
		id, path, _ := strings.Cut(source[len(runsScheme):], "/")
		if id == "" {
			return "", invalid("source: a runs:/ source is runs:/<run_id>/<artifact path>")
		}
		if path = strings.TrimSuffix(path, "/"); path != "" && !ValidArtifactPath(path) {
			return "", invalid("source: the artifact path of a runs:/ source must be a relative path without '.', '..' or empty segments")
		}
		var ok bool
		if fromSource, ok = canonicalRunID(id); !ok {
			return "", noSuchRun()
		}
	}
	if runID == "" {
		return fromSource, nil
	}
	id, ok := canonicalRunID(runID)
	if !ok {
		return "", noSuchRun()
	}
	if fromSource != "" && fromSource != id {
		return "", invalid("run_id %s is not the run of source %q", id, source)
	}
	return id, nil
}

// canonicalRunID accepts a uuid hyphenated (36 characters) or not (32).
func canonicalRunID(s string) (string, bool) {
	if len(s) != 36 && len(s) != 32 {
		return "", false
	}
	id, err := uuid.Parse(s)
	return id.String(), err == nil
}

// DecideRegisterVersion adds version len+1: numbers are gapless and unique
// because the append expects the model's current version.
func DecideRegisterVersion(s ModelState, c RegisterVersion) ([]handlers.Change, error) {
	if err := liveModel(s); err != nil {
		return nil, err
	}
	if err := checkText("description", c.Description, MaxDescriptionLen, false); err != nil {
		return nil, err
	}
	if err := CheckTags(c.Tags); err != nil {
		return nil, err
	}
	if err := checkText("source", c.Source, MaxSourceLen, false); err != nil {
		return nil, err
	}
	if err := checkText("run_id", c.RunID, MaxRunIDLen, false); err != nil {
		return nil, err
	}
	run, err := LineageRun(c.Source, c.RunID)
	if err != nil {
		return nil, err
	}
	if run != "" && !c.RunFound {
		return nil, noSuchRun()
	}
	if len(c.Metrics) > MaxMetrics {
		return nil, invalid("at most %d metrics", MaxMetrics)
	}
	for k := range c.Metrics {
		if err := checkText("metric name", k, MaxTagKeyLen, true); err != nil {
			return nil, err
		}
	}
	if len(c.Signature) > MaxSignatureLen {
		return nil, invalid("signature must be at most %d bytes", MaxSignatureLen)
	}
	// The event keeps the canonical form: JSON that Go accepts but jsonb
	// refuses (lone surrogates, 1e200000, \u0000) would otherwise be stored
	// for ever and stop the models projection at it.
	sig, err := handlers.CanonicalJSON(c.Signature)
	if err != nil {
		return nil, invalid("signature: %v", err)
	}
	if len(sig) > MaxSignatureLen {
		return nil, invalid("signature must be at most %d bytes", MaxSignatureLen)
	}
	c.Signature = sig
	// jsonb has no negative zero: keep 0 so the answer (from the event) and
	// a later read (from jsonb) print the same metric.
	if slices.ContainsFunc(slices.Collect(maps.Values(c.Metrics)), func(v float64) bool { return v == 0 && math.Signbit(v) }) {
		c.Metrics = maps.Clone(c.Metrics)
		for k, v := range c.Metrics {
			if v == 0 {
				c.Metrics[k] = 0
			}
		}
	}
	tags := c.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return []handlers.Change{{Subject: modelSubject(s), Type: events.ModelVersionRegistered,
		Data: events.ModelVersionRegisteredData{ModelID: s.ID, Version: len(s.Versions) + 1, Description: c.Description,
			Tags: tags, Source: c.Source, RunID: run, Metrics: c.Metrics, Signature: c.Signature}}}, nil
}

func liveVersion(s ModelState, v int) (VersionState, error) {
	if err := liveModel(s); err != nil {
		return VersionState{}, err
	}
	ver, ok := s.Version(v)
	if !ok || ver.Deleted {
		return VersionState{}, versionMissing()
	}
	return ver, nil
}

// DecideUpdateVersion changes a version's description and/or tags.
func DecideUpdateVersion(s ModelState, v int, description *string, tags map[string]string) ([]handlers.Change, error) {
	ver, err := liveVersion(s, v)
	if err != nil {
		return nil, err
	}
	description, tags, err = changes(ver.Description, ver.Tags, description, tags)
	if err != nil || (description == nil && tags == nil) {
		return nil, err
	}
	return []handlers.Change{{Subject: modelSubject(s), Type: events.ModelVersionUpdated,
		Data: events.ModelVersionUpdatedData{ModelID: s.ID, Version: v, Description: description, Tags: tags}}}, nil
}

// DecideDeleteVersion soft-deletes a version; aliases pointing at it go with
// it. A version in staging or production, or one an alias names, is a
// deployment pointer's target: deleting it would clear the pointer, which
// needs mayPromote (the caller's VersionPromote permission), like moving it.
func DecideDeleteVersion(s ModelState, v int, mayPromote bool) ([]handlers.Change, error) {
	ver, err := liveVersion(s, v)
	if err != nil {
		return nil, err
	}
	if !mayPromote && deployed(s, ver) {
		return nil, deploymentPointer(fmt.Sprintf("version %d is in %s or has aliases", v, ver.Stage))
	}
	var removed []string
	for a, av := range s.Aliases {
		if av == v {
			removed = append(removed, a)
		}
	}
	slices.Sort(removed)
	return []handlers.Change{{Subject: modelSubject(s), Type: events.ModelVersionDeleted,
		Data: events.ModelVersionDeletedData{ModelID: s.ID, Version: v, RemovedAliases: removed}}}, nil
}

// ValidStage reports whether st is a stage.
func ValidStage(st string) bool {
	switch st {
	case events.StageNone, events.StageStaging, events.StageProduction, events.StageArchived:
		return true
	}
	return false
}

// DecideTransition moves a version to stage to. At most one version is in
// production at any time: moving another there requires archive_existing,
// which archives the current one in the same event.
func DecideTransition(s ModelState, v int, to string, archiveExisting bool) ([]handlers.Change, error) {
	ver, err := liveVersion(s, v)
	if err != nil {
		return nil, err
	}
	if !ValidStage(to) {
		return nil, invalid("stage must be one of none, staging, production, archived")
	}
	if ver.Stage == to {
		return nil, nil
	}
	var archived []events.ArchivedVersion
	if archiveExisting && to != events.StageArchived && to != events.StageNone {
		for _, o := range s.Versions {
			if o.Version != v && !o.Deleted && o.Stage == to {
				archived = append(archived, events.ArchivedVersion{Version: o.Version, From: o.Stage})
			}
		}
	}
	if to == events.StageProduction && !archiveExisting {
		for _, o := range s.Versions {
			if o.Version != v && !o.Deleted && o.Stage == events.StageProduction {
				return nil, handlers.Errorf(handlers.Conflict, "production-occupied",
					"version %d is in production; set archive_existing to replace it", o.Version)
			}
		}
	}
	return []handlers.Change{{Subject: modelSubject(s), Type: events.ModelVersionTransition,
		Data: events.ModelVersionTransitionData{ModelID: s.ID, Version: v, From: ver.Stage, To: to, Archived: archived}}}, nil
}

var aliasRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,62}$`)

// ValidAlias reports whether a can be an alias; "latest" and v<digits>
// are reserved because clients read them as version selectors.
func ValidAlias(a string) bool {
	if !aliasRe.MatchString(a) || strings.EqualFold(a, "latest") {
		return false
	}
	if len(a) > 1 && (a[0] == 'v' || a[0] == 'V') && strings.Trim(a[1:], "0123456789") == "" {
		return false
	}
	return true
}

// DecideSetAlias points alias at version v: one event naming old and new.
func DecideSetAlias(s ModelState, alias string, v int) ([]handlers.Change, error) {
	if !ValidAlias(alias) {
		return nil, invalid("alias must be 1 to 63 letters, digits, '_' or '-', start with a letter or '_', and not be 'latest' or v<number>")
	}
	if _, err := liveVersion(s, v); err != nil {
		return nil, err
	}
	prev := s.Aliases[alias]
	if prev == v {
		return nil, nil
	}
	return []handlers.Change{{Subject: modelSubject(s), Type: events.ModelAliasSet,
		Data: events.ModelAliasSetData{ModelID: s.ID, Alias: alias, Version: v, PreviousVersion: prev}}}, nil
}

// DecideDeleteAlias removes an alias.
func DecideDeleteAlias(s ModelState, alias string) ([]handlers.Change, error) {
	if err := liveModel(s); err != nil {
		return nil, err
	}
	v, ok := s.Aliases[alias]
	if !ok {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "alias not found")
	}
	return []handlers.Change{{Subject: modelSubject(s), Type: events.ModelAliasDeleted,
		Data: events.ModelAliasDeletedData{ModelID: s.ID, Alias: alias, Version: v}}}, nil
}

// ValidArtifactPath reports whether p is a relative, clean artifact path of
// plain text: valid UTF-8 without control characters (not even tab or
// newline), so the path stored in the event is exactly the one asked for.
func ValidArtifactPath(p string) bool {
	if p == "" || len(p) > MaxPathLen || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.ContainsAny(p, "\\\x00") {
		return false
	}
	if !handlers.PlainText(p) || strings.IndexFunc(p, unicode.IsControl) >= 0 {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// ErrArtifactPath is the refusal of a path ValidArtifactPath does not accept.
func ErrArtifactPath() error {
	return invalid("artifact path must be a relative path of printable UTF-8 without '.', '..' or empty segments")
}

// RecordableArtifact is the rule every owner of artifacts (a model version,
// a run) records one by: a valid path and content type, at most limit
// distinct paths (what names the owner in the refusal, e.g. "version 3";
// replacing an existing path is always allowed), and nothing to record
// when the path already holds the same bytes (PUT is idempotent).
func RecordableArtifact(what string, held map[string]Artifact, a Artifact, limit int) (changed bool, err error) {
	if !ValidArtifactPath(a.Path) {
		return false, ErrArtifactPath()
	}
	if len(a.ContentType) > 255 || !handlers.PlainText(a.ContentType) {
		return false, invalid("artifact content type must be plain text of at most 255 bytes")
	}
	cur, exists := held[a.Path]
	if exists && cur.Digest == a.Digest && cur.Size == a.Size && cur.ContentType == a.ContentType {
		return false, nil
	}
	if !exists && len(held) >= limit {
		return false, handlers.Errorf(handlers.Conflict, "artifact-limit",
			"%s already has %d artifacts, the most it may have; replace an existing path instead", what, len(held))
	}
	return true, nil
}

// DecideRecordArtifact records a stored blob as a version's artifact. A
// version holds at most MaxArtifactsPerVersion paths; replacing an existing
// path is always allowed.
func DecideRecordArtifact(s ModelState, v int, a Artifact) ([]handlers.Change, error) {
	ver, err := liveVersion(s, v)
	if err != nil {
		return nil, err
	}
	if changed, err := RecordableArtifact(fmt.Sprintf("version %d", v), ver.Artifacts, a, MaxArtifactsPerVersion); !changed {
		return nil, err
	}
	return []handlers.Change{{Subject: modelSubject(s), Type: events.ModelArtifactRecorded,
		Data: events.ModelArtifactRecordedData{ModelID: s.ID, Version: v, Path: a.Path, Digest: a.Digest, Size: a.Size, ContentType: a.ContentType}}}, nil
}
