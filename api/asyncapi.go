package api

import (
	"fmt"
	"net/http"

	"github.com/maestro-ml/maestro/events/contract"
)

// serveAsyncAPI serves the event contract for other systems: the AsyncAPI
// 3.0 document generated from the event catalogue (events/contract). It is
// public like the OpenAPI document: it describes shapes, holds no data,
// and reading the events themselves takes NATS credentials.
func serveAsyncAPI(w http.ResponseWriter, _ *http.Request) error {
	doc, err := contract.Document()
	if err != nil {
		return fmt.Errorf("asyncapi document: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(doc)
	return nil
}
