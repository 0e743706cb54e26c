package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
)

// decodeJSON reads one JSON object into v: Content-Type must be JSON,
// unknown fields and trailing data are rejected, and the body is already
// bounded by the size-limit middleware.
func decodeJSON(r *http.Request, v any) error {
	if err := jsonContent(r); err != nil {
		return err
	}
	return decodeStrict(r.Body, v)
}

// jsonContent refuses a body that is not application/json.
func jsonContent(r *http.Request) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return problem("unsupported-media-type", "send the body as application/json")
	}
	return nil
}

// decodeStrict is decodeJSON after the Content-Type check: one JSON object
// from body into v, unknown fields and trailing data refused.
func decodeStrict(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		if errors.Is(err, io.EOF) {
			return problem("malformed-json", "the body is empty")
		}
		return problem("malformed-json", jsonErrorDetail(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return problem("malformed-json", "unexpected data after the JSON object")
	}
	return nil
}

func jsonErrorDetail(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, te.Type)
	}
	// Unknown-field errors name the field, which is useful and not sensitive.
	return err.Error()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	// Encoded before the status is sent: a value JSON cannot carry (an
	// infinite float) is a 500, not an empty 200.
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"title":"the answer could not be encoded","status":500}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
