package api

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/projections"
)

// MLflow's model registry service (model_registry.proto) over Maestro's
// registry: the same service, deciders, events, read models and
// authorization policy as /api/v1/projects/{project}/models, so an MLflow
// client and Maestro's own API see and change the same models. Registered
// model names are per project (MLflow's are global): the project is the
// tracking URI's, or a scoped token's on the bare /api/2.0 paths. Where
// Maestro's rules are stricter than MLflow's they hold here too, answered
// in MLflow's shape; docs/ARCHITECTURE.md ("MLflow-compatible API") lists
// the differences.

// mlflowRegistryRPCs is MLflow's model registry service over Maestro's
// registry: registered models, versions, stages, aliases and tags.
func (s *Server) mlflowRegistryRPCs() []mlflowRPC {
	const rm, mv = "/mlflow/registered-models", "/mlflow/model-versions"
	rpc := func(method, path string, command bool, h routeHandler) mlflowRPC {
		return mlflowRPC{method: method, path: path, command: command, await: registryViews, handle: h}
	}
	return []mlflowRPC{
		rpc("POST", rm+"/create", true, mlflowHandler(s, s.mlflowCreateModel)),
		rpc("GET", rm+"/get", false, mlflowHandler(s, s.mlflowGetModel)),
		rpc("POST", rm+"/rename", true, mlflowHandler(s, s.mlflowRenameModel)),
		rpc("PATCH", rm+"/update", true, mlflowHandler(s, s.mlflowUpdateModel)),
		rpc("DELETE", rm+"/delete", true, mlflowHandler(s, s.mlflowDeleteModel)),
		rpc("GET", rm+"/search", false, mlflowHandler(s, s.mlflowSearchModels)),
		// The Python client POSTs, and GETs when a server answers
		// ENDPOINT_NOT_FOUND; both are served.
		rpc("POST", rm+"/get-latest-versions", false, mlflowHandler(s, s.mlflowLatestVersions)),
		rpc("GET", rm+"/get-latest-versions", false, mlflowHandler(s, s.mlflowLatestVersions)),
		rpc("POST", rm+"/set-tag", true, mlflowHandler(s, s.mlflowTag(false, true))),
		rpc("DELETE", rm+"/delete-tag", true, mlflowHandler(s, s.mlflowTag(false, false))),
		rpc("POST", rm+"/alias", true, mlflowHandler(s, s.mlflowSetAlias)),
		rpc("DELETE", rm+"/alias", true, mlflowHandler(s, s.mlflowDeleteAlias)),
		rpc("GET", rm+"/alias", false, mlflowHandler(s, s.mlflowGetByAlias)),
		rpc("POST", mv+"/create", true, mlflowHandler(s, s.mlflowCreateVersion)),
		rpc("GET", mv+"/get", false, mlflowHandler(s, s.mlflowGetVersion)),
		rpc("PATCH", mv+"/update", true, mlflowHandler(s, s.mlflowUpdateVersion)),
		rpc("DELETE", mv+"/delete", true, mlflowHandler(s, s.mlflowDeleteVersion)),
		rpc("GET", mv+"/search", false, mlflowHandler(s, s.mlflowSearchVersions)),
		rpc("POST", mv+"/transition-stage", true, mlflowHandler(s, s.mlflowTransition)),
		rpc("GET", mv+"/get-download-uri", false, mlflowHandler(s, s.mlflowDownloadURI)),
		rpc("POST", mv+"/set-tag", true, mlflowHandler(s, s.mlflowTag(true, true))),
		rpc("DELETE", mv+"/delete-tag", true, mlflowHandler(s, s.mlflowTag(true, false))),
	}
}

// ---- shapes ----

// MLflowModelAlias is MLflow's RegisteredModelAlias.
type MLflowModelAlias struct {
	Alias   string `json:"alias"`
	Version string `json:"version"`
}

// MLflowRegisteredModel is MLflow's RegisteredModel. user_id is never
// set (MLflow's server leaves it unset too); latest_versions holds the
// highest live version of each stage.
type MLflowRegisteredModel struct {
	Name                 string               `json:"name"`
	CreationTimestamp    int64                `json:"creation_timestamp"`
	LastUpdatedTimestamp int64                `json:"last_updated_timestamp"`
	UserID               string               `json:"user_id,omitempty"`
	Description          string               `json:"description"`
	LatestVersions       []MLflowModelVersion `json:"latest_versions"`
	Tags                 []mlflowKV           `json:"tags"`
	Aliases              []MLflowModelAlias   `json:"aliases"`
}

// MLflowModelVersion is MLflow's ModelVersion: the version number as a
// string, times in ms, the stage by MLflow's name, status always READY
// (registration is synchronous). run_link is not stored (always empty).
type MLflowModelVersion struct {
	Name                 string     `json:"name"`
	Version              string     `json:"version"`
	CreationTimestamp    int64      `json:"creation_timestamp"`
	LastUpdatedTimestamp int64      `json:"last_updated_timestamp"`
	UserID               string     `json:"user_id,omitempty"`
	CurrentStage         string     `json:"current_stage"`
	Description          string     `json:"description"`
	Source               string     `json:"source"`
	RunID                string     `json:"run_id"`
	Status               string     `json:"status"`
	StatusMessage        string     `json:"status_message"`
	Tags                 []mlflowKV `json:"tags"`
	RunLink              string     `json:"run_link"`
	Aliases              []string   `json:"aliases"`
}

type mlflowModelAnswer struct {
	RegisteredModel MLflowRegisteredModel `json:"registered_model"`
}

type mlflowModelPage struct {
	RegisteredModels []MLflowRegisteredModel `json:"registered_models"`
	NextPageToken    string                  `json:"next_page_token,omitempty"`
}

type mlflowVersionAnswer struct {
	ModelVersion MLflowModelVersion `json:"model_version"`
}

type mlflowDownloadAnswer struct {
	ArtifactURI string `json:"artifact_uri"`
}

type mlflowVersionList struct {
	ModelVersions []MLflowModelVersion `json:"model_versions"`
	NextPageToken string               `json:"next_page_token,omitempty"`
}

// mlflowStages are MLflow's stage names (model_version_stages.py) of
// Maestro's stages.
var mlflowStages = map[string]string{events.StageNone: "None", events.StageStaging: "Staging",
	events.StageProduction: "Production", events.StageArchived: "Archived"}

// maestroStage is the Maestro stage of an MLflow stage name (any case).
func maestroStage(name string) (string, error) {
	for st, ml := range mlflowStages {
		if strings.EqualFold(name, ml) {
			return st, nil
		}
	}
	return "", mlflowProblem("INVALID_PARAMETER_VALUE", "Invalid Model Version stage: "+name+
		". Value must be one of None, Staging, Production, Archived.")
}

// mlflowVersion is a version response (from state or read model) in
// MLflow's shape.
func mlflowVersion(name string, v VersionResponse) MLflowModelVersion {
	return MLflowModelVersion{Name: name, Version: strconv.Itoa(v.Version), CreationTimestamp: v.CreatedAt.UnixMilli(),
		LastUpdatedTimestamp: v.UpdatedAt.UnixMilli(), CurrentStage: mlflowStages[v.Stage], Description: v.Description,
		Source: v.Source, RunID: v.RunID, Status: "READY", Tags: mlflowKVs(v.Tags), Aliases: v.Aliases}
}

// mlflowModel is a model response with its latest versions in MLflow's shape.
func mlflowModel(m ModelResponse, latest []VersionResponse) MLflowRegisteredModel {
	out := MLflowRegisteredModel{Name: m.Name, CreationTimestamp: m.CreatedAt.UnixMilli(), LastUpdatedTimestamp: m.UpdatedAt.UnixMilli(),
		Description: m.Description, LatestVersions: make([]MLflowModelVersion, 0, len(latest)), Tags: mlflowKVs(m.Tags),
		Aliases: make([]MLflowModelAlias, 0, len(m.Aliases))}
	for _, v := range latest {
		out.LatestVersions = append(out.LatestVersions, mlflowVersion(m.Name, v))
	}
	for _, a := range slices.Sorted(maps.Keys(m.Aliases)) {
		out.Aliases = append(out.Aliases, MLflowModelAlias{Alias: a, Version: strconv.Itoa(m.Aliases[a])})
	}
	return out
}

// mlflowModelFromState is a command's model (write-side state), its latest
// versions folded as the read model's LatestVersions selects them.
func mlflowModelFromState(m registry.ModelState) MLflowRegisteredModel {
	top := map[string]registry.VersionState{}
	for _, v := range m.Versions { // in version order: the last of a stage is its highest
		if !v.Deleted {
			top[v.Stage] = *v
		}
	}
	latest := make([]VersionResponse, 0, len(top))
	for _, v := range top {
		latest = append(latest, versionFromState(m, v))
	}
	slices.SortFunc(latest, func(a, b VersionResponse) int { return a.Version - b.Version })
	return mlflowModel(modelFromState(m), latest)
}

// mlflowModels is read models with their latest versions, in MLflow's shape.
func (s *Server) mlflowModels(c *call, ms []projections.Model) ([]MLflowRegisteredModel, error) {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	latest, err := s.deps.Queries.LatestVersions(c.ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]MLflowRegisteredModel, len(ms))
	for i, m := range ms {
		vs := make([]VersionResponse, len(latest[m.ID]))
		for j, v := range latest[m.ID] {
			vs[j] = versionFromProjection(v)
		}
		out[i] = mlflowModel(modelFromProjection(m), vs)
	}
	return out, nil
}

// ---- refusals ----

func modelNotFound(name string) error {
	return mlflowProblem("RESOURCE_DOES_NOT_EXIST", "Registered Model with name="+name+" not found")
}

func versionNotFound(name string, v int) error {
	return mlflowProblem("RESOURCE_DOES_NOT_EXIST", "Model Version (name="+name+", version="+strconv.Itoa(v)+") not found")
}

// mlflowRefusal words a registry refusal as MLflow does where its words
// are known (a missing model or version), and says what to send instead
// where Maestro refuses what MLflow allows (a second version in
// Production). Other refusals keep Maestro's detail; their codes map
// through mlflowCodes.
func mlflowRefusal(err error, name string, version int) error {
	err = mlflowMissing(mlflowMissing(err, "model", modelNotFound(name)), "model version", versionNotFound(name, version))
	switch he, ok := handlers.AsError(err); {
	case ok && he.Code == "production-occupied":
		// MLflow allows several versions in Production; Maestro keeps at
		// most one (its deployment pointer), so MLflow's default
		// archive_existing_versions=false is refused when one is there.
		// The detail's advice names Maestro's field; keep only its fact.
		occupied, _, _ := strings.Cut(he.Detail, ";")
		return mlflowProblem("RESOURCE_CONFLICT", "Maestro keeps at most one version of a model in Production ("+occupied+
			"): transition with archive_existing_versions=true to archive it in the same step")
	}
	return err
}

// ---- requests ----

// mlflowName is the registered model a request names.
type mlflowName struct {
	Name string `json:"name"`
}

func (r *mlflowName) validate() error { return mlflowRequired("name", r.Name) }

// mlflowVersionRef is the model version a request names; "version" is a
// string in MLflow's protos (a JSON number is accepted too).
type mlflowVersionRef struct {
	mlflowName
	Version mlID `json:"version"`
	number  int
}

func (r *mlflowVersionRef) validate() error {
	if err := r.mlflowName.validate(); err != nil {
		return err
	}
	if err := mlflowRequired("version", string(r.Version)); err != nil {
		return err
	}
	n, err := strconv.Atoi(string(r.Version))
	if err != nil {
		return mlflowProblem("INVALID_PARAMETER_VALUE", "Parameter 'version' must be an integer, got '"+string(r.Version)+"'.")
	}
	r.number = n
	return nil
}

// retag is tags with tag set (set) or its key removed; tags itself is left
// alone (it may be shared state).
func retag(tags map[string]string, tag mlflowTagIn, set bool) map[string]string {
	out := maps.Clone(tags)
	if out == nil {
		out = map[string]string{}
	}
	if set {
		out[tag.Key] = tag.Value
	} else {
		delete(out, tag.Key)
	}
	return out
}

// ---- commands ----

// mlflowCommand runs a registry command in the request's project (run gets
// the project's reference), answers its refusal in MLflow's words, and
// settles its sequence.
func (s *Server) mlflowCommand(c *call, name string, version int,
	run func(project string) (registry.ModelState, uint64, error)) (registry.ModelState, error) {
	ref, err := mlflowProject(c)
	if err != nil {
		return registry.ModelState{}, err
	}
	m, seq, err := run(ref)
	if err != nil {
		return m, mlflowRefusal(err, name, version)
	}
	s.settle(c, "Maestro-Sequence", seq)
	return m, nil
}

// mlflowModelCommand decides on the named model with the caller allowed
// action (modelCommandAt: the service authorizes, refuses archived
// projects, resolves the name).
func (s *Server) mlflowModelCommand(c *call, name string, version int, action authz.Action,
	decide func(registry.ModelState) ([]handlers.Change, error)) (registry.ModelState, error) {
	return s.mlflowCommand(c, name, version, func(ref string) (registry.ModelState, uint64, error) {
		return s.modelCommandAt(c, ref, name, action, decide)
	})
}

// mlflowVersionCommand is mlflowModelCommand answered with the version.
func (s *Server) mlflowVersionCommand(c *call, ref mlflowVersionRef, action authz.Action,
	decide func(registry.ModelState) ([]handlers.Change, error)) (mlflowVersionAnswer, error) {
	m, err := s.mlflowModelCommand(c, ref.Name, ref.number, action, decide)
	if err != nil {
		return mlflowVersionAnswer{}, err
	}
	v, _ := m.Version(ref.number) // decided on, so it exists
	return mlflowVersionAnswer{ModelVersion: mlflowVersion(m.Name, versionFromState(m, v))}, nil
}

type mlflowCreateModelRequest struct {
	mlflowName
	Tags        []mlflowTagIn `json:"tags"`
	Description string        `json:"description"`
	tags        map[string]string
}

func (r *mlflowCreateModelRequest) validate() (err error) {
	r.tags, err = mlflowTagMap("tags", r.Tags)
	return cmp.Or(r.mlflowName.validate(), err)
}

func (s *Server) mlflowCreateModel(c *call, req mlflowCreateModelRequest) (mlflowModelAnswer, error) {
	m, err := s.mlflowCommand(c, req.Name, 0, func(ref string) (registry.ModelState, uint64, error) {
		return s.deps.Registry.CreateModel(c.ctx, c.meta, c.who, ref,
			registry.CreateModel{Name: req.Name, Description: req.Description, Tags: req.tags})
	})
	return mlflowModelAnswer{RegisteredModel: mlflowModelFromState(m)}, err
}

type mlflowRenameRequest struct {
	mlflowName
	NewName string `json:"new_name"`
}

func (r *mlflowRenameRequest) validate() error {
	return cmp.Or(r.mlflowName.validate(), mlflowRequired("new_name", r.NewName))
}

// mlflowRenameModel renames a model. Unlike MLflow, the old name stays the
// model's (registry.DecideRenameModel): no other model can take it.
func (s *Server) mlflowRenameModel(c *call, req mlflowRenameRequest) (mlflowModelAnswer, error) {
	m, err := s.mlflowCommand(c, req.Name, 0, func(ref string) (registry.ModelState, uint64, error) {
		return s.deps.Registry.RenameModel(c.ctx, c.meta, c.who, ref, req.Name, req.NewName)
	})
	return mlflowModelAnswer{RegisteredModel: mlflowModelFromState(m)}, err
}

type mlflowDescriptionRequest struct {
	mlflowName
	Description string `json:"description"`
}

// mlflowUpdateModel sets the description; an absent one is "", as MLflow's
// server reads it.
func (s *Server) mlflowUpdateModel(c *call, req mlflowDescriptionRequest) (mlflowModelAnswer, error) {
	m, err := s.mlflowModelCommand(c, req.Name, 0, authz.ModelWrite, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideUpdateModel(m, &req.Description, nil)
	})
	return mlflowModelAnswer{RegisteredModel: mlflowModelFromState(m)}, err
}

// mlflowDeleteModel deletes a model as Maestro does: softly (restorable
// through Maestro's API, its name kept), and only by an approver when it
// has a version in Staging or Production or an alias. For MLflow clients
// it is gone: reads and writes answer RESOURCE_DOES_NOT_EXIST.
func (s *Server) mlflowDeleteModel(c *call, req mlflowName) (struct{}, error) {
	var was bool
	_, err := s.mlflowCommand(c, req.Name, 0, func(ref string) (registry.ModelState, uint64, error) {
		m, seq, err := s.deps.Registry.DeleteModel(c.ctx, c.meta, c.who, ref, req.Name, true)
		was = err == nil && seq == 0 && m.Deleted // nothing to do: deleted before
		return m, seq, err
	})
	if was {
		return struct{}{}, modelNotFound(req.Name)
	}
	return struct{}{}, err
}

// mlflowTagRequest sets or deletes a tag of a registered model or of a
// model version (whose RPCs also need the version).
type mlflowTagRequest struct {
	mlflowVersionRef
	mlflowTagIn
}

func (r *mlflowTagRequest) validate() error {
	return cmp.Or(r.mlflowName.validate(), mlflowRequired("key", r.Key))
}

// mlflowTag sets (set) or deletes a tag of a registered model or, with
// version, of a model version; deleting a missing tag is no error (MLflow's
// registry does the same).
func (s *Server) mlflowTag(version, set bool) func(*call, mlflowTagRequest) (struct{}, error) {
	return func(c *call, req mlflowTagRequest) (struct{}, error) {
		if version {
			if err := req.mlflowVersionRef.validate(); err != nil {
				return struct{}{}, err
			}
		}
		_, err := s.mlflowModelCommand(c, req.Name, req.number, authz.ModelWrite, func(m registry.ModelState) ([]handlers.Change, error) {
			if !version {
				return registry.DecideUpdateModel(m, nil, retag(m.Tags, req.mlflowTagIn, set))
			}
			cur, _ := m.Version(req.number)
			return registry.DecideUpdateVersion(m, req.number, nil, retag(cur.Tags, req.mlflowTagIn, set))
		})
		return struct{}{}, err
	}
}

// mlflowAliasRequest names an alias of a registered model (and, to set
// it, the version: checked after the alias, MLflow's order).
type mlflowAliasRequest struct {
	mlflowVersionRef
	Alias string `json:"alias"`
}

func (r *mlflowAliasRequest) validate() error {
	return cmp.Or(r.mlflowName.validate(), mlflowRequired("alias", r.Alias))
}

// mlflowSetAlias points an alias at a version (approvers: aliases are
// deployment pointers, as in Maestro's API).
func (s *Server) mlflowSetAlias(c *call, req mlflowAliasRequest) (struct{}, error) {
	if err := req.mlflowVersionRef.validate(); err != nil {
		return struct{}{}, err
	}
	_, err := s.mlflowModelCommand(c, req.Name, req.number, authz.VersionPromote, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideSetAlias(m, req.Alias, req.number)
	})
	return struct{}{}, err
}

// mlflowDeleteAlias removes an alias (approvers); a missing one is no
// error, as in MLflow.
func (s *Server) mlflowDeleteAlias(c *call, req mlflowAliasRequest) (struct{}, error) {
	_, err := s.mlflowModelCommand(c, req.Name, 0, authz.VersionPromote, func(m registry.ModelState) ([]handlers.Change, error) {
		if _, set := m.Aliases[req.Alias]; !set && m.Created && !m.Deleted {
			return nil, nil
		}
		return registry.DecideDeleteAlias(m, req.Alias)
	})
	return struct{}{}, err
}

type mlflowCreateVersionRequest struct {
	mlflowName
	Source      string        `json:"source"`
	RunID       string        `json:"run_id"`
	Tags        []mlflowTagIn `json:"tags"`
	RunLink     string        `json:"run_link"`
	Description string        `json:"description"`
	tags        map[string]string
}

func (r *mlflowCreateVersionRequest) validate() (err error) {
	r.tags, err = mlflowTagMap("tags", r.Tags)
	return cmp.Or(r.mlflowName.validate(), mlflowRequired("source", r.Source), err)
}

// mlflowCreateVersion registers the model's next version (Maestro numbers
// it, as MLflow does: max+1). The run it names (run_id, or a runs:/
// source) must be a run of the project. run_link is not stored.
func (s *Server) mlflowCreateVersion(c *call, req mlflowCreateVersionRequest) (mlflowVersionAnswer, error) {
	var registered int
	m, err := s.mlflowCommand(c, req.Name, 0, func(ref string) (registry.ModelState, uint64, error) {
		m, n, seq, err := s.deps.Registry.RegisterVersion(c.ctx, c.meta, c.who, ref, req.Name,
			registry.RegisterVersion{Description: req.Description, Tags: req.tags, Source: req.Source, RunID: req.RunID})
		registered = n
		return m, seq, err
	})
	if err != nil {
		return mlflowVersionAnswer{}, err
	}
	v, _ := m.Version(registered)
	return mlflowVersionAnswer{ModelVersion: mlflowVersion(m.Name, versionFromState(m, v))}, nil
}

type mlflowVersionDescriptionRequest struct {
	mlflowVersionRef
	Description string `json:"description"`
}

func (s *Server) mlflowUpdateVersion(c *call, req mlflowVersionDescriptionRequest) (mlflowVersionAnswer, error) {
	return s.mlflowVersionCommand(c, req.mlflowVersionRef, authz.ModelWrite, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideUpdateVersion(m, req.number, &req.Description, nil)
	})
}

// mlflowDeleteVersion deletes a version (softly, as Maestro does: its
// number is never reused, as in MLflow); one in Staging or Production or
// named by an alias needs an approver.
func (s *Server) mlflowDeleteVersion(c *call, req mlflowVersionRef) (struct{}, error) {
	_, err := s.mlflowCommand(c, req.Name, req.number, func(ref string) (registry.ModelState, uint64, error) {
		return s.deps.Registry.DeleteVersion(c.ctx, c.meta, c.who, ref, req.Name, req.number)
	})
	return struct{}{}, err
}

type mlflowTransitionRequest struct {
	mlflowVersionRef
	Stage                   string `json:"stage"`
	ArchiveExistingVersions mlBool `json:"archive_existing_versions"`
	stage                   string
}

func (r *mlflowTransitionRequest) validate() (err error) {
	if err = r.mlflowVersionRef.validate(); err != nil {
		return err
	}
	if err = mlflowRequired("stage", r.Stage); err != nil {
		return err
	}
	if r.stage, err = maestroStage(r.Stage); err != nil {
		return err
	}
	if r.ArchiveExistingVersions && r.stage != events.StageStaging && r.stage != events.StageProduction {
		return mlflowProblem("INVALID_PARAMETER_VALUE", "Model version transition cannot archive existing model versions because '"+
			mlflowStages[r.stage]+"' is not an Active stage. Valid stages are Staging, Production")
	}
	return nil
}

// mlflowTransition moves a version to a stage (approvers), MLflow's
// archive_existing_versions being Maestro's archive_existing.
func (s *Server) mlflowTransition(c *call, req mlflowTransitionRequest) (mlflowVersionAnswer, error) {
	return s.mlflowVersionCommand(c, req.mlflowVersionRef, authz.VersionPromote, func(m registry.ModelState) ([]handlers.Change, error) {
		return registry.DecideTransition(m, req.number, req.stage, bool(req.ArchiveExistingVersions))
	})
}

// ---- queries ----

// mlflowReadModel reads a registered model of the request's project from
// the read model, as the caller may see it (mlflowLiveModel).
func (s *Server) mlflowReadModel(c *call, name string) (projections.Model, error) {
	proj, err := s.mlflowReadable(c)
	if err != nil {
		return projections.Model{}, err
	}
	return s.mlflowLiveModel(c, proj, name)
}

// mlflowLiveModel reads the registered model name of a project read
// before; a deleted one is missing, as in MLflow.
func (s *Server) mlflowLiveModel(c *call, proj projections.Project, name string) (projections.Model, error) {
	if !registry.ValidModelName(name) {
		return projections.Model{}, modelNotFound(name)
	}
	m, err := s.deps.Queries.Model(c.ctx, proj.ID, name)
	if errors.Is(err, projections.ErrNotFound) || (err == nil && m.Deleted) {
		return m, modelNotFound(name)
	}
	return m, err
}

// mlflowReadVersion reads a live version of a live model.
func (s *Server) mlflowReadVersion(c *call, name string, v int) (projections.Model, VersionResponse, error) {
	m, err := s.mlflowReadModel(c, name)
	if err != nil {
		return m, VersionResponse{}, err
	}
	ver, err := s.mlflowVersionOf(c, m, v)
	return m, ver, err
}

// mlflowVersionOf reads live version v of a model read before.
func (s *Server) mlflowVersionOf(c *call, m projections.Model, v int) (VersionResponse, error) {
	if v < 1 || v > maxVersion {
		return VersionResponse{}, versionNotFound(m.Name, v)
	}
	ver, err := s.deps.Queries.Version(c.ctx, m.ID, v)
	if errors.Is(err, projections.ErrNotFound) || (err == nil && ver.Deleted) {
		return VersionResponse{}, versionNotFound(m.Name, v)
	}
	return versionFromProjection(ver), err
}

func (s *Server) mlflowGetModel(c *call, req mlflowName) (mlflowModelAnswer, error) {
	m, err := s.mlflowReadModel(c, req.Name)
	if err != nil {
		return mlflowModelAnswer{}, err
	}
	out, err := s.mlflowModels(c, []projections.Model{m})
	if err != nil {
		return mlflowModelAnswer{}, err
	}
	return mlflowModelAnswer{RegisteredModel: out[0]}, nil
}

type mlflowLatestVersionsRequest struct {
	mlflowName
	Stages []string `json:"stages"`
}

// mlflowLatestVersions is the highest live version of each stage asked
// for (all four when none is), in version order.
func (s *Server) mlflowLatestVersions(c *call, req mlflowLatestVersionsRequest) (mlflowVersionList, error) {
	stages := map[string]bool{}
	for _, name := range req.Stages {
		st, err := maestroStage(name)
		if err != nil {
			return mlflowVersionList{}, err
		}
		stages[st] = true
	}
	m, err := s.mlflowReadModel(c, req.Name)
	if err != nil {
		return mlflowVersionList{}, err
	}
	latest, err := s.deps.Queries.LatestVersions(c.ctx, []string{m.ID})
	if err != nil {
		return mlflowVersionList{}, err
	}
	out := mlflowVersionList{ModelVersions: []MLflowModelVersion{}}
	for _, v := range latest[m.ID] {
		if len(stages) == 0 || stages[v.Stage] {
			out.ModelVersions = append(out.ModelVersions, mlflowVersion(m.Name, versionFromProjection(v)))
		}
	}
	return out, nil
}

// mlflowGetByAlias answers the version an alias names; an unknown alias is
// INVALID_PARAMETER_VALUE, as MLflow answers it.
func (s *Server) mlflowGetByAlias(c *call, req mlflowAliasRequest) (mlflowVersionAnswer, error) {
	m, err := s.mlflowReadModel(c, req.Name)
	if err != nil {
		return mlflowVersionAnswer{}, err
	}
	v, err := 0, projections.ErrNotFound
	if registry.ValidAlias(req.Alias) {
		v, err = s.deps.Queries.AliasVersion(c.ctx, m.ID, req.Alias)
	}
	if errors.Is(err, projections.ErrNotFound) {
		return mlflowVersionAnswer{}, mlflowProblem("INVALID_PARAMETER_VALUE", "Registered model alias "+req.Alias+" not found.")
	}
	if err != nil {
		return mlflowVersionAnswer{}, err
	}
	ver, err := s.mlflowVersionOf(c, m, v)
	return mlflowVersionAnswer{ModelVersion: mlflowVersion(m.Name, ver)}, err
}

func (s *Server) mlflowGetVersion(c *call, req mlflowVersionRef) (mlflowVersionAnswer, error) {
	m, v, err := s.mlflowReadVersion(c, req.Name, req.number)
	return mlflowVersionAnswer{ModelVersion: mlflowVersion(m.Name, v)}, err
}

// mlflowDownloadURI is where an MLflow client fetches a version's files:
// its source when it has one, as MLflow's server answers (runs:/<run>/<path>
// resolves through runs/get to the run's artifacts; mlflow-artifacts:/,
// s3://, ... name the store). A version registered without a source
// (through Maestro's API, its files uploaded to the version) answers
// mlflow-artifacts:/models/<name>/versions/<v>/artifacts: relative to the
// tracking URI's project, like a run's mlflow-artifacts:/<experiment>/<run>/artifacts
// ("models" is never an experiment id), for the artifact proxy to serve
// from the version's artifacts.
func (s *Server) mlflowDownloadURI(c *call, req mlflowVersionRef) (mlflowDownloadAnswer, error) {
	var out mlflowDownloadAnswer
	m, v, err := s.mlflowReadVersion(c, req.Name, req.number)
	if err != nil {
		return out, err
	}
	out.ArtifactURI = v.Source
	if out.ArtifactURI == "" {
		out.ArtifactURI = "mlflow-artifacts:/models/" + m.Name + "/versions/" + strconv.Itoa(v.Version) + "/artifacts"
	}
	return out, nil
}

// mlflowSearchRequest is a registry search: filter, order_by, paging.
type mlflowSearchRequest struct {
	Filter     string   `json:"filter"`
	MaxResults *mlInt64 `json:"max_results"`
	OrderBy    []string `json:"order_by"`
	PageToken  string   `json:"page_token"`
}

// mlflowRegistrySearch runs a registry search (find) in the request's
// project: max_results (def when absent) is refused above limit (MLflow's),
// and a page holds at most projections.MaxSearchResults (a larger request
// gets a next_page_token).
func mlflowRegistrySearch[T any](s *Server, c *call, req mlflowSearchRequest, def, limit int64,
	find func(ctx context.Context, projectID string, s projections.RegistrySearch) (projections.Page[T], error)) (projections.Page[T], error) {
	n := def
	if req.MaxResults != nil {
		n = int64(*req.MaxResults)
	}
	if n < 1 || n > limit {
		return projections.Page[T]{}, mlflowProblem("INVALID_PARAMETER_VALUE", "Invalid value for request parameter max_results. "+
			"It must be at most "+strconv.FormatInt(limit, 10)+" and at least 1, but got value "+strconv.FormatInt(n, 10))
	}
	proj, err := s.mlflowReadable(c)
	if err != nil {
		return projections.Page[T]{}, err
	}
	page, err := find(c.ctx, proj.ID, projections.RegistrySearch{Filter: req.Filter, OrderBy: req.OrderBy, PageToken: req.PageToken,
		MaxResults: int(min(n, projections.MaxSearchResults))})
	return page, mlflowSearchError(err)
}

// mlflowSearchModels is search_registered_models: filter on name and tags,
// order by name and timestamps; max_results 100 by default, at most 1,000.
func (s *Server) mlflowSearchModels(c *call, req mlflowSearchRequest) (mlflowModelPage, error) {
	page, err := mlflowRegistrySearch(s, c, req, 100, 1000, s.deps.Queries.SearchModels)
	if err != nil {
		return mlflowModelPage{}, err
	}
	ms, err := s.mlflowModels(c, page.Items)
	return mlflowModelPage{RegisteredModels: ms, NextPageToken: page.NextPageToken}, err
}

// mlflowSearchVersions is search_model_versions: filter on name, run_id
// (also IN), source_path, version_number and tags; MLflow's limit is
// 200,000 (its Python client asks for 10,000), a page holds 1,000.
func (s *Server) mlflowSearchVersions(c *call, req mlflowSearchRequest) (mlflowVersionList, error) {
	page, err := mlflowRegistrySearch(s, c, req, 200000, 200000, s.deps.Queries.SearchVersions)
	out := mlflowVersionList{ModelVersions: make([]MLflowModelVersion, 0, len(page.Items)), NextPageToken: page.NextPageToken}
	for _, f := range page.Items {
		out.ModelVersions = append(out.ModelVersions, mlflowVersion(f.Name, versionFromProjection(f.ModelVersion)))
	}
	return out, err
}
