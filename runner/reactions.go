package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/handlers/flows"
	"github.com/maestro-ml/maestro/handlers/identity"
	"github.com/maestro-ml/maestro/handlers/jobs"
	"github.com/maestro-ml/maestro/handlers/tracking"
)

// Reactions are the process managers of jobs that run in the worker role
// (the runner's own, dispatch, runs where jobs run):
//
//   - job-runs: the job's run follows the job (SCHEDULED, RUNNING, then
//     FINISHED, FAILED or KILLED with its end time), an attempt's API token
//     is revoked as soon as the attempt ends, and the job metrics observe
//     waits, run times and outcomes;
//   - job-leases: every started attempt is watched until it ends; when its
//     runner stopped renewing the lease, the attempt is recorded as lost
//     (and the job retried or failed by DecideEndAttempt). The watch is a
//     timer made of the event itself: it stays unacknowledged and is
//     redelivered every check interval, so it survives restarts.
type Reactions struct {
	Jobs     *jobs.Service
	Tracking *tracking.Service
	Identity *identity.Service
	Leases   jetstream.KeyValue
	Metrics  *Metrics
	// Lease is the lease of an attempt whose runner never heartbeat
	// (default 15s); a heartbeat carries the runner's own.
	Lease time.Duration
	Now   func() time.Time
}

// Register adds the reactions to router.
func (x *Reactions) Register(router *flows.Router) error {
	if x.Lease <= 0 {
		x.Lease = 15 * time.Second
	}
	if x.Now == nil {
		x.Now = time.Now
	}
	subjects := []string{events.Subject(events.AggJob, ">")}
	if err := router.Handle(flows.Consumer{Name: "job-runs", Subjects: subjects}, x.followRun); err != nil {
		return err
	}
	return router.Handle(flows.Consumer{Name: "job-leases", Subjects: subjects,
		// Every running attempt's start event waits here, unacknowledged.
		MaxDeliver: -1, MaxAckPending: 100000, NakDelay: x.Lease / 3}, x.watchLease)
}

// followRun keeps the job's run in step with the job. The status is the
// job's as it is now, not the event's: a redelivered or late event (a
// second worker, a crash before the ack) never takes the run back.
func (x *Reactions) followRun(ctx context.Context, e events.Envelope) error {
	meta := flows.Meta("job-runs", e)
	switch e.Type {
	case events.JobAttemptStarted, events.JobRequeued, events.JobAttemptEnded, events.JobEnded:
	default:
		return nil
	}
	_, jobID := events.AggregateOf(e.Subject)
	j, err := x.Jobs.Load(ctx, jobID)
	if err != nil {
		return err
	}
	if !j.Created {
		return flows.Permanent(fmt.Errorf("job-runs: %s of job %s, which has no submission", e.Type, jobID))
	}
	// Metrics are observed once the reaction's effects are recorded, so a
	// delivery retried through an outage does not count again.
	var observe func()
	switch e.Type {
	case events.JobAttemptStarted:
		var d events.JobAttemptStartedData
		if err := e.Decode(&d); err != nil {
			return flows.Permanent(err)
		}
		if a := attemptOf(j, d.Attempt); a != nil && e.Sequence > 0 {
			observe = func() { x.Metrics.waited(a.StartedAt.Sub(queuedBefore(j, a))) }
		}
	case events.JobAttemptEnded:
		var d events.JobAttemptEndedData
		if err := e.Decode(&d); err != nil {
			return flows.Permanent(err)
		}
		if a := attemptOf(j, d.Attempt); a != nil {
			if err := x.Identity.RevokeJobToken(ctx, meta, a.TokenID); err != nil {
				return err
			}
			observe = func() { x.Metrics.attemptEnded(d.Outcome, a.EndedAt.Sub(a.StartedAt)) }
		}
	case events.JobEnded:
		var d events.JobEndedData
		if err := e.Decode(&d); err != nil {
			return flows.Permanent(err)
		}
		observe = func() { x.Metrics.jobEnded(d.State) }
	}
	var end *int64
	if j.Ended() {
		ms := j.EndedAt.UnixMilli()
		end = &ms
	}
	if err := x.Tracking.FollowJob(ctx, meta, j.Spec.RunID, jobs.RunStatus(j.State), end); err != nil {
		return err
	}
	if observe != nil {
		observe()
	}
	return nil
}

func attemptOf(j jobs.State, n int) *jobs.Attempt {
	for i := range j.Attempts {
		if j.Attempts[i].Number == n {
			return &j.Attempts[i]
		}
	}
	return nil
}

// queuedBefore is when the job was queued for attempt a: submitted for
// the first, the previous attempt's end for a retry.
func queuedBefore(j jobs.State, a *jobs.Attempt) time.Time {
	if a.Number > 1 {
		if prev := attemptOf(j, a.Number-1); prev != nil && !prev.EndedAt.IsZero() {
			return prev.EndedAt
		}
	}
	return j.SubmittedAt
}

// watchLease checks the lease of the attempt an JobAttemptStarted event
// started, until the attempt ends.
func (x *Reactions) watchLease(ctx context.Context, e events.Envelope) error {
	if e.Type != events.JobAttemptStarted {
		return nil
	}
	var d events.JobAttemptStartedData
	if err := e.Decode(&d); err != nil {
		return flows.Permanent(err)
	}
	j, err := x.Jobs.Load(ctx, d.JobID)
	if err != nil {
		return err
	}
	cur := j.Current()
	if cur == nil || cur.Number != d.Attempt {
		return nil // the attempt ended: nothing to watch
	}
	// The lease runs from the claim until the first heartbeat, then from
	// the last one (the KV entry's time: the NATS server's clock; the
	// claim's is the runner's), compared with this worker's clock: their
	// skew eats into the lease, so clocks must be kept in sync (NTP).
	lease, renewed := x.Lease, e.Time
	entry, err := x.Leases.Get(ctx, LeaseKey(d.JobID, d.Attempt))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return err
	default:
		var l Lease
		if json.Unmarshal(entry.Value(), &l) == nil && l.Runner == d.RunnerID {
			renewed = entry.Created()
			if l.LeaseMS > 0 {
				lease = time.Duration(l.LeaseMS) * time.Millisecond
			}
		}
	}
	if silent := x.Now().Sub(renewed); silent < lease {
		flows.Later(ctx)
		return nil
	}
	_, _, err = x.Jobs.EndAttempt(ctx, flows.Meta("job-leases", e), d.JobID, jobs.EndAttempt{Attempt: d.Attempt, Outcome: events.OutcomeLost,
		Reason: fmt.Sprintf("lost: runner %s sent no heartbeat for %s", d.RunnerID, lease.Round(time.Second))})
	if errors.Is(err, jobs.ErrNotCurrent) {
		return nil // ended meanwhile
	}
	return err
}
