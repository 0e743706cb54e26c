package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrReplicas means a stream cannot have the replicas Maestro is configured
// with (MAESTRO_NATS_REPLICAS): the cluster has too few JetStream servers, or
// an existing stream has fewer replicas than configured. Maestro refuses to
// start rather than keep the source of truth on fewer disks than asked.
var ErrReplicas = errors.New("events: replicas")

// JetStream API error codes that mean "cannot place this many replicas".
const (
	jsErrClusterNoPeers         = 10005 // no suitable peers for placement
	jsErrInsufficientResources  = 10023
	jsErrReplicasNotClusterMode = 10074 // replicas > 1 not supported in non-clustered mode
)

// decideReplicas returns the replica count to give a stream that has
// existing replicas (0: the stream does not exist yet) when configured are
// asked for. It never lowers a stream's replicas: an operator may have
// raised them, and scaling the source of truth down on the next start of
// some process would silently drop copies. A stream with fewer replicas
// than configured is refused, not scaled up behind the operator's back:
// raising replicas is a placement decision for the cluster's operator.
func decideReplicas(stream string, existing, configured int) (int, error) {
	if configured < 1 {
		return 0, fmt.Errorf("%w: %d configured replicas for %s; need at least 1", ErrReplicas, configured, stream)
	}
	switch {
	case existing == 0, existing == configured:
		return configured, nil
	case existing > configured:
		return existing, nil
	default:
		return 0, fmt.Errorf("%w: stream %s has %d replica(s) but MAESTRO_NATS_REPLICAS is %d; "+
			"refusing to start with fewer replicas than configured: raise the stream's replicas "+
			"(nats stream edit %s --replicas %d) or set MAESTRO_NATS_REPLICAS=%d",
			ErrReplicas, stream, existing, configured, stream, configured, existing)
	}
}

// StreamReplicas reads stream's current configuration and returns the
// replicas to create or update it with (see decideReplicas), so every
// stream and bucket Maestro creates follows one rule.
func StreamReplicas(ctx context.Context, js jetstream.JetStream, stream string, configured int) (int, error) {
	existing := 0
	s, err := js.Stream(ctx, stream)
	switch {
	case err == nil:
		existing = s.CachedInfo().Config.Replicas
	case errors.Is(err, jetstream.ErrStreamNotFound):
	default:
		return 0, fmt.Errorf("read stream %s: %w", stream, err)
	}
	return decideReplicas(stream, existing, configured)
}

// ExplainReplicasError turns JetStream's "cannot place replicas" answers
// into ErrReplicas with what to do; other errors pass through unchanged.
func ExplainReplicasError(stream string, replicas int, err error) error {
	var apiErr *jetstream.APIError
	if replicas <= 1 || !errors.As(err, &apiErr) {
		return err
	}
	switch apiErr.ErrorCode {
	case jsErrClusterNoPeers, jsErrInsufficientResources, jsErrReplicasNotClusterMode:
		return fmt.Errorf("%w: the NATS server cannot place %d replica(s) of %s (%s); "+
			"the event store refuses to start on a cluster with fewer JetStream servers than MAESTRO_NATS_REPLICAS: "+
			"add servers, or set MAESTRO_NATS_REPLICAS to the number it has (1 for a single server)",
			ErrReplicas, replicas, stream, apiErr.Description)
	}
	return err
}
