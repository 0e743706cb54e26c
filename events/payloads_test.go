package events

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Every catalogued type has a data struct in payloads (the contract is
// generated from it), and payloads names nothing outside the catalogue.
func TestEveryCatalogedTypeHasAPayload(t *testing.T) {
	for _, ty := range Types() {
		rt, ok := PayloadOf(ty)
		if !ok {
			t.Errorf("event type %s is in the catalogue but has no data struct in events/payloads.go: add it there", ty)
			continue
		}
		if rt.Kind() != reflect.Struct || !strings.HasSuffix(rt.Name(), "Data") {
			t.Errorf("payload of %s is %v, want a struct named XxxData", ty, rt)
		}
	}
	types := Types()
	for ty := range payloads {
		if !slices.Contains(types, ty) {
			t.Errorf("events/payloads.go names %s, which is not in the catalogue", ty)
		}
	}
}

// Headers lists exactly the headers ToMsg sets on a full envelope.
func TestHeadersAreWhatToMsgSends(t *testing.T) {
	e, err := New(Meta{Actor: Actor{Kind: ActorUser, ID: "u1"}, CausationID: "c1"}, Subject(AggUser, "u1"), UserDeactivated, 0, UserActivationData{UserID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	m := ToMsg(e)
	var documented []string
	for _, h := range Headers() {
		documented = append(documented, h.Name)
		if m.Header.Get(h.Name) == "" {
			t.Errorf("documented header %s is not set by ToMsg", h.Name)
		}
		if h.Const != "" && m.Header.Get(h.Name) != h.Const {
			t.Errorf("header %s = %q, documented as always %q", h.Name, m.Header.Get(h.Name), h.Const)
		}
	}
	for name := range m.Header {
		if !slices.Contains(documented, name) {
			t.Errorf("ToMsg sets header %s, which Headers() does not document", name)
		}
	}
}
