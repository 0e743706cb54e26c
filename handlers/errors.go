// Package handlers holds the write side: deciders that turn state and a
// command into events, the repository that loads aggregate state from the
// event store, and the optimistic append loop around them.
package handlers

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies a command failure; the API maps each kind to one HTTP
// status in one place.
type Kind int

// Failure kinds.
const (
	Invalid Kind = iota + 1
	NotFound
	Conflict
	Forbidden
	Unauthenticated
	Throttled
	Unavailable
)

// Error is a typed command failure with a stable code (the problem type slug)
// and a detail safe to show to the caller.
type Error struct {
	Kind       Kind
	Code       string
	Detail     string
	RetryAfter time.Duration // for Throttled
}

func (e *Error) Error() string { return e.Code + ": " + e.Detail }

// Errorf builds a typed error.
func Errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Detail: fmt.Sprintf(format, args...)}
}

// AsError extracts a typed error from err's chain.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
