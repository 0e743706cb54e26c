package filter

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Bounds of order_by: entries, and bytes per entry (a key is at most 250
// characters, so 2 KiB holds any key, its type and quotes).
const (
	MaxOrderBy      = 10
	maxOrderByBytes = 2048
)

// OrderKey is one order_by entry: <identifier> [ASC|DESC].
type OrderKey struct {
	Type Type
	// Key is the key as written, or a field's canonical key.
	Key  string
	Desc bool
}

// String is the entry in canonical form (direction always written).
func (o OrderKey) String() string {
	if o.Desc {
		return identString(o.Type, o.Key) + " DESC"
	}
	return identString(o.Type, o.Key) + " ASC"
}

// ParseOrderBy parses order_by entries for kind k: each an identifier as in
// a filter, then ASC (the default) or DESC in any case. A field named twice
// is refused, as MLflow refuses it. Errors are *Error with OrderBy set and
// Entry the index of the entry.
func ParseOrderBy(k *Kind, entries []string) ([]OrderKey, error) {
	if len(entries) > MaxOrderBy {
		return nil, &Error{OrderBy: true, Entry: MaxOrderBy, Pos: 1, Msg: fmt.Sprintf("order_by has at most %d entries", MaxOrderBy)}
	}
	out := make([]OrderKey, 0, len(entries))
	seen := make(map[OrderKey]bool, len(entries))
	for i, s := range entries {
		if len(s) > maxOrderByBytes {
			return nil, &Error{OrderBy: true, Entry: i, Pos: utf8.RuneCountInString(s[:maxOrderByBytes]) + 1,
				Msg: fmt.Sprintf("an order_by entry is at most %d bytes", maxOrderByBytes)}
		}
		l, err := newLexer(s)
		if err != nil {
			e := err.(*Error)
			e.OrderBy, e.Entry, e.Msg = true, i, strings.Replace(e.Msg, "the filter", "the entry", 1)
			return nil, e
		}
		l.orderBy, l.entry = true, i
		p := &parser{l: l, k: k}
		o, err := p.orderKey()
		if err != nil {
			return nil, err
		}
		field := OrderKey{Type: o.Type, Key: o.Key}
		if seen[field] {
			return nil, l.errAt(1, "`order_by` contains duplicate fields: "+identString(o.Type, o.Key))
		}
		seen[field] = true
		out = append(out, o)
	}
	return out, nil
}

func (p *parser) orderKey() (OrderKey, error) {
	l := p.l
	l.skipSpace()
	if l.eof() {
		return OrderKey{}, l.errAt(l.pos, "the order_by entry is empty")
	}
	id, err := p.identifier()
	if err != nil {
		return OrderKey{}, err
	}
	if _, keyed := p.k.keyed[id.typ]; keyed {
		if !p.k.orderTypes[id.typ] {
			return OrderKey{}, l.errAt(id.typePos, fmt.Sprintf("%s cannot be ordered by %s", p.k.name, id.typ))
		}
	} else if p.k.validKeys(id.typ, true) == "" {
		return OrderKey{}, l.errAt(id.typePos, fmt.Sprintf("%s cannot be ordered by %s", p.k.name, id.typ))
	} else {
		f, ok := p.k.fields[id.typ][id.key]
		if !ok || !f.orderable {
			return OrderKey{}, l.errAt(id.keyPos, fmt.Sprintf("invalid order_by %s key '%s' for %s; valid keys are %s",
				fieldWord(id.typ), id.key, p.k.name, p.k.validKeys(id.typ, true)))
		}
		id.key = f.key
	}
	o := OrderKey{Type: id.typ, Key: id.key}
	l.skipSpace()
	if l.eof() {
		return o, nil
	}
	at := l.pos
	switch w := l.word(); strings.ToUpper(w) {
	case "ASC":
	case "DESC":
		o.Desc = true
	case "":
		return o, l.errAt(at, l.unexpected("ASC or DESC"))
	default:
		return o, l.errAt(at, fmt.Sprintf("expected ASC or DESC, found '%s'", w))
	}
	l.skipSpace()
	if !l.eof() {
		return o, l.errAt(l.pos, l.unexpected("the end of the entry"))
	}
	return o, nil
}
