package contract_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/events/contract"
	"github.com/maestro-ml/maestro/internal/contracttest"
)

func document(t *testing.T) []byte {
	t.Helper()
	doc, err := contract.Document()
	if err != nil {
		t.Fatalf("generate the AsyncAPI document: %v", err)
	}
	return doc
}

// The document is valid AsyncAPI 3.0.0 by the specification's own JSON
// Schema (vendored from @asyncapi/specs).
func TestDocumentIsValidAsyncAPI3(t *testing.T) {
	if err := contracttest.ValidateDocument(document(t)); err != nil {
		t.Fatalf("the AsyncAPI document is not valid AsyncAPI 3.0.0: %v", err)
	}
}

// The validator rejects what is not AsyncAPI 3.0.0, so the test above
// can fail.
func TestSpecSchemaRejectsAnInvalidDocument(t *testing.T) {
	for _, bad := range []string{
		`{"asyncapi":"2.6.0","info":{"title":"x","version":"1"}}`,
		`{"asyncapi":"3.0.0","info":{"title":"x"}}`,
		`{"asyncapi":"3.0.0","info":{"title":"x","version":"1"},"channels":{"c":{"address":1}}}`,
	} {
		if err := contracttest.ValidateDocument([]byte(bad)); err == nil {
			t.Errorf("%s passed as AsyncAPI 3.0.0", bad)
		}
	}
}

// Every catalogued type is a message with headers and a payload schema, on
// the internal and the public channel of every aggregate it is appended to.
func TestDocumentCoversEveryCataloguedType(t *testing.T) {
	var doc struct {
		Channels map[string]struct {
			Address  string                    `json:"address"`
			Messages map[string]map[string]any `json:"messages"`
		} `json:"channels"`
		Components struct {
			Messages map[string]map[string]any `json:"messages"`
			Schemas  map[string]map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(document(t), &doc); err != nil {
		t.Fatal(err)
	}
	types := events.Types()
	for _, ty := range types {
		if doc.Components.Messages[ty] == nil {
			t.Errorf("event type %s is catalogued but is not a message of the AsyncAPI document", ty)
		}
		if doc.Components.Schemas[ty] == nil {
			t.Errorf("event type %s is catalogued but has no payload schema in the AsyncAPI document (add its data struct to events/payloads.go)", ty)
		}
		for _, a := range events.AggregatesOf(ty) {
			for _, side := range []struct{ name, address string }{
				{"events." + a, events.SubjectPrefix + a + ".{id}"},
				{"public." + a, events.PublicSubjectPrefix + a + ".{id}"},
			} {
				ch, ok := doc.Channels[side.name]
				if !ok || ch.Address != side.address {
					t.Errorf("%s: channel %s missing or at %q, want %q", ty, side.name, ch.Address, side.address)
					continue
				}
				if ch.Messages[ty] == nil {
					t.Errorf("channel %s does not list %s", side.name, ty)
				}
			}
		}
	}
	for ty := range doc.Components.Messages {
		if !slices.Contains(types, ty) {
			t.Errorf("the document has message %s, which is not catalogued", ty)
		}
	}
}

// A catalogued type without a registered data struct fails generation,
// and the error names it (what the coverage test reports when the
// catalogue grows before events/payloads.go does).
func TestBuildNamesATypeWithoutPayload(t *testing.T) {
	const ghost = "maestro.ghost.appeared.v1"
	_, err := contract.BuildFrom(append(events.Types(), ghost), events.AggregatesOf, events.PayloadOf)
	if err == nil || !strings.Contains(err.Error(), ghost) {
		t.Fatalf("BuildFrom with %s (no data struct) = %v, want an error naming it", ghost, err)
	}
}

// Every payload schema accepts what encoding/json writes for the zero
// value and for a filled value of its data struct (nil maps and slices are
// null), and secret fields are documented and optional.
func TestPayloadSchemasAcceptEncodedData(t *testing.T) {
	v, err := contracttest.New(document(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, ty := range events.Types() {
		rt, ok := events.PayloadOf(ty)
		if !ok {
			continue // TestDocumentCoversEveryCataloguedType reports it
		}
		zero := reflect.New(rt)
		full := reflect.New(rt)
		fill(full.Elem())
		e := events.Envelope{ID: "e1", Type: ty, Subject: events.Subject(events.AggregatesOf(ty)[0], "x"), Actor: events.SystemActor, CorrelationID: "c1"}
		for name, val := range map[string]reflect.Value{"zero": zero, "filled": full} {
			data, err := json.Marshal(val.Interface())
			if err != nil {
				t.Fatal(err)
			}
			e.Data = data
			h := map[string]string{}
			for k, vs := range events.ToMsg(e).Header {
				h[k] = vs[0]
			}
			if err := v.Message(ty, h, data); err != nil {
				t.Errorf("%s value of %s: %v", name, ty, err)
			}
			// The redacted copy satisfies the same schema.
			red, err := json.Marshal(events.Redacted(e))
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Message(ty, h, red); err != nil {
				t.Errorf("redacted %s value of %s: %v", name, ty, err)
			}
		}
	}
	// A payload that breaks the schema is refused, so the loop above can fail.
	h := map[string]string{}
	e := events.Envelope{ID: "e1", Type: events.ModelAliasSet, Subject: events.Subject(events.AggModel, "m"), Actor: events.SystemActor, CorrelationID: "c1"}
	for k, vs := range events.ToMsg(e).Header {
		h[k] = vs[0]
	}
	if err := v.Message(events.ModelAliasSet, h, []byte(`{"model_id":"m","alias":"a","version":"seven"}`)); err == nil {
		t.Error("a version that is a string passed the schema of " + events.ModelAliasSet)
	}
	delete(h, "ce-id")
	if err := v.Message(events.ModelAliasSet, h, []byte(`{"model_id":"m","alias":"a","version":7}`)); err == nil {
		t.Error("a message without ce-id passed the headers of " + events.ModelAliasSet)
	}
}

// Secret fields are documented as such and not required (the public copy
// has none of them).
func TestSecretFieldsAreMarked(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]struct {
					Description string `json:"description"`
				} `json:"properties"`
				Required []string `json:"required"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(document(t), &doc); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ty := range events.Types() {
		for _, f := range events.SecretFields(ty) {
			n++
			s := doc.Components.Schemas[ty]
			if !strings.HasPrefix(s.Properties[f].Description, "SECRET") {
				t.Errorf("%s.%s is secret but its schema says %q", ty, f, s.Properties[f].Description)
			}
			if slices.Contains(s.Required, f) {
				t.Errorf("%s.%s is secret (absent from the public copy) but required", ty, f)
			}
		}
	}
	if n == 0 {
		t.Fatal("no secret fields found: events.SecretFields changed shape")
	}
}

// fill sets every field of a struct value to something non-zero.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.String:
		v.SetString("x")
	case reflect.Int, reflect.Int64:
		v.SetInt(3)
	case reflect.Float64:
		v.SetFloat(0.5)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		v.SetMapIndex(k, e)
	case reflect.Slice:
		if v.Type() == reflect.TypeFor[json.RawMessage]() {
			v.SetBytes([]byte(`{"inputs":[1,"a"]}`))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	}
}
