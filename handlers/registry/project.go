// Package registry is the write side of projects, their members and the
// model registry (models, versions, aliases, stages, artifacts): pure
// deciders and evolvers, and the service that loads state from the event
// store, authorizes against the project's event-sourced membership, decides
// and appends.
package registry

import (
	"maps"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers"
)

// Input bounds.
const (
	MaxNameLen        = 100
	MaxDescriptionLen = 5000
	MaxTags           = 50
	MaxTagKeyLen      = 250
	MaxTagValueLen    = 5000
)

// ProjectState is a project folded from its events.
type ProjectState struct {
	Created     bool
	ID          string
	Slug        string
	Name        string
	Description string
	Archived    bool
	Members     map[string]authz.ProjectRole // user id → role; replaced, never mutated
	// Policies are the approval policies in force, by target; replaced,
	// never mutated.
	Policies  map[string]events.PolicyData
	CreatedAt time.Time
	UpdatedAt time.Time
}

// RoleOf is the user's role in the project, "" for non-members.
func (s ProjectState) RoleOf(userID string) authz.ProjectRole { return s.Members[userID] }

// EvolveProject folds one event into project state.
func EvolveProject(s ProjectState, e events.Envelope) (ProjectState, error) {
	switch e.Type {
	case events.ProjectCreated:
		var d events.ProjectCreatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = ProjectState{Created: true, ID: d.ProjectID, Slug: d.Slug, Name: d.Name, Description: d.Description,
			Members: map[string]authz.ProjectRole{d.OwnerID: authz.ProjectOwner}, CreatedAt: e.Time}
	case events.ProjectUpdated:
		var d events.ProjectUpdatedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		if d.Description != nil {
			s.Description = *d.Description
		}
	case events.ProjectArchived:
		s.Archived = true
	case events.ProjectRestored:
		s.Archived = false
	case events.ProjectMemberSet:
		var d events.ProjectMemberSetData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Members = maps.Clone(s.Members)
		s.Members[d.UserID] = authz.ProjectRole(d.Role)
	case events.ProjectMemberRemoved:
		var d events.ProjectMemberRemovedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Members = maps.Clone(s.Members)
		delete(s.Members, d.UserID)
	case events.ProjectPolicySet:
		var d events.ProjectPolicySetData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Policies = maps.Clone(s.Policies)
		if s.Policies == nil {
			s.Policies = map[string]events.PolicyData{}
		}
		s.Policies[d.Policy.Target] = d.Policy
	case events.ProjectPolicyRemoved:
		var d events.ProjectPolicyRemovedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s.Policies = maps.Clone(s.Policies)
		delete(s.Policies, d.Target)
	default:
		return s, nil
	}
	s.UpdatedAt = e.Time
	return s, nil
}

// ReservationState is a unique-name reservation subject.
type ReservationState struct {
	Taken   bool
	OwnerID string
}

// EvolveReservation folds one event into reservation state.
func EvolveReservation(s ReservationState, e events.Envelope) (ReservationState, error) {
	if e.Type == events.NameReserved {
		var d events.NameReservedData
		if err := e.Decode(&d); err != nil {
			return s, err
		}
		s = ReservationState{Taken: true, OwnerID: d.OwnerID}
	}
	return s, nil
}

var slugRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Slug derives a project's unique, URL-safe key from its name: lower case,
// runs of anything but letters and digits become one hyphen.
func Slug(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimRight(b.String(), "-")
}

// ValidSlug reports whether s can be a project slug.
func ValidSlug(s string) bool { return slugRe.MatchString(s) }

func invalid(format string, args ...any) error {
	return handlers.Errorf(handlers.Invalid, "validation-failed", format, args...)
}

func checkText(field, v string, max int, required bool) error {
	if !handlers.PlainText(v) {
		return invalid("%s must be valid UTF-8 without control characters", field)
	}
	n := utf8.RuneCountInString(v)
	if required && strings.TrimSpace(v) == "" {
		return invalid("%s is required", field)
	}
	if n > max {
		return invalid("%s must be at most %d characters", field, max)
	}
	return nil
}

// CheckTags bounds a tag map.
func CheckTags(tags map[string]string) error {
	if len(tags) > MaxTags {
		return invalid("at most %d tags", MaxTags)
	}
	for k, v := range tags {
		if err := checkText("tag key", k, MaxTagKeyLen, true); err != nil {
			return err
		}
		if err := checkText("tag value", v, MaxTagValueLen, false); err != nil {
			return err
		}
	}
	return nil
}

// CreateProject is the command to create a project.
type CreateProject struct {
	ProjectID, Name, Description, OwnerID string
}

// DecideCreateProject reserves the slug and creates the project.
func DecideCreateProject(res ReservationState, c CreateProject) ([]handlers.Change, error) {
	if err := checkText("name", c.Name, MaxNameLen, true); err != nil {
		return nil, err
	}
	if err := checkText("description", c.Description, MaxDescriptionLen, false); err != nil {
		return nil, err
	}
	slug := Slug(c.Name)
	if !ValidSlug(slug) {
		return nil, invalid("name must contain letters or digits and give a slug of at most 63 characters")
	}
	if res.Taken {
		return nil, handlers.Errorf(handlers.Conflict, "project-exists", "a project named %q already exists", slug)
	}
	return []handlers.Change{
		{Subject: events.ReservationSubject(events.AggProjectSlug, slug), Type: events.NameReserved,
			Data: events.NameReservedData{Kind: "project", Name: slug, OwnerID: c.ProjectID}},
		{Subject: events.Subject(events.AggProject, c.ProjectID), Type: events.ProjectCreated,
			Data: events.ProjectCreatedData{ProjectID: c.ProjectID, Slug: slug, Name: strings.TrimSpace(c.Name),
				Description: c.Description, OwnerID: c.OwnerID}},
	}, nil
}

func projectSubject(s ProjectState) string { return events.Subject(events.AggProject, s.ID) }

// NotArchived refuses a change in an archived project (other command
// services, tracking, refuse with it too).
func NotArchived(s ProjectState) error {
	if s.Archived {
		return handlers.Errorf(handlers.Conflict, "project-archived", "the project is archived; restore it first")
	}
	return nil
}

// DecideUpdateProject changes the description.
func DecideUpdateProject(s ProjectState, description *string) ([]handlers.Change, error) {
	if err := NotArchived(s); err != nil {
		return nil, err
	}
	if description == nil || *description == s.Description {
		return nil, nil
	}
	if err := checkText("description", *description, MaxDescriptionLen, false); err != nil {
		return nil, err
	}
	return []handlers.Change{{Subject: projectSubject(s), Type: events.ProjectUpdated,
		Data: events.ProjectUpdatedData{ProjectID: s.ID, Description: description}}}, nil
}

// DecideArchive archives (archive=true) or restores a project; repeating is a no-op.
func DecideArchive(s ProjectState, archive bool) []handlers.Change {
	if s.Archived == archive {
		return nil
	}
	typ := events.ProjectRestored
	if archive {
		typ = events.ProjectArchived
	}
	return []handlers.Change{{Subject: projectSubject(s), Type: typ, Data: events.ProjectLifecycleData{ProjectID: s.ID}}}
}

func owners(m map[string]authz.ProjectRole) int {
	n := 0
	for _, r := range m {
		if r == authz.ProjectOwner {
			n++
		}
	}
	return n
}

// DecideSetMember adds a member or changes their role, keeping an owner.
func DecideSetMember(s ProjectState, userID string, role authz.ProjectRole) ([]handlers.Change, error) {
	if err := NotArchived(s); err != nil {
		return nil, err
	}
	if !authz.ValidProjectRole(string(role)) {
		return nil, invalid("role must be one of owner, editor, approver, viewer")
	}
	prev := s.Members[userID]
	if prev == role {
		return nil, nil
	}
	if prev == authz.ProjectOwner && owners(s.Members) == 1 {
		return nil, handlers.Errorf(handlers.Conflict, "last-owner", "a project must keep at least one owner")
	}
	return []handlers.Change{{Subject: projectSubject(s), Type: events.ProjectMemberSet,
		Data: events.ProjectMemberSetData{ProjectID: s.ID, UserID: userID, Role: string(role), PreviousRole: string(prev)}}}, nil
}

// DecideRemoveMember removes a member, keeping an owner.
func DecideRemoveMember(s ProjectState, userID string) ([]handlers.Change, error) {
	if err := NotArchived(s); err != nil {
		return nil, err
	}
	prev, ok := s.Members[userID]
	if !ok {
		return nil, handlers.Errorf(handlers.NotFound, "not-found", "not a member of this project")
	}
	if prev == authz.ProjectOwner && owners(s.Members) == 1 {
		return nil, handlers.Errorf(handlers.Conflict, "last-owner", "a project must keep at least one owner")
	}
	return []handlers.Change{{Subject: projectSubject(s), Type: events.ProjectMemberRemoved,
		Data: events.ProjectMemberRemovedData{ProjectID: s.ID, UserID: userID, Role: string(prev)}}}, nil
}
