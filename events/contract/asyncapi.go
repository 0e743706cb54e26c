// Package contract publishes Maestro's event contract for other systems: an
// AsyncAPI 3.0 document of every catalogued event type, the NATS subjects
// it is sent on, its CloudEvents headers and a JSON Schema of its data,
// generated from the catalogue (events.Types, events.AggregatesOf), the
// payload registry (events.PayloadOf), the codec's headers
// (events.Headers) and the secret fields (events.SecretFields). Nothing in
// it is written by hand per type, so a type added to the catalogue is in
// the document at once (or Document fails, naming it, until it has a data
// struct).
package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"github.com/invopop/jsonschema"

	"github.com/maestro-ml/maestro/events"
)

// Version is the contract's version (info.version). Event types carry
// their own version suffix (.v1); this one changes when the document's
// shape (channels, headers) does.
const Version = "1.0.0"

// Document is the AsyncAPI 3.0 document as JSON, generated once.
func Document() ([]byte, error) { return document() }

var document = sync.OnceValues(func() ([]byte, error) {
	doc, err := Build()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode the AsyncAPI document: %w", err)
	}
	return b, nil
})

// Build generates the AsyncAPI document as a JSON-shaped value from the
// event catalogue. It fails, naming them, when catalogued types have no
// registered data struct.
func Build() (map[string]any, error) {
	return BuildFrom(events.Types(), events.AggregatesOf, events.PayloadOf)
}

// BuildFrom is Build over the given catalogue (types, their aggregates and
// their data structs): tests check that a type without a data struct is
// refused by name.
func BuildFrom(types []string, aggregatesOf func(string) []string, payloadOf func(string) (reflect.Type, bool)) (map[string]any, error) {
	var missing []string
	schemas := map[string]any{}
	messages := map[string]any{}
	// Channels per aggregate, in catalogue order of first appearance.
	var aggs []string
	typesOf := map[string][]string{}
	for _, ty := range types {
		rt, ok := payloadOf(ty)
		if !ok {
			missing = append(missing, ty)
			continue
		}
		s, err := PayloadSchema(ty, rt)
		if err != nil {
			return nil, err
		}
		schemas[ty] = s
		messages[ty] = message(ty, rt)
		for _, a := range aggregatesOf(ty) {
			if _, seen := typesOf[a]; !seen {
				aggs = append(aggs, a)
			}
			typesOf[a] = append(typesOf[a], ty)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("event types without a data struct in events/payloads.go (the contract needs its schema): %s", strings.Join(missing, ", "))
	}
	channels := map[string]any{}
	operations := map[string]any{}
	for _, a := range aggs {
		for _, side := range []struct{ key, prefix, what string }{
			{"events", events.SubjectPrefix, "Events of one " + a + " aggregate, as appended to " + events.StreamName + " (internal: the full-access user only)."},
			{"public", events.PublicSubjectPrefix, "Redacted copies of the events of one " + a + " aggregate in " + events.PublicStreamName + ", the stream outside subscribers read: secret fields (see each payload's descriptions) are removed, everything else is as appended."},
		} {
			name := side.key + "." + a
			msgs := map[string]any{}
			var refs []any
			for _, ty := range typesOf[a] {
				msgs[ty] = ref("#/components/messages/" + ty)
				refs = append(refs, ref("#/channels/"+name+"/messages/"+ty))
			}
			channels[name] = map[string]any{
				"address":     side.prefix + a + ".{id}",
				"title":       a + " events (" + side.key + ")",
				"description": side.what,
				"parameters": map[string]any{
					"id": map[string]any{"description": "The aggregate's id: a UUID, or for reservation subjects the hex SHA-256 of the reserved value."},
				},
				"messages": msgs,
			}
			operations["send."+name] = map[string]any{
				"action":      "send",
				"title":       "Maestro sends " + a + " events (" + side.key + ")",
				"description": "Every event is sent once on its aggregate's subject and kept in the stream: create a JetStream consumer to read from any point.",
				"channel":     ref("#/channels/" + name),
				"messages":    refs,
			}
		}
	}
	return map[string]any{
		"asyncapi":           "3.0.0",
		"id":                 "urn:maestro:events",
		"defaultContentType": "application/json",
		"info": map[string]any{
			"title":       "Maestro events",
			"version":     Version,
			"description": description,
		},
		"channels":   channels,
		"operations": operations,
		"components": map[string]any{
			"messages": messages,
			"schemas":  schemas,
		},
	}, nil
}

const description = "Every change in Maestro is an event, a CloudEvent in binary mode on a NATS JetStream subject: " +
	"the CloudEvents attributes are NATS headers (ce-*), the message body is the event's data as JSON. " +
	"Events are appended to " + events.StreamName + " on maestro.events.<aggregate>.<id> (internal) and copied, " +
	"in the same order and with secret fields removed, to " + events.PublicStreamName + " on maestro.public.<aggregate>.<id>, " +
	"which the least-privilege outside user may read with consumers of its own. " +
	"Select the payload schema by the ce-type header; de-duplicate on ce-id; ignore fields you do not know " +
	"(a type gains optional fields without a new version; an incompatible change is a new type with the next .vN suffix)."

// message is the AsyncAPI message of one event type.
func message(ty string, rt reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	for _, h := range events.Headers() {
		p := map[string]any{"type": "string", "description": h.Description}
		switch {
		case h.Name == "ce-type":
			p["const"] = ty
		case h.Const != "":
			p["const"] = h.Const
		case len(h.Enum) > 0:
			p["enum"] = h.Enum
		}
		if h.Format != "" {
			p["format"] = h.Format
		}
		props[h.Name] = p
		if h.Required {
			required = append(required, h.Name)
		}
	}
	// Only the copies carry their source's sequence (events.PublicCopy).
	props[events.HdrSourceSequence] = map[string]any{"type": "string", "pattern": "^[1-9][0-9]*$",
		"description": "On the copies in " + events.PublicStreamName + " only: the event's sequence in " + events.StreamName + " (copies are in that order)."}
	return map[string]any{
		"name":        ty,
		"title":       rt.Name(),
		"summary":     "Event " + ty + "; its data is events." + rt.Name() + ".",
		"contentType": "application/json",
		"headers": map[string]any{
			"type":       "object",
			"properties": props,
			"required":   required,
		},
		"payload":       ref("#/components/schemas/" + ty),
		"correlationId": map[string]any{"location": "$message.header#/ce-correlationid"},
	}
}

func ref(to string) map[string]any { return map[string]any{"$ref": to} }

// reflector turns data structs into JSON Schema (draft-07 compatible, the
// dialect of AsyncAPI's default schema format): inline (no $defs), no $id,
// unknown properties allowed (consumers ignore fields added later), fields
// without omitempty required as encoding/json always writes them.
var reflector = &jsonschema.Reflector{
	Anonymous:                 true,
	DoNotReference:            true,
	ExpandedStruct:            true,
	AllowAdditionalProperties: true,
	Mapper:                    mapType,
}

// mapType gives the schema of types whose JSON is not their Go shape:
// events.MetricValue is a number, or NaN and ±Inf as the strings
// MarshalJSON writes.
func mapType(t reflect.Type) *jsonschema.Schema {
	if t == reflect.TypeFor[events.MetricValue]() {
		return &jsonschema.Schema{OneOf: []*jsonschema.Schema{{Type: "number"}, {Type: "string", Enum: []any{"NaN", "Infinity", "-Infinity"}}}}
	}
	return nil
}

// PayloadSchema is the JSON Schema of the data of events of type ty, whose
// Go type is rt.
func PayloadSchema(ty string, rt reflect.Type) (map[string]any, error) {
	raw, err := json.Marshal(reflector.ReflectFromType(rt))
	if err != nil {
		return nil, fmt.Errorf("schema of %s: %w", ty, err)
	}
	var s map[string]any
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("schema of %s: %w", ty, err)
	}
	delete(s, "$schema")
	delete(s, "$id")
	if err := nullable(s, rt); err != nil {
		return nil, fmt.Errorf("schema of %s: %w", ty, err)
	}
	s["title"] = rt.Name()
	s["description"] = "The data of " + ty + " (events." + rt.Name() + ")."
	props, _ := s["properties"].(map[string]any)
	for _, f := range events.SecretFields(ty) {
		p, ok := props[f].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("schema of %s: secret field %q is not a property of %s", ty, f, rt.Name())
		}
		p["description"] = "SECRET: present only in " + events.StreamName + " (internal); removed from the copies in " +
			events.PublicStreamName + ", from the audit trail and from every API answer."
		if req, ok := s["required"].([]any); ok {
			s["required"] = slices.DeleteFunc(req, func(v any) bool { return v == f })
		}
	}
	for _, f := range events.URLFields(ty) {
		p, ok := props[f].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("schema of %s: URL field %q is not a property of %s", ty, f, rt.Name())
		}
		p["description"] = "Whole only in " + events.StreamName + " (internal); in the copies in " + events.PublicStreamName +
			", the audit trail and deliveries, reduced to its origin (scheme://host[:port], then \"/…\" if it had more): " +
			"a webhook URL may carry a credential."
	}
	for name, p := range props {
		if pm, ok := p.(map[string]any); ok && personal[name] != "" {
			pm["description"] = personal[name]
		}
	}
	return s, nil
}

// personal describes the fields that hold personal data: they are in the
// redacted copies too (outside systems may need them: who registered,
// from where a token is used), so the contract says which they are.
var personal = map[string]string{
	"email":      "Personal data: the user's e-mail address (normalised). Present in the redacted copies.",
	"client_ip":  "Personal data: the client address the request came from. Present in the redacted copies.",
	"user_agent": "Personal data: the client's User-Agent. Present in the redacted copies.",
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

// nullable marks what encoding/json writes as null: a nil map, slice or
// pointer in a field without omitempty/omitzero. It walks the schema and
// the Go type side by side.
func nullable(s map[string]any, t reflect.Type) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == rawMessage:
		return nil
	case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
		if items, ok := s["items"].(map[string]any); ok {
			return nullable(items, t.Elem())
		}
		return nil
	case t.Kind() == reflect.Map:
		if ap, ok := s["additionalProperties"].(map[string]any); ok {
			return nullable(ap, t.Elem())
		}
		return nil
	case t.Kind() != reflect.Struct:
		return nil
	}
	props, _ := s["properties"].(map[string]any)
	for f := range t.Fields() {
		if !f.IsExported() || f.Anonymous {
			if f.Anonymous {
				return errors.New("embedded structs are not supported in event data: " + t.Name() + "." + f.Name)
			}
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if f.Type == rawMessage && props[name] == true {
			// The reflector's "true" (any value): say so in words.
			props[name] = map[string]any{"description": "Any JSON value, as the client sent it."}
			continue
		}
		p, ok := props[name].(map[string]any)
		if !ok {
			return fmt.Errorf("field %s.%s (%q) has no schema", t.Name(), f.Name, name)
		}
		omit := slices.ContainsFunc(strings.Split(opts, ","), func(o string) bool { return o == "omitempty" || o == "omitzero" })
		k := f.Type.Kind()
		if !omit && f.Type != rawMessage && (k == reflect.Map || k == reflect.Slice || k == reflect.Pointer) {
			if typ, ok := p["type"].(string); ok {
				p["type"] = []any{typ, "null"}
			}
		}
		if err := nullable(p, f.Type); err != nil {
			return err
		}
	}
	return nil
}
