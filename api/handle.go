package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/authz"
	"github.com/maestro-ml/maestro/events"
	"github.com/maestro-ml/maestro/projections"
)

// Most routes have one shape: read the path and query parameters, decode
// and check the body, call the service (or read the projections), answer.
// command and query are that shape written once, so a route is its input
// type, one function and a row in the route table, and every route takes
// the steps in the same order: that order decides which problem a request
// with more than one thing wrong gets, so it must not vary by route.

// none is the input of a route that reads nothing from its request but the
// references its services resolve (call.param), and the answer of a
// command that has none (the bare status, typically 204).
type none struct{}

// paramReader is a route input that reads path or query parameters. It
// runs before the body is decoded and before a query waits for a minimum
// sequence: a request for what cannot exist is a 404 whatever its body, and
// a malformed query is refused at once instead of after the wait.
type paramReader interface {
	readParams(r *http.Request) error
}

// validator is a command body with rules beyond its JSON shape, checked
// after decoding and before the service is called. It may normalise what
// it checks, which is why it runs on the decoded value itself.
type validator interface {
	validate() error
}

// call is what a route's function gets besides its input: the request's
// context, caller and command metadata, and the raw request for what the
// shared read-side helpers (readableProject and friends) need from it.
type call struct {
	ctx  context.Context
	who  authz.Principal
	meta events.Meta
	r    *http.Request
	w    http.ResponseWriter
}

// newCall gathers a request's call; the principal is set by authenticate
// (the zero one on public routes).
func newCall(w http.ResponseWriter, r *http.Request) *call {
	p, _ := principal(r.Context())
	return &call{ctx: r.Context(), who: p, meta: meta(r), r: r, w: w}
}

// param is the path parameter name as the client sent it: commands pass
// references on to the services, which resolve and refuse them themselves
// (so reads and writes accept exactly the same references).
func (c *call) param(name string) string { return chi.URLParam(c.r, name) }

// locate sets the Location of what a command created. It writes the header
// at once, so it belongs after the service call has succeeded.
func (c *call) locate(url string) { c.w.Header().Set("Location", url) }

// routeHandler is Route.handle: an error it returns becomes the problem
// response (Server.endpoint), so the adapters below just return theirs.
type routeHandler = func(w http.ResponseWriter, r *http.Request) error

// command adapts a command with a JSON body to a route handler: it reads
// Req's parameters, decodes the body into Req and validates it, runs do,
// and answers status through respondCommand, which reports the sequence and
// waits for the route's projections (read-your-writes).
func command[Req, Resp any](s *Server, status int, do func(c *call, req Req) (Resp, uint64, error)) routeHandler {
	return commandRoute(s, true, status, do)
}

// commandNoBody is command for a command that reads no body (DELETE, POST
// :restore): its input is its path parameters, and a body sent anyway is
// ignored, not refused, as it always was.
func commandNoBody[Req, Resp any](s *Server, status int, do func(c *call, req Req) (Resp, uint64, error)) routeHandler {
	return commandRoute(s, false, status, do)
}

// optionalBody is a command input whose body may be left out altogether
// (an approval's comment): an empty request is its zero value.
type optionalBody interface{ optionalBody() }

// emptyBody reports whether r has no body at all: none declared, or a
// chunked (HTTP/1.1) or HTTP/2 body that ends at once. A body it peeked
// into stays readable.
func emptyBody(r *http.Request) bool {
	if r.ContentLength >= 0 {
		return r.ContentLength == 0
	}
	br := bufio.NewReaderSize(r.Body, 16)
	_, err := br.Peek(1)
	r.Body = struct {
		io.Reader
		io.Closer
	}{br, r.Body}
	return errors.Is(err, io.EOF)
}

// commandRoute is command and commandNoBody; decode says whether there is
// a body. A Resp of none answers the bare status.
func commandRoute[Req, Resp any](s *Server, decode bool, status int, do func(c *call, req Req) (Resp, uint64, error)) routeHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req Req
		if err := fillParams(r, &req); err != nil {
			return err
		}
		if _, optional := any(&req).(optionalBody); decode && !(optional && emptyBody(r)) {
			if err := decodeJSON(r, &req); err != nil {
				return err
			}
			if v, ok := any(&req).(validator); ok {
				if err := v.validate(); err != nil {
					return err
				}
			}
		}
		resp, seq, err := do(newCall(w, r), req)
		if err != nil {
			return err
		}
		var body any = resp
		if _, empty := body.(none); empty {
			body = nil // respondCommand writes the bare status
		}
		s.respondCommand(w, r, status, seq, body)
		return nil
	}
}

// query adapts a read to a route handler: it reads In's parameters, waits
// for the client's minimum sequence (awaitMinSequence), runs read and
// answers 200 with its result.
func query[In, Resp any](s *Server, read func(c *call, in In) (Resp, error)) routeHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		var in In
		if err := fillParams(r, &in); err != nil {
			return err
		}
		if err := s.awaitMinSequence(r); err != nil {
			return err
		}
		resp, err := read(newCall(w, r), in)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, resp)
		return nil
	}
}

// fillParams fills the parameters of a route input that has any.
func fillParams[In any](r *http.Request, in *In) error {
	if pr, ok := any(in).(paramReader); ok {
		return pr.readParams(r)
	}
	return nil
}

// pageQuery is ?max_results= and ?page_token=, for embedding in the input
// of a list route.
type pageQuery struct {
	size  int
	token string
}

// readParams reads max_results (validated) and page_token (checked by the
// query that decodes it).
func (q *pageQuery) readParams(r *http.Request) (err error) {
	q.token = pageTokenParam(r)
	q.size, err = pageSize(r)
	return err
}

// pageOf maps a page of read-model rows to a page of responses; an API
// page type (ProjectPage, ...) is a conversion of the result. Items is
// never nil, so an empty page is "items": [], not null.
func pageOf[T, R any](page projections.Page[T], to func(T) R) projections.Page[R] {
	out := projections.Page[R]{Items: make([]R, 0, len(page.Items)), NextPageToken: page.NextPageToken}
	for _, it := range page.Items {
		out.Items = append(out.Items, to(it))
	}
	return out
}
