package filter

import (
	"slices"
	"strings"
)

// Type is what an identifier names: an attribute of the entity, a metric, a
// param, a tag, a dataset field, or (gates only) a feature's importance.
type Type uint8

// Types. The zero Type names nothing.
const (
	Attribute Type = iota + 1
	Metric
	Param
	Tag
	Dataset
	// Importance is a feature's global importance in a model version's
	// explanation (importance.<feature>): approval gates only (Gates).
	Importance
)

// String is the type's canonical prefix, as String of an Expr writes it.
func (t Type) String() string {
	switch t {
	case Attribute:
		return "attributes"
	case Metric:
		return "metrics"
	case Param:
		return "params"
	case Tag:
		return "tags"
	case Dataset:
		return "datasets"
	case Importance:
		return "importance"
	}
	return "invalid"
}

// Op is a comparison operator, upper-case as String writes it.
type Op string

// Operators (MLflow's; `<>` and `==` are refused as MLflow refuses them).
const (
	Eq    Op = "="
	Ne    Op = "!="
	Lt    Op = "<"
	Le    Op = "<="
	Gt    Op = ">"
	Ge    Op = ">="
	Like  Op = "LIKE"
	ILike Op = "ILIKE"
	In    Op = "IN"
	NotIn Op = "NOT IN"
)

// Operator sets of the kinds of keys.
var (
	numericOps = []Op{Eq, Ne, Gt, Ge, Lt, Le}
	stringOps  = []Op{Eq, Ne, Like, ILike}
	listOps    = []Op{Eq, Ne, Like, ILike, In, NotIn}
)

// rule is what a key admits: its operators, and whether its values are
// numbers (unquoted) or strings (quoted).
type rule struct {
	ops     []Op
	numeric bool
}

// field is an attribute or dataset field of a kind: its canonical key, its
// rule, and whether it may be filtered and ordered by.
type field struct {
	key        string
	rule       rule
	filterable bool
	orderable  bool
}

// Kind describes the searchable entity a filter is parsed for: which types
// it has (and the words that name them), the rule for the keys of metrics,
// params and tags, and its attribute (and dataset) fields with their
// aliases. One parser serves every search; the kind decides what is valid.
type Kind struct {
	name       string
	typeWords  map[string]Type           // lower-case type word → type
	keyed      map[Type]rule             // metric, param, tag: any key
	orderTypes map[Type]bool             // keyed types that order_by accepts
	fields     map[Type]map[string]field // attribute and dataset fields by name and alias
}

// Name is the kind's name ("runs", "experiments", ...), for messages.
func (k *Kind) Name() string { return k.name }

// validTypes lists the kind's type words for an error message.
func (k *Kind) validTypes() string {
	words := make([]string, 0, len(k.typeWords))
	for w := range k.typeWords {
		words = append(words, "'"+w+"'")
	}
	slices.Sort(words)
	return strings.Join(words, ", ")
}

// validKeys lists the canonical keys of a field type for an error message.
func (k *Kind) validKeys(t Type, order bool) string {
	var keys []string
	for name, f := range k.fields[t] {
		if name == f.key && ((order && f.orderable) || (!order && f.filterable)) {
			keys = append(keys, "'"+name+"'")
		}
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

var (
	runTypeWords = map[string]Type{
		"attribute": Attribute, "attributes": Attribute, "attr": Attribute, "run": Attribute,
		"metric": Metric, "metrics": Metric,
		"parameter": Param, "parameters": Param, "param": Param, "params": Param,
		"tag": Tag, "tags": Tag,
		"dataset": Dataset, "datasets": Dataset,
	}
	// Experiments and registry entities have attributes and tags only;
	// MLflow names them 'attribute', 'tag' and 'tags' (the attribute
	// aliases are accepted too).
	taggedTypeWords = map[string]Type{
		"attribute": Attribute, "attributes": Attribute, "attr": Attribute,
		"tag": Tag, "tags": Tag,
	}
)

// fields builds a field table from entries; aliases map extra names to a
// canonical key already in the table.
func fields(entries []field, aliases map[string]string) map[string]field {
	m := make(map[string]field, len(entries)+len(aliases))
	for _, f := range entries {
		m[f.key] = f
	}
	for alias, key := range aliases {
		m[alias] = m[key]
	}
	return m
}

// Runs is MLflow's run search (SearchUtils): metrics compare the run's
// latest value, params and tags their string value; attributes run_id
// (also IN and NOT IN), run_name, status, user_id, artifact_uri, and the
// times start_time and end_time in ms; dataset fields name, digest, context.
var Runs = &Kind{
	name:      "runs",
	typeWords: runTypeWords,
	keyed: map[Type]rule{
		Metric: {ops: numericOps, numeric: true},
		Param:  {ops: stringOps},
		Tag:    {ops: stringOps},
	},
	orderTypes: map[Type]bool{Metric: true, Param: true, Tag: true},
	fields: map[Type]map[string]field{
		Attribute: fields([]field{
			{key: "run_id", rule: rule{ops: listOps}, filterable: true, orderable: true},
			{key: "run_name", rule: rule{ops: stringOps}, filterable: true, orderable: true},
			{key: "status", rule: rule{ops: stringOps}, filterable: true, orderable: true},
			{key: "user_id", rule: rule{ops: stringOps}, filterable: true, orderable: true},
			{key: "artifact_uri", rule: rule{ops: stringOps}, filterable: true, orderable: true},
			{key: "start_time", rule: rule{ops: numericOps, numeric: true}, filterable: true, orderable: true},
			{key: "end_time", rule: rule{ops: numericOps, numeric: true}, filterable: true, orderable: true},
		}, map[string]string{"run name": "run_name", "Run name": "run_name", "Run Name": "run_name",
			"created": "start_time", "Created": "start_time"}),
		Dataset: fields([]field{
			{key: "name", rule: rule{ops: listOps}, filterable: true},
			{key: "digest", rule: rule{ops: listOps}, filterable: true},
			{key: "context", rule: rule{ops: listOps}, filterable: true},
		}, nil),
	},
}

// Experiments is MLflow's experiment search (SearchExperimentsUtils):
// attributes name, creation_time and last_update_time (ms), tags; order_by
// also experiment_id.
var Experiments = &Kind{
	name:      "experiments",
	typeWords: taggedTypeWords,
	keyed:     map[Type]rule{Tag: {ops: stringOps}},
	fields: map[Type]map[string]field{
		Attribute: fields([]field{
			{key: "name", rule: rule{ops: stringOps}, filterable: true, orderable: true},
			{key: "experiment_id", rule: rule{ops: stringOps}, orderable: true},
			{key: "creation_time", rule: rule{ops: numericOps, numeric: true}, filterable: true, orderable: true},
			{key: "last_update_time", rule: rule{ops: numericOps, numeric: true}, filterable: true, orderable: true},
		}, nil),
	},
}

// RegisteredModels is MLflow's registered-model search (SearchModelUtils):
// attribute name and tags; order_by name, creation_timestamp and
// last_updated_timestamp (old clients: timestamp).
var RegisteredModels = &Kind{
	name:      "registered models",
	typeWords: taggedTypeWords,
	keyed:     map[Type]rule{Tag: {ops: stringOps}},
	fields: map[Type]map[string]field{
		Attribute: fields([]field{
			{key: "name", rule: rule{ops: stringOps}, filterable: true, orderable: true},
			{key: "creation_timestamp", rule: rule{ops: numericOps, numeric: true}, orderable: true},
			{key: "last_updated_timestamp", rule: rule{ops: numericOps, numeric: true}, orderable: true},
		}, map[string]string{"timestamp": "last_updated_timestamp"}),
	},
}

// ModelVersions is MLflow's model-version search (SearchModelVersionUtils):
// name, run_id (also IN and NOT IN), source_path, version_number and tags;
// order_by name, version_number, creation_timestamp, last_updated_timestamp.
var ModelVersions = &Kind{
	name:      "model versions",
	typeWords: taggedTypeWords,
	keyed:     map[Type]rule{Tag: {ops: stringOps}},
	fields: map[Type]map[string]field{
		Attribute: fields([]field{
			{key: "name", rule: rule{ops: stringOps}, filterable: true, orderable: true},
			{key: "run_id", rule: rule{ops: listOps}, filterable: true},
			{key: "source_path", rule: rule{ops: stringOps}, filterable: true},
			{key: "version_number", rule: rule{ops: numericOps, numeric: true}, filterable: true, orderable: true},
			{key: "creation_timestamp", rule: rule{ops: numericOps, numeric: true}, orderable: true},
			{key: "last_updated_timestamp", rule: rule{ops: numericOps, numeric: true}, orderable: true},
		}, map[string]string{"timestamp": "last_updated_timestamp"}),
	},
}

// Gates is an approval policy's gate: the run search language (which
// approvals.ParseGate narrows to metrics) plus importance.<feature> (also
// importances.<feature>), a feature's global importance in the version's
// explanation (explanation.json), compared as a number like a metric.
var Gates = gatesKind()

func gatesKind() *Kind {
	k := *Runs
	k.name = "gates"
	k.typeWords = map[string]Type{"importance": Importance, "importances": Importance}
	for w, t := range Runs.typeWords {
		k.typeWords[w] = t
	}
	k.keyed = map[Type]rule{Importance: {ops: numericOps, numeric: true}}
	for t, r := range Runs.keyed {
		k.keyed[t] = r
	}
	return &k
}
