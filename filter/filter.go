// Package filter parses MLflow's search filter language and order_by
// entries, for run, experiment, registered-model and model-version search,
// and evaluates a parsed filter over in-memory values (metric gates).
//
// A filter is a conjunction of comparisons joined by AND (any case):
//
//	metrics.auc >= 0.9 AND params.optimizer = 'adam' AND tags."data set" LIKE '2025-%'
//
// A comparison is <identifier> <operator> <value>. The identifier is
// [<type>.]<key>: the type a word such as metrics, params, tags or
// attributes (a bare key is an attribute), the key a bare word (letters,
// digits, _ and .) or any text in double quotes or backticks. Strings are
// quoted with ' or " (a quote is doubled inside), numbers are not; IN and
// NOT IN take a parenthesized list of strings. OR, grouping parentheses and
// NOT other than NOT IN are refused, as MLflow refuses them. A Kind says
// which types, attribute keys and operators an entity has; every check is
// made while parsing, and an error names the 1-based character position
// where it was found.
//
// The package knows nothing of SQL or storage: projections translates an
// Expr to parameterized SQL, and Expr.Match evaluates one in memory.
package filter

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Bounds of a filter: every one of them is refused beyond, so a filter
// cannot make a query arbitrarily large.
const (
	MaxFilterBytes = 4096 // bytes of a filter string
	MaxClauses     = 20   // comparisons joined by AND: each is a subquery to plan (50 with 10 order keys took Postgres 1.6 s to plan; 20, 0.35 s)
	MaxListItems   = 1000 // strings in one IN list
)

// Error is a filter or order_by entry that does not parse, or names what
// its kind does not have. Pos is the 1-based character (not byte) position
// in the filter or entry where the problem was found; one past the last
// character for something missing at the end.
type Error struct {
	// OrderBy marks an error in an order_by entry, Entry its index.
	OrderBy bool
	Entry   int
	Pos     int
	Msg     string
}

func (e *Error) Error() string {
	if e.OrderBy {
		return fmt.Sprintf("order_by[%d]: at position %d: %s", e.Entry, e.Pos, e.Msg)
	}
	return fmt.Sprintf("filter: at position %d: %s", e.Pos, e.Msg)
}

// ValueKind says which of a Value's fields holds it.
type ValueKind uint8

// Value kinds.
const (
	Number ValueKind = iota + 1
	String
	List
)

// Value is a comparison's right-hand side.
type Value struct {
	Kind ValueKind
	// Num is a Number's value; Text its literal as written (kept so integer
	// times beyond 2^53 stay exact and String reproduces the filter).
	Num  float64
	Text string   // a String's text (unquoted), or a Number's literal
	List []string // a List's strings
}

// Int is a Number that is an integer literal, as an int64.
func (v Value) Int() (int64, bool) {
	if v.Kind != Number {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(v.Text, "+"), 10, 64)
	return n, err == nil
}

// Comparison is one <identifier> <op> <value> of a filter.
type Comparison struct {
	Type Type
	// Key is the key as written (unquoted), or an attribute's or dataset
	// field's canonical key ("run name" → run_name, created → start_time).
	Key   string
	Op    Op
	Value Value
	// Pos and ValuePos are the 1-based character positions of the
	// identifier and of the value, for errors found after parsing (a
	// storage that cannot serve a key refuses it at Pos).
	Pos, ValuePos int
}

// Expr is a parsed filter: comparisons that must all hold. The empty Expr
// matches everything.
type Expr struct {
	Clauses []Comparison
}

// Errorf is an *Error at the comparison's identifier, for a caller that
// cannot serve what the filter asks (an attribute it does not store).
func (c Comparison) Errorf(format string, args ...any) *Error {
	return &Error{Pos: c.Pos, Msg: fmt.Sprintf(format, args...)}
}

// Parse parses filter for kind k. An empty (or blank) filter is the empty
// Expr. Errors are *Error.
func Parse(k *Kind, filter string) (Expr, error) {
	if len(filter) > MaxFilterBytes {
		return Expr{}, &Error{Pos: utf8.RuneCountInString(filter[:MaxFilterBytes]) + 1,
			Msg: fmt.Sprintf("the filter is longer than %d bytes", MaxFilterBytes)}
	}
	l, err := newLexer(filter)
	if err != nil {
		return Expr{}, err
	}
	p := &parser{l: l, k: k}
	e, err := p.filter()
	if err != nil {
		return Expr{}, err
	}
	return e, nil
}

// parser reads one filter or order_by entry.
type parser struct {
	l *lexer
	k *Kind
}

func (p *parser) filter() (Expr, error) {
	var e Expr
	p.l.skipSpace()
	if p.l.eof() {
		return e, nil
	}
	for {
		if len(e.Clauses) == MaxClauses {
			return e, p.l.errAt(p.l.pos, fmt.Sprintf("a filter has at most %d comparisons", MaxClauses))
		}
		c, err := p.comparison()
		if err != nil {
			return e, err
		}
		e.Clauses = append(e.Clauses, c)
		p.l.skipSpace()
		if p.l.eof() {
			return e, nil
		}
		at := p.l.pos
		switch w := p.l.word(); strings.ToUpper(w) {
		case "AND":
			p.l.skipSpace()
			if p.l.eof() {
				return e, p.l.errAt(p.l.pos, "expected a comparison after AND")
			}
		case "OR":
			return e, p.l.errAt(at, "OR is not supported: a filter is comparisons joined by AND")
		case "":
			return e, p.l.errAt(at, p.l.unexpected("AND"))
		default:
			return e, p.l.errAt(at, fmt.Sprintf("expected AND, found '%s'", w))
		}
	}
}

// comparison reads <identifier> <op> <value> and checks it against the kind.
func (p *parser) comparison() (Comparison, error) {
	l := p.l
	start := l.pos
	if r, ok := l.peek(); ok && r == '(' {
		return Comparison{}, l.errAt(start, "parentheses are not supported: a filter is comparisons joined by AND")
	}
	if w, n := l.peekWord(); strings.EqualFold(w, "NOT") && n > 0 {
		return Comparison{}, l.errAt(start, "NOT is only supported as NOT IN")
	}
	id, err := p.identifier()
	if err != nil {
		return Comparison{}, err
	}
	r, err := p.filterRule(&id)
	if err != nil {
		return Comparison{}, err
	}
	c := Comparison{Type: id.typ, Key: id.key, Pos: start}
	l.skipSpace()
	opPos := l.pos
	if c.Op, err = p.operator(); err != nil {
		return c, err
	}
	if !containsOp(r.ops, c.Op) {
		return c, l.errAt(opPos, fmt.Sprintf("invalid comparator '%s' for %s; allowed: %s", c.Op, id.describe(), joinOps(r.ops)))
	}
	l.skipSpace()
	c.ValuePos = l.pos
	if c.Value, err = p.value(c.Op == In || c.Op == NotIn); err != nil {
		return c, err
	}
	switch {
	case r.numeric && c.Value.Kind != Number:
		return c, l.errAt(c.ValuePos, fmt.Sprintf("expected a number for %s", id.describe()))
	case !r.numeric && c.Value.Kind == Number:
		return c, l.errAt(c.ValuePos, fmt.Sprintf("the value of %s must be a quoted string: use single or double quotes", id.describe()))
	case (c.Op == Like || c.Op == ILike) && trailingEscape(c.Value.Text):
		return c, l.errAt(c.ValuePos, "a LIKE pattern must not end with the escape character \\")
	}
	return c, nil
}

// ident is a parsed identifier: its type and key (canonical for fields).
type ident struct {
	typ     Type
	key     string
	typePos int // position of the type word, or of the key if bare
	keyPos  int
	word    string // the type word as written ("" if bare)
}

func (id ident) describe() string {
	switch id.typ {
	case Attribute:
		return "attribute '" + id.key + "'"
	case Metric:
		return "metric '" + id.key + "'"
	case Param:
		return "param '" + id.key + "'"
	case Tag:
		return "tag '" + id.key + "'"
	case Importance:
		return "importance of feature '" + id.key + "'"
	}
	return "dataset field '" + id.key + "'"
}

// identifier reads [<type>.]<key> and resolves the type word and, for
// fields, the key's alias.
func (p *parser) identifier() (ident, error) {
	l := p.l
	id := ident{typePos: l.pos}
	r, ok := l.peek()
	if !ok {
		return id, l.errAt(l.pos, "expected an identifier such as metrics.<key>, params.<key>, tags.<key> or an attribute")
	}
	var key string
	if r == '"' || r == '`' {
		k, err := l.quotedKey()
		if err != nil {
			return id, err
		}
		key, id.keyPos = k, id.typePos
	} else {
		w := l.bareWord(false)
		if w == "" {
			return id, l.errAt(l.pos, l.unexpected("an identifier"))
		}
		if r, ok := l.peek(); ok && r == '.' {
			id.word = w
			l.next()
			id.keyPos = l.pos
			if r, ok := l.peek(); ok && (r == '"' || r == '`') {
				k, err := l.quotedKey()
				if err != nil {
					return id, err
				}
				key = k
			} else if key = l.bareWord(true); key == "" {
				return id, l.errAt(l.pos, "expected a key after '"+w+".'")
			}
		} else {
			key, id.keyPos = w, id.typePos
		}
	}
	if key == "" {
		return id, l.errAt(id.keyPos, "the key is empty")
	}
	id.typ = Attribute
	if id.word != "" {
		t, ok := p.k.typeWords[strings.ToLower(id.word)]
		if !ok {
			return id, l.errAt(id.typePos, fmt.Sprintf("invalid entity type '%s'; valid types for %s are %s", id.word, p.k.name, p.k.validTypes()))
		}
		id.typ = t
	}
	id.key = key
	return id, nil
}

// filterRule is the rule of an identifier in a filter (resolving a field's
// alias in id), or the error that the kind has no such key.
func (p *parser) filterRule(id *ident) (rule, error) {
	if r, ok := p.k.keyed[id.typ]; ok {
		return r, nil
	}
	f, ok := p.k.fields[id.typ][id.key]
	if !ok || !f.filterable {
		return rule{}, p.l.errAt(id.keyPos, fmt.Sprintf("invalid %s key '%s' for %s; valid keys are %s",
			fieldWord(id.typ), id.key, p.k.name, p.k.validKeys(id.typ, false)))
	}
	id.key = f.key
	return f.rule, nil
}

func fieldWord(t Type) string {
	if t == Dataset {
		return "dataset"
	}
	return "attribute"
}

// operator reads a comparison operator.
func (p *parser) operator() (Op, error) {
	l := p.l
	at := l.pos
	r, ok := l.peek()
	if !ok {
		return "", l.errAt(at, "expected a comparator (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN)")
	}
	if strings.ContainsRune("=!<>", r) {
		sym := string(r)
		l.next()
		if r2, ok := l.peek(); ok && strings.ContainsRune("=<>", r2) {
			sym += string(r2)
			l.next()
		}
		switch Op(sym) {
		case Eq, Ne, Lt, Le, Gt, Ge:
			return Op(sym), nil
		case "<>":
			return "", l.errAt(at, "invalid comparator '<>': use !=")
		}
		return "", l.errAt(at, fmt.Sprintf("invalid comparator '%s'", sym))
	}
	w := l.word()
	switch strings.ToUpper(w) {
	case "LIKE":
		return Like, nil
	case "ILIKE":
		return ILike, nil
	case "IN":
		return In, nil
	case "NOT":
		l.skipSpace()
		if w2, _ := l.peekWord(); strings.EqualFold(w2, "IN") {
			l.word()
			return NotIn, nil
		}
		return "", l.errAt(at, "NOT is only supported as NOT IN")
	case "":
		return "", l.errAt(at, l.unexpected("a comparator"))
	}
	return "", l.errAt(at, fmt.Sprintf("invalid comparator '%s'", w))
}

// value reads a number, a quoted string, or (list) a parenthesized list of
// quoted strings.
func (p *parser) value(list bool) (Value, error) {
	l := p.l
	at := l.pos
	r, ok := l.peek()
	switch {
	case !ok:
		return Value{}, l.errAt(at, "expected a value")
	case list && r != '(':
		return Value{}, l.errAt(at, "IN and NOT IN take a parenthesized list of quoted strings, e.g. ('a', 'b')")
	case r == '(' && !list:
		return Value{}, l.errAt(at, "a list is only allowed after IN or NOT IN")
	case r == '(':
		return l.list()
	case r == '\'' || r == '"':
		s, err := l.quoted()
		return Value{Kind: String, Text: s}, err
	case r == '`':
		return Value{}, l.errAt(at, "a string value must be quoted with single or double quotes, not backticks")
	case r == '-' || r == '+' || r == '.' || isDigit(r):
		return l.number()
	}
	w := l.bareWord(true)
	if w == "" {
		return Value{}, l.errAt(at, l.unexpected("a value"))
	}
	return Value{}, l.errAt(at, fmt.Sprintf("the value %s is not quoted: use single or double quotes for strings", w))
}

// trailingEscape reports whether a LIKE pattern ends with an escape
// character that escapes nothing (PostgreSQL refuses such a pattern).
func trailingEscape(p string) bool {
	n := 0
	for i := len(p) - 1; i >= 0 && p[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

func containsOp(ops []Op, op Op) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}

func joinOps(ops []Op) string {
	s := make([]string, len(ops))
	for i, o := range ops {
		s[i] = string(o)
	}
	return strings.Join(s, ", ")
}

// ---- lexer ----

// lexer walks a filter's characters; positions are 1-based rune indexes.
type lexer struct {
	rs  []rune
	i   int // index into rs of the next rune
	pos int // i+1
	// orderBy, entry: errors belong to an order_by entry.
	orderBy bool
	entry   int
}

func newLexer(s string) (*lexer, error) {
	rs := make([]rune, 0, len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			return nil, &Error{Pos: len(rs) + 1, Msg: "the filter is not valid UTF-8"}
		}
		if r == 0 {
			return nil, &Error{Pos: len(rs) + 1, Msg: "the filter contains a NUL character"}
		}
		rs = append(rs, r)
		i += n
	}
	return &lexer{rs: rs, pos: 1}, nil
}

func (l *lexer) errAt(pos int, msg string) *Error {
	return &Error{OrderBy: l.orderBy, Entry: l.entry, Pos: pos, Msg: msg}
}

func (l *lexer) eof() bool { return l.i >= len(l.rs) }

func (l *lexer) peek() (rune, bool) {
	if l.eof() {
		return 0, false
	}
	return l.rs[l.i], true
}

func (l *lexer) next() {
	l.i++
	l.pos = l.i + 1
}

func isSpace(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }

func isDigit(r rune) bool { return r >= '0' && r <= '9' }

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func (l *lexer) skipSpace() {
	for !l.eof() && isSpace(l.rs[l.i]) {
		l.next()
	}
}

// unexpected describes the character at the lexer's position when want
// was expected.
func (l *lexer) unexpected(want string) string {
	r, ok := l.peek()
	if !ok {
		return "expected " + want + ", found the end"
	}
	return fmt.Sprintf("expected %s, found %q", want, r)
}

// word reads letters, digits and underscores (a keyword).
func (l *lexer) word() string {
	start := l.i
	for !l.eof() && isWordRune(l.rs[l.i]) {
		l.next()
	}
	return string(l.rs[start:l.i])
}

// peekWord is the keyword at the lexer's position, without moving.
func (l *lexer) peekWord() (string, int) {
	j := l.i
	for j < len(l.rs) && isWordRune(l.rs[j]) {
		j++
	}
	return string(l.rs[l.i:j]), j - l.i
}

// bareWord reads an unquoted key: letters, digits, underscores and, with
// dots, periods (a key after "<type>." may hold them: metrics.train.loss).
func (l *lexer) bareWord(dots bool) string {
	start := l.i
	for !l.eof() && (isWordRune(l.rs[l.i]) || (dots && l.rs[l.i] == '.')) {
		l.next()
	}
	return string(l.rs[start:l.i])
}

// quotedKey reads a key in double quotes or backticks (no escapes, as in
// MLflow: a key holding one quote character is written in the other).
func (l *lexer) quotedKey() (string, error) {
	at := l.pos
	q := l.rs[l.i]
	l.next()
	start := l.i
	for !l.eof() && l.rs[l.i] != q {
		l.next()
	}
	if l.eof() {
		return "", l.errAt(at, fmt.Sprintf("unterminated quoted key: missing closing %c", q))
	}
	s := string(l.rs[start:l.i])
	l.next()
	return s, nil
}

// quoted reads a string in single or double quotes; inside, the quote
// character is written twice, as in SQL.
func (l *lexer) quoted() (string, error) {
	at := l.pos
	q := l.rs[l.i]
	l.next()
	var b strings.Builder
	for {
		if l.eof() {
			return "", l.errAt(at, fmt.Sprintf("unterminated string: missing closing %c", q))
		}
		r := l.rs[l.i]
		l.next()
		if r == q {
			if r2, ok := l.peek(); ok && r2 == q {
				l.next()
			} else {
				return b.String(), nil
			}
		}
		b.WriteRune(r)
	}
}

// number reads [+-](digits[.digits]|.digits)[e[+-]digits].
func (l *lexer) number() (Value, error) {
	at, start := l.pos, l.i
	if r := l.rs[l.i]; r == '-' || r == '+' {
		l.next()
	}
	digits := 0
	for !l.eof() && isDigit(l.rs[l.i]) {
		l.next()
		digits++
	}
	if !l.eof() && l.rs[l.i] == '.' {
		l.next()
		for !l.eof() && isDigit(l.rs[l.i]) {
			l.next()
			digits++
		}
	}
	if digits > 0 && !l.eof() && (l.rs[l.i] == 'e' || l.rs[l.i] == 'E') {
		l.next()
		if !l.eof() && (l.rs[l.i] == '-' || l.rs[l.i] == '+') {
			l.next()
		}
		exp := 0
		for !l.eof() && isDigit(l.rs[l.i]) {
			l.next()
			exp++
		}
		if exp == 0 {
			digits = 0
		}
	}
	if digits == 0 || (!l.eof() && !isSpace(l.rs[l.i]) && l.rs[l.i] != ')' && l.rs[l.i] != ',') {
		for !l.eof() && !isSpace(l.rs[l.i]) && l.rs[l.i] != ')' && l.rs[l.i] != ',' {
			l.next()
		}
		return Value{}, l.errAt(at, fmt.Sprintf("invalid number %s", string(l.rs[start:l.i])))
	}
	text := string(l.rs[start:l.i])
	f, err := strconv.ParseFloat(text, 64)
	if err != nil || math.IsInf(f, 0) {
		return Value{}, l.errAt(at, fmt.Sprintf("the number %s is out of range", text))
	}
	return Value{Kind: Number, Num: f, Text: text}, nil
}

// list reads ('a', "b", ...).
func (l *lexer) list() (Value, error) {
	v := Value{Kind: List, List: []string{}}
	l.next() // (
	for {
		l.skipSpace()
		at := l.pos
		r, ok := l.peek()
		switch {
		case !ok:
			return v, l.errAt(at, "unterminated list: missing )")
		case r == ')' && len(v.List) == 0:
			return v, l.errAt(at, "the list is empty")
		case r != '\'' && r != '"':
			return v, l.errAt(at, "a list holds quoted strings: "+l.unexpected("a quoted string"))
		}
		if len(v.List) == MaxListItems {
			return v, l.errAt(at, fmt.Sprintf("a list holds at most %d strings", MaxListItems))
		}
		s, err := l.quoted()
		if err != nil {
			return v, err
		}
		v.List = append(v.List, s)
		l.skipSpace()
		at = l.pos
		r, ok = l.peek()
		switch {
		case !ok:
			return v, l.errAt(at, "unterminated list: missing )")
		case r == ',':
			l.next()
		case r == ')':
			l.next()
			return v, nil
		default:
			return v, l.errAt(at, l.unexpected("',' or ')'"))
		}
	}
}

// ---- canonical text ----

// String is e in canonical form: types by their canonical prefix, keys
// quoted only when they must be, operators upper-case, strings in single
// quotes. Parse of the result gives e again (positions aside).
func (e Expr) String() string {
	var b strings.Builder
	for i, c := range e.Clauses {
		if i > 0 {
			b.WriteString(" AND ")
		}
		b.WriteString(c.String())
	}
	return b.String()
}

// String is the comparison in canonical form.
func (c Comparison) String() string {
	return identString(c.Type, c.Key) + " " + string(c.Op) + " " + c.Value.String()
}

// String is the value as a filter writes it.
func (v Value) String() string {
	switch v.Kind {
	case Number:
		return v.Text
	case String:
		return quote(v.Text)
	case List:
		s := make([]string, len(v.List))
		for i, x := range v.List {
			s[i] = quote(x)
		}
		return "(" + strings.Join(s, ", ") + ")"
	}
	return ""
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// identString writes <type>.<key>, quoting the key unless it is a bare word.
func identString(t Type, key string) string {
	bare := key != ""
	for _, r := range key {
		if !isWordRune(r) && r != '.' {
			bare = false
			break
		}
	}
	if !bare {
		if strings.ContainsRune(key, '`') {
			key = `"` + key + `"`
		} else {
			key = "`" + key + "`"
		}
	}
	return t.String() + "." + key
}
