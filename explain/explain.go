// Package explain is the explanation document (explanation.json): its JSON
// Schema, validation of untrusted uploads, the typed document, and the
// comparison of two documents' feature importances.
//
// An explanation is an ordinary artifact of a run or a model version; the
// platform validates one whenever a file named explanation.json is uploaded
// and reads it back for the explanation route, the web UI and approval gates.
package explain

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

var printer = message.NewPrinter(language.English)

// FileName is the base name an explanation artifact is stored under.
const FileName = "explanation.json"

// MaxBytes bounds an explanation document (an upload above it is refused):
// 2 MiB holds ten thousand importances with a hundred effect curves, and
// bounds what a page view parses (Cache keeps parsed documents).
const MaxBytes = 2 << 20

// SchemaVersion is the only document version this package reads.
const SchemaVersion = 1

//go:embed explanation.schema.json
var schemaJSON []byte

// Schema returns the document's JSON Schema (draft 2020-12).
func Schema() []byte { return bytes.Clone(schemaJSON) }

// ErrTooLarge is wrapped by the *Error of a document above MaxBytes.
var ErrTooLarge = errors.New("explanation larger than the limit")

// Error is why a document is not a valid explanation.
type Error struct {
	// Path is the JSON pointer (RFC 6901) of the offending value, "" for
	// the document itself.
	Path string
	// Message says what is wrong there.
	Message string

	tooLarge bool
}

// Error reads "<path>: <message>", the path "/" for the document itself.
func (e *Error) Error() string {
	p := e.Path
	if p == "" {
		p = "/"
	}
	return p + ": " + e.Message
}

// Unwrap lets errors.Is(err, ErrTooLarge) tell an oversized document.
func (e *Error) Unwrap() error {
	if e.tooLarge {
		return ErrTooLarge
	}
	return nil
}

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, fmt.Errorf("decode the explanation schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	const url = "https://maestro.invalid/schemas/explanation.json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("add the explanation schema: %w", err)
	}
	s, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("compile the explanation schema: %w", err)
	}
	return s, nil
})

// Validate checks data as an explanation document. A non-nil error is an
// *Error naming one problem: the document's size, its JSON syntax
// (including duplicate object keys), the schema's first violation in path
// order, then the rules a schema cannot state (numbers that overflow a
// float64; a feature twice with one method in a list; a class twice).
func Validate(data []byte) error {
	_, err := decode(data)
	return err
}

// Parse validates data and returns the typed document.
func Parse(data []byte) (Explanation, error) {
	x, err := decode(data)
	if err != nil {
		return Explanation{}, err
	}
	return *x, nil
}

func decode(data []byte) (*Explanation, error) {
	if len(data) > MaxBytes {
		return nil, &Error{Message: fmt.Sprintf("larger than %d bytes", MaxBytes), tooLarge: true}
	}
	inst, err := decodeStrict(data)
	if err != nil {
		return nil, err
	}
	s, err := compiled()
	if err != nil {
		return nil, err // a broken embedded schema: a bug, not the upload's fault
	}
	if err := s.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			return nil, &Error{Message: err.Error()}
		}
		return nil, firstViolation(ve)
	}
	if err := checkNumbers(inst, nil); err != nil {
		return nil, err
	}
	var x Explanation
	if err := json.Unmarshal(data, &x); err != nil {
		// The schema and checkNumbers admit only what the types hold.
		return nil, &Error{Message: err.Error()}
	}
	if err := x.check(); err != nil {
		return nil, err
	}
	return &x, nil
}

// decodeStrict decodes one JSON value (numbers as json.Number) the way the
// schema validator wants it, refusing trailing data and duplicate keys.
func decodeStrict(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := decodeValue(d, nil)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, &Error{Message: "not JSON: data after the top-level value"}
	}
	return v, nil
}

// maxDepth is far above the schema's own depth (6) and below encoding/json's.
const maxDepth = 64

func decodeValue(d *json.Decoder, path []string) (any, error) {
	if len(path) > maxDepth {
		return nil, &Error{Path: pointer(path), Message: "nested too deeply"}
	}
	t, err := d.Token()
	if err != nil {
		return nil, &Error{Path: pointer(path), Message: "not JSON: " + syntaxMessage(err)}
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, &Error{Path: pointer(path), Message: "not JSON: " + syntaxMessage(err)}
				}
				k := kt.(string)
				if _, dup := m[k]; dup {
					return nil, &Error{Path: pointer(append(path, k)), Message: "duplicate key"}
				}
				v, err := decodeValue(d, append(path, k))
				if err != nil {
					return nil, err
				}
				m[k] = v
			}
			if _, err := d.Token(); err != nil {
				return nil, &Error{Path: pointer(path), Message: "not JSON: " + syntaxMessage(err)}
			}
			return m, nil
		case '[':
			a := []any{}
			for d.More() {
				v, err := decodeValue(d, append(path, strconv.Itoa(len(a))))
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := d.Token(); err != nil {
				return nil, &Error{Path: pointer(path), Message: "not JSON: " + syntaxMessage(err)}
			}
			return a, nil
		}
		return nil, &Error{Path: pointer(path), Message: "not JSON: unexpected " + t.String()}
	default:
		return t, nil
	}
}

func syntaxMessage(err error) string {
	if err == io.EOF {
		return "unexpected end of input"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// pointer encodes path tokens as a JSON pointer.
func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		b.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return b.String()
}

// firstViolation picks one leaf of the validator's error tree: the first in
// path order (array indexes numerically), so the answer is the same on
// every run. A missing or unknown property is named by its own path.
func firstViolation(root *jsonschema.ValidationError) *Error {
	type leaf struct {
		path []string
		msg  string
	}
	var leaves []leaf
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		p := append([]string(nil), e.InstanceLocation...)
		switch k := e.ErrorKind.(type) {
		case *kind.Required:
			for _, m := range k.Missing {
				leaves = append(leaves, leaf{append(append([]string(nil), p...), m), "required"})
			}
			return
		case *kind.AdditionalProperties:
			for _, m := range k.Properties {
				leaves = append(leaves, leaf{append(append([]string(nil), p...), m), "unknown property"})
			}
			return
		}
		leaves = append(leaves, leaf{p, e.ErrorKind.LocalizedString(printer)})
	}
	walk(root)
	if len(leaves) == 0 {
		return &Error{Message: root.Error()}
	}
	sort.SliceStable(leaves, func(i, j int) bool {
		if c := comparePaths(leaves[i].path, leaves[j].path); c != 0 {
			return c < 0
		}
		return leaves[i].msg < leaves[j].msg
	})
	return &Error{Path: pointer(leaves[0].path), Message: leaves[0].msg}
}

func comparePaths(a, b []string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] == b[i] {
			continue
		}
		ai, aerr := strconv.Atoi(a[i])
		bi, berr := strconv.Atoi(b[i])
		if aerr == nil && berr == nil {
			if ai < bi {
				return -1
			}
			return 1
		}
		if a[i] < b[i] {
			return -1
		}
		return 1
	}
	return len(a) - len(b)
}

// checkNumbers refuses a number that a float64 cannot hold (1e400): JSON
// has no infinity, but its numbers are unbounded.
func checkNumbers(v any, path []string) error {
	switch v := v.(type) {
	case json.Number:
		if f, err := strconv.ParseFloat(string(v), 64); err != nil || !finite(f) {
			return &Error{Path: pointer(path), Message: "not a finite 64-bit number"}
		}
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if err := checkNumbers(v[k], append(path, k)); err != nil {
				return err
			}
		}
	case []any:
		for i, e := range v {
			if err := checkNumbers(e, append(path, strconv.Itoa(i))); err != nil {
				return err
			}
		}
	}
	return nil
}

// check enforces what the schema cannot: unique features per method in a
// list, unique classes (and, defensively, finite numbers).
func (x *Explanation) check() error {
	if err := checkImportances("/feature_importances", x.FeatureImportances); err != nil {
		return err
	}
	if err := checkEffects("/feature_effects", x.FeatureEffects); err != nil {
		return err
	}
	seen := map[string]int{}
	for i, c := range x.Classes {
		p := "/classes/" + strconv.Itoa(i)
		if j, dup := seen[c.Class]; dup {
			return &Error{Path: p + "/class", Message: fmt.Sprintf("class %q is also /classes/%d", c.Class, j)}
		}
		seen[c.Class] = i
		if err := checkImportances(p+"/feature_importances", c.FeatureImportances); err != nil {
			return err
		}
		if err := checkEffects(p+"/feature_effects", c.FeatureEffects); err != nil {
			return err
		}
	}
	if x.Metric != nil && x.Metric.Baseline != nil && !finite(*x.Metric.Baseline) {
		return &Error{Path: "/metric/baseline", Message: "not a finite number"}
	}
	return nil
}

type featureMethod struct{ feature, method string }

func checkImportances(base string, list []Importance) error {
	seen := map[featureMethod]int{}
	for i, im := range list {
		p := base + "/" + strconv.Itoa(i)
		k := featureMethod{im.Feature, im.Method}
		if j, dup := seen[k]; dup {
			return &Error{Path: p + "/feature", Message: fmt.Sprintf("feature %q with method %q is also %s/%d", im.Feature, im.Method, base, j)}
		}
		seen[k] = i
		if !finite(im.Score) {
			return &Error{Path: p + "/score", Message: "not a finite number"}
		}
		if im.Std != nil && !finite(*im.Std) {
			return &Error{Path: p + "/std", Message: "not a finite number"}
		}
	}
	return nil
}

func checkEffects(base string, list []Effect) error {
	seen := map[featureMethod]int{}
	for i, ef := range list {
		p := base + "/" + strconv.Itoa(i)
		k := featureMethod{ef.Feature, ef.Method}
		if j, dup := seen[k]; dup {
			return &Error{Path: p + "/feature", Message: fmt.Sprintf("feature %q with method %q is also %s/%d", ef.Feature, ef.Method, base, j)}
		}
		seen[k] = i
		for n, pt := range ef.Points {
			pp := p + "/points/" + strconv.Itoa(n)
			if !finite(pt.Effect) {
				return &Error{Path: pp + "/effect", Message: "not a finite number"}
			}
			if !pt.Value.IsText && !finite(pt.Value.Number) {
				return &Error{Path: pp + "/value", Message: "not a finite number"}
			}
		}
	}
	return nil
}

func finite(f float64) bool { return !math.IsInf(f, 0) && !math.IsNaN(f) }

// Read reads and parses a document from r (a stored blob), refusing one
// above MaxBytes without reading further.
func Read(r io.Reader) (Explanation, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return Explanation{}, fmt.Errorf("read the explanation: %w", err)
	}
	return Parse(data)
}
