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
