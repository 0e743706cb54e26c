package platform

import (
	"context"

	"github.com/maestro-ml/maestro/projections"
)

// verifyAudit is `maestro audit verify` against this platform's stream and
// database with the keys it published (the admin UI's "Verify now").
func (p *Platform) verifyAudit(ctx context.Context) (*projections.AuditVerifyResult, error) {
	return projections.VerifyAudit(ctx, p.Pool, projections.AuditVerifyConfig{Events: p.Store})
}
