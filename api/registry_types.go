package api

import (
	"bytes"
	"encoding/json"
	"slices"
	"time"

	"github.com/maestro-ml/maestro/handlers"
	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/projections"
)

// The registry's response types are built either from write-side state (a
// command's answer) or from the projections (a query's answer). Both
// conversions normalise the same way, so a command's response and a later
// GET of the same thing are the same JSON: times in UTC at the microsecond
// precision Postgres keeps, absent maps as {}, alias lists sorted bytewise,
// signatures with sorted keys.

// ProjectResponse is a project as the API returns it.
type ProjectResponse struct {
	ID          string `json:"id"`
	Slug        string `json:"slug"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Archived    bool   `json:"archived"`
	// Role is the caller's role in the project; absent for an admin who is
	// not a member.
	Role      string    `json:"role,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func projectFromState(s registry.ProjectState, userID string) ProjectResponse {
	return ProjectResponse{ID: s.ID, Slug: s.Slug, Name: s.Name, Description: s.Description, Archived: s.Archived,
		Role: string(s.RoleOf(userID)), CreatedAt: apiTime(s.CreatedAt), UpdatedAt: apiTime(s.UpdatedAt)}
}

func projectFromProjection(p projections.Project) ProjectResponse {
	return ProjectResponse{ID: p.ID, Slug: p.Slug, Name: p.Name, Description: p.Description, Archived: p.Archived,
		Role: p.Role, CreatedAt: apiTime(p.CreatedAt), UpdatedAt: apiTime(p.UpdatedAt)}
}

// ProjectPage is a page of projects.
type ProjectPage struct {
	Items         []ProjectResponse `json:"items"`
	NextPageToken string            `json:"next_page_token,omitempty"`
}

// MemberResponse is a project member. A list carries every field; the
// answer to PUT .../members/{user_id} carries what the write side knows
// (user_id, role) plus e-mail and name when the users read model has them.
type MemberResponse struct {
	UserID  string    `json:"user_id"`
	Email   string    `json:"email,omitempty"`
	Name    string    `json:"name,omitempty"`
	Role    string    `json:"role"`
	AddedAt time.Time `json:"added_at,omitzero"`
}

func memberFromProjection(m projections.Member) MemberResponse {
	return MemberResponse{UserID: m.UserID, Email: m.Email, Name: m.Name, Role: m.Role, AddedAt: apiTime(m.AddedAt)}
}

// MemberList is a project's members, ordered by e-mail.
type MemberList struct {
	Items []MemberResponse `json:"items"`
}

// ModelResponse is a registered model. AsOf and Versions are set only for a
// point-in-time read (GET ...?as_of=).
type ModelResponse struct {
	ID            string            `json:"id"`
	ProjectID     string            `json:"project_id"`
	Name          string            `json:"name"`
	Description   string            `json:"description"`
	Tags          map[string]string `json:"tags"`
	Deleted       bool              `json:"deleted"`
	LatestVersion int               `json:"latest_version"`
	Aliases       map[string]int    `json:"aliases"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
	AsOf          *time.Time        `json:"as_of,omitempty"`
	Versions      []VersionResponse `json:"versions,omitzero"`
}

func modelFromState(m registry.ModelState) ModelResponse {
	return ModelResponse{ID: m.ID, ProjectID: m.ProjectID, Name: m.Name, Description: m.Description, Tags: stringMap(m.Tags),
		Deleted: m.Deleted, LatestVersion: len(m.Versions), Aliases: aliasMap(m.Aliases),
		CreatedAt: apiTime(m.CreatedAt), UpdatedAt: apiTime(m.UpdatedAt)}
}

func modelFromProjection(m projections.Model) ModelResponse {
	return ModelResponse{ID: m.ID, ProjectID: m.ProjectID, Name: m.Name, Description: m.Description, Tags: stringMap(m.Tags),
		Deleted: m.Deleted, LatestVersion: m.LatestVersion, Aliases: aliasMap(m.Aliases),
		CreatedAt: apiTime(m.CreatedAt), UpdatedAt: apiTime(m.UpdatedAt)}
}

// ModelPage is a page of models.
type ModelPage struct {
	Items         []ModelResponse `json:"items"`
	NextPageToken string          `json:"next_page_token,omitempty"`
}

// VersionResponse is one model version.
type VersionResponse struct {
	ModelID     string             `json:"model_id"`
	Version     int                `json:"version"`
	Description string             `json:"description"`
	Tags        map[string]string  `json:"tags"`
	Source      string             `json:"source"`
	RunID       string             `json:"run_id"`
	Metrics     map[string]float64 `json:"metrics"`
	Signature   json.RawMessage    `json:"signature,omitempty"`
	Stage       string             `json:"stage"`
	Deleted     bool               `json:"deleted"`
	Aliases     []string           `json:"aliases"`
	CreatedAt   time.Time          `json:"created_at"`
	UpdatedAt   time.Time          `json:"updated_at"`
}

func versionFromState(m registry.ModelState, v registry.VersionState) VersionResponse {
	var aliases []string
	for a, av := range m.Aliases {
		if av == v.Version {
			aliases = append(aliases, a)
		}
	}
	return VersionResponse{ModelID: m.ID, Version: v.Version, Description: v.Description, Tags: stringMap(v.Tags),
		Source: v.Source, RunID: v.RunID, Metrics: metricMap(v.Metrics), Signature: canonicalJSON(v.Signature),
		Stage: v.Stage, Deleted: v.Deleted, Aliases: sortedAliases(aliases),
		CreatedAt: apiTime(v.CreatedAt), UpdatedAt: apiTime(v.UpdatedAt)}
}

func versionFromProjection(v projections.ModelVersion) VersionResponse {
	return VersionResponse{ModelID: v.ModelID, Version: v.Version, Description: v.Description, Tags: stringMap(v.Tags),
		Source: v.Source, RunID: v.RunID, Metrics: metricMap(v.Metrics), Signature: canonicalJSON(v.Signature),
		Stage: v.Stage, Deleted: v.Deleted, Aliases: sortedAliases(v.Aliases),
		CreatedAt: apiTime(v.CreatedAt), UpdatedAt: apiTime(v.UpdatedAt)}
}

// VersionPage is a page of model versions.
type VersionPage struct {
	Items         []VersionResponse `json:"items"`
	NextPageToken string            `json:"next_page_token,omitempty"`
}

// apiTime is t as every registry response shows it: UTC, truncated to the
// microsecond (what Postgres stores; pgx truncates, it does not round).
func apiTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func stringMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func metricMap(m map[string]float64) map[string]float64 {
	if m == nil {
		return map[string]float64{}
	}
	return m
}

func aliasMap(m map[string]int) map[string]int {
	if m == nil {
		return map[string]int{}
	}
	return m
}

// sortedAliases sorts bytewise (the projection's ORDER BY follows the
// database collation, which need not).
func sortedAliases(a []string) []string {
	out := slices.Clone(a)
	if out == nil {
		out = []string{}
	}
	slices.Sort(out)
	return out
}

// canonicalJSON prints a stored JSON document in handlers.CanonicalJSON's
// form (sorted keys, numbers as shortest doubles). The event keeps that form
// since the door canonicalises it; jsonb reorders keys and prints numbers as
// decimals (1e+21 as 1000000000000000000000), and re-canonicalising both is
// what makes a command's response and a later GET print the same. null or
// nothing is nil (omitted); a document from before the door canonicalised
// that no longer passes is printed as stored.
func canonicalJSON(raw json.RawMessage) json.RawMessage {
	out, err := handlers.CanonicalJSON(raw)
	if err != nil {
		return bytes.TrimSpace(raw)
	}
	return out
}
