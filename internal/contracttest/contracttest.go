// Package contracttest checks event messages against the published AsyncAPI
// document the way an outside subscriber would: by the document alone (its
// message headers and payload schemas), with a maintained JSON Schema
// validator (santhosh-tekuri/jsonschema), no Maestro decoding code.
package contracttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// docURL names the document inside the compiler (never fetched).
const docURL = "https://maestro.invalid/asyncapi.json"

// Validator checks messages against one AsyncAPI document.
type Validator struct {
	c *jsonschema.Compiler
	// Doc is the document, decoded.
	Doc map[string]any

	mu       sync.Mutex
	compiled map[string]*jsonschema.Schema
}

// New reads an AsyncAPI document (JSON).
func New(doc []byte) (*Validator, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("decode the AsyncAPI document: %w", err)
	}
	c := jsonschema.NewCompiler()
	// AsyncAPI's default schema format is a superset of draft-07.
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	if err := c.AddResource(docURL, v); err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, err
	}
	return &Validator{c: c, Doc: m, compiled: map[string]*jsonschema.Schema{}}, nil
}

func (v *Validator) schema(pointer string) (*jsonschema.Schema, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s, ok := v.compiled[pointer]; ok {
		return s, nil
	}
	s, err := v.c.Compile(docURL + "#" + pointer)
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", pointer, err)
	}
	v.compiled[pointer] = s
	return s, nil
}

// Message checks one message of type typ (its ce-type header): that the
// document has the message, that headers (first value of each) satisfy
// its headers schema, and that data satisfies its payload schema.
func (v *Validator) Message(typ string, headers map[string]string, data []byte) error {
	msgs, _ := v.Doc["components"].(map[string]any)["messages"].(map[string]any)
	if _, ok := msgs[typ]; !ok {
		return fmt.Errorf("the document has no message %s", typ)
	}
	hs, err := v.schema("/components/messages/" + typ + "/headers")
	if err != nil {
		return err
	}
	h := map[string]any{}
	for k, val := range headers {
		h[k] = val
	}
	if err := hs.Validate(h); err != nil {
		return fmt.Errorf("%s headers: %w", typ, err)
	}
	ps, err := v.schema("/components/schemas/" + typ)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s payload is not JSON: %w", typ, err)
	}
	if err := ps.Validate(inst); err != nil {
		return fmt.Errorf("%s payload %s: %w", typ, data, err)
	}
	return nil
}

// SpecSchema compiles the official AsyncAPI 3.0.0 JSON Schema vendored in
// events/contract/testdata (from the npm package @asyncapi/specs).
func SpecSchema() (*jsonschema.Schema, error) {
	_, here, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(here), "..", "..", "events", "contract", "testdata", "asyncapi-3.0.0.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the AsyncAPI 3.0.0 schema: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	c := jsonschema.NewCompiler()
	const url = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("compile the AsyncAPI 3.0.0 schema: %w", err)
	}
	return s, nil
}

// ValidateDocument checks doc against the official AsyncAPI 3.0.0 schema.
func ValidateDocument(doc []byte) error {
	s, err := SpecSchema()
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return fmt.Errorf("decode the document: %w", err)
	}
	return s.Validate(inst)
}
