package api

import (
	"errors"
	"testing"
)

// The process-wide bound on log follows: beyond it anyone is refused,
// though under their own bound, until a follow ends; a release is
// idempotent. (The per-user bound is tested through HTTP in jobs_test.go.)
func TestStreamSetBounds(t *testing.T) {
	s := &streamSet{perUser: 2, total: 3}
	var releases []func()
	for _, u := range []string{"a", "a", "b"} {
		release, err := s.open(u)
		if err != nil {
			t.Fatalf("follow %d of %s: %v", len(releases)+1, u, err)
		}
		releases = append(releases, release)
	}
	if _, err := s.open("a"); !isTooManyStreams(err) {
		t.Fatalf("a third follow of a: %v", err)
	}
	if _, err := s.open("c"); !isTooManyStreams(err) {
		t.Fatalf("a follow beyond the process's bound: %v", err)
	}
	releases[0]()
	releases[0]() // again: nothing more is freed
	release, err := s.open("c")
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if _, err := s.open("d"); !isTooManyStreams(err) {
		t.Fatalf("a double release freed two slots: %v", err)
	}
	release()
	if s.count != 2 || s.byUser["c"] != 0 {
		t.Fatalf("count %d, by user %v", s.count, s.byUser)
	}
	for u := range s.byUser {
		if s.byUser[u] <= 0 {
			t.Fatalf("user %s kept at %d", u, s.byUser[u])
		}
	}
	// The defaults when no bound is set.
	d := &streamSet{}
	for i := range maxFollowsPerUser {
		if _, err := d.open("u"); err != nil {
			t.Fatalf("follow %d: %v", i+1, err)
		}
	}
	if _, err := d.open("u"); !isTooManyStreams(err) {
		t.Fatalf("follow %d: %v", maxFollowsPerUser+1, err)
	}
}

func isTooManyStreams(err error) bool {
	var pe *problemError
	return errors.As(err, &pe) && pe.code == "too-many-streams"
}
