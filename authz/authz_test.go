package authz

import "testing"

// The policy denies by default: every role × action pair not granted is
// refused, and an unauthenticated or unknown-role principal gets nothing.
func TestCanDeniesByDefault(t *testing.T) {
	actions := []Action{ReadSelf, Logout, ListUsers, UpdateUser, ReadAudit, ReadProjSys, Action("made:up")}
	want := map[Role]map[Action]bool{
		RoleViewer:   {ReadSelf: true, Logout: true},
		RoleMember:   {ReadSelf: true, Logout: true},
		RoleAdmin:    {ReadSelf: true, Logout: true, ListUsers: true, UpdateUser: true, ReadAudit: true, ReadProjSys: true},
		Role("root"): {},
	}
	for role, granted := range want {
		for _, a := range actions {
			p := Principal{UserID: "u1", Role: role}
			if got := Can(p, a, Resource{}); got != granted[a] {
				t.Errorf("Can(%s, %s) = %v, want %v", role, a, got, granted[a])
			}
			if Can(Principal{Role: role}, a, Resource{}) {
				t.Errorf("a principal without a user id may %s", a)
			}
		}
	}
}

// API tokens act as their owner, minus the session-only actions; a scope
// or a ceiling leaves only reading oneself among the global actions, and
// inside projects the scope makes every other project foreign and the
// ceiling caps the role (an admin's included).
func TestTokenPrincipals(t *testing.T) {
	const a, b = "project-a", "project-b"
	admin := Principal{UserID: "u1", Role: RoleAdmin, TokenID: "t1"}
	for _, act := range []Action{Logout, ManageTokens, ManageServiceAccounts, UpdateUser} {
		if Can(admin, act, Resource{}) {
			t.Errorf("an admin's token may %s", act)
		}
	}
	for _, act := range []Action{ListUsers, ReadAudit, CreateProject, ReadSelf} {
		if !Can(admin, act, Resource{}) {
			t.Errorf("an admin's unlimited token may not %s", act)
		}
	}
	scoped, capped := admin, admin
	scoped.Project, capped.Ceiling = a, ProjectEditor
	for _, p := range []Principal{scoped, capped} {
		for _, act := range []Action{ListUsers, ReadAudit, CreateProject, UpdateUser} {
			if Can(p, act, Resource{}) {
				t.Errorf("a limited admin token (%+v) may %s", p, act)
			}
		}
		if !Can(p, ReadSelf, Resource{}) || SeesAllProjects(p) {
			t.Errorf("limited token %+v: ReadSelf %v, sees all %v", p, Can(p, ReadSelf, Resource{}), SeesAllProjects(p))
		}
	}
	if !SeesAllProjects(admin) || SeesAllProjects(Principal{UserID: "u", Role: RoleMember}) {
		t.Error("SeesAllProjects is wrong for an admin or a member")
	}
	for _, tc := range []struct {
		p       Principal
		project string
		role    ProjectRole
		want    ProjectRole
	}{
		{scoped, a, "", ProjectOwner},
		{scoped, b, ProjectOwner, ""},
		{capped, b, "", ""},                         // an admin's ceiling-only token is no admin
		{capped, b, ProjectApprover, ProjectEditor}, // but keeps the admin's memberships, capped
		{Principal{UserID: "u", Role: RoleMember, TokenID: "t", Ceiling: ProjectViewer}, a, ProjectOwner, ProjectViewer},
		{Principal{UserID: "u", Role: RoleMember, TokenID: "t", Ceiling: ProjectOwner}, a, ProjectEditor, ProjectEditor},
		{Principal{UserID: "u", Role: RoleMember, TokenID: "t", Project: a, Ceiling: ProjectApprover}, a, ProjectOwner, ProjectApprover},
		{Principal{UserID: "u", Role: RoleMember, TokenID: "t", Project: a}, a, "", ""},
		{Principal{Role: RoleAdmin}, a, ProjectOwner, ""},
	} {
		if got := Effective(tc.p, tc.project, tc.role); got != tc.want {
			t.Errorf("Effective(%+v, %s, %q) = %q, want %q", tc.p, tc.project, tc.role, got, tc.want)
		}
		if Member(tc.p, tc.project, tc.role) != (tc.want != "") {
			t.Errorf("Member(%+v, %s, %q) disagrees with Effective", tc.p, tc.project, tc.role)
		}
	}
	if CanInProject(Principal{UserID: "u", Role: RoleMember, TokenID: "t", Ceiling: ProjectViewer}, a, ProjectOwner, ModelWrite) {
		t.Error("a viewer-capped token writes models")
	}
}
