package bench

import (
	"encoding/json"
	"testing"
	"time"
)

// The jobs rows are computed from the GET job answers: queue → start is
// attempt 1's start (not a retry's), counted from the submission or, when
// given, from the later moment a runner first existed; the span runs from
// the earliest of those to the latest end whatever order the jobs came in.
func TestSummarizeJobs(t *testing.T) {
	var jobs []benchJob
	for _, body := range []string{
		`{"id":"a","state":"succeeded","submitted_at":"2026-01-01T00:00:01Z","ended_at":"2026-01-01T00:00:04Z",
		  "attempts":[{"number":1,"started_at":"2026-01-01T00:00:02Z"}]}`,
		`{"id":"b","state":"succeeded","submitted_at":"2026-01-01T00:00:00Z","ended_at":"2026-01-01T00:00:03Z",
		  "attempts":[{"number":2,"started_at":"2026-01-01T00:00:02.5Z"},{"number":1,"started_at":"2026-01-01T00:00:00.5Z"}]}`,
		`{"id":"c","state":"running","submitted_at":"2026-01-01T00:00:00Z","attempts":[]}`,
	} {
		var j benchJob
		if err := json.Unmarshal([]byte(body), &j); err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	if jobs[2].ended() || !jobs[0].ended() {
		t.Fatalf("ended: running %v, succeeded %v", jobs[2].ended(), jobs[0].ended())
	}
	if d := jobs[2].queueToStart(time.Time{}); d != 0 {
		t.Fatalf("queue → start of a job never started: %s, want 0", d)
	}
	if d := jobs[2].endToEnd(time.Time{}); d != 0 {
		t.Fatalf("→ end of a job not ended: %s, want 0", d)
	}

	// From each submission.
	s := summarize(jobs[:2], time.Time{})
	if got := s.queue.Quantile(0); got != 500*time.Millisecond {
		t.Fatalf("shortest queue → start %s, want 500ms (attempt 1 of b)", got)
	}
	if got := s.queue.Quantile(1); got != time.Second {
		t.Fatalf("longest queue → start %s, want 1s", got)
	}
	if got := mean(&s.total); got != 3*time.Second {
		t.Fatalf("mean submitted → ended %s, want 3s", got)
	}
	if s.span != 4*time.Second {
		t.Fatalf("span %s, want 4s (first submission to last end)", s.span)
	}

	// From a runner that existed at 0.25 s: b (submitted at 0 s) waited
	// from then, a (submitted at 1 s) from its submission.
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 250e6, time.UTC)
	s = summarize(jobs[:2], t0)
	if got := s.queue.Quantile(0); got != 250*time.Millisecond {
		t.Fatalf("shortest queue → start since t0 %s, want 250ms (b: 0.5 s − t0)", got)
	}
	if got := s.queue.Quantile(1); got != time.Second {
		t.Fatalf("longest queue → start since t0 %s, want 1s (a: submitted after t0)", got)
	}
	if got := s.total.Quantile(0); got != 2750*time.Millisecond {
		t.Fatalf("shortest → end since t0 %s, want 2.75s (b)", got)
	}
	if s.span != 3750*time.Millisecond {
		t.Fatalf("span since t0 %s, want 3.75s (t0 to last end)", s.span)
	}
}
