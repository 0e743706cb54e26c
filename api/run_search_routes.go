package api

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/maestro-ml/maestro/filter"
	"github.com/maestro-ml/maestro/projections"
)

// Run and experiment search on Maestro's own API: MLflow's filter language
// (package filter) over the runs of a project's experiments
// (POST …/runs:search, a query with a body: it stores nothing) and, with
// ?filter= or ?order_by=, over its experiments (GET …/experiments). A
// malformed filter or order_by is a 400 whose detail names the position
// ("filter: at position 17: …", "order_by[1]: at position 3: …").

// Run search bounds beyond the projection's: a body carries a page token,
// which holds the sort values of the last run (up to 1 MiB for ten long
// tag values; projections.SearchRuns).
const (
	runSearchMaxBody       = 2 << 20
	defaultRunSearchPage   = 100
	maxRunSearchPageToken  = 1 << 20
	maxExperimentPageToken = 8 << 10
)

// runSearchRequest is the body of POST …/runs:search.
type runSearchRequest struct {
	ExperimentIDs []string         `json:"experiment_ids"`
	Filter        string           `json:"filter"`
	OrderBy       []string         `json:"order_by"`
	View          projections.View `json:"view"`
	MaxResults    *int             `json:"max_results"`
	PageToken     string           `json:"page_token"`
}

// runSearchQuery is the decoded and checked search (the body is read with
// the parameters: a malformed search is refused before anything is read).
type runSearchQuery struct {
	s projections.RunSearch
}

func (q *runSearchQuery) readParams(r *http.Request) error {
	var req runSearchRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	return q.set(req)
}

// set checks req and makes it the query (the web UI's runs table sends a
// search from a page's query string, not a body).
func (q *runSearchQuery) set(req runSearchRequest) error {
	if len(req.ExperimentIDs) > projections.MaxSearchExperiments {
		return problem("validation-failed", "experiment_ids holds at most "+strconv.Itoa(projections.MaxSearchExperiments)+" ids")
	}
	view, err := searchView(req.View)
	if err != nil {
		return err
	}
	size := defaultRunSearchPage
	if req.MaxResults != nil {
		if size = *req.MaxResults; size < 1 || size > projections.MaxSearchResults {
			return problem("validation-failed", "max_results must be between 1 and "+strconv.Itoa(projections.MaxSearchResults))
		}
	}
	if len(req.PageToken) > maxRunSearchPageToken {
		return problem("invalid-page-token", "use the next_page_token of a previous response")
	}
	if err := checkSearch(filter.Runs, req.Filter, req.OrderBy); err != nil {
		return err
	}
	q.s = projections.RunSearch{ExperimentIDs: req.ExperimentIDs, Filter: req.Filter, OrderBy: req.OrderBy, View: view,
		MaxResults: size, PageToken: req.PageToken}
	return nil
}

// searchView is a search's view: active unless said.
func searchView(v projections.View) (projections.View, error) {
	switch v {
	case "":
		return projections.ViewActive, nil
	case projections.ViewActive, projections.ViewDeleted, projections.ViewAll:
		return v, nil
	}
	return "", problem("validation-failed", "view must be active, deleted or all")
}

// checkSearch parses a filter and order_by for kind, so that a malformed
// one is refused with the other malformed requests, before the project is
// looked up.
func checkSearch(kind *filter.Kind, f string, orderBy []string) error {
	if _, err := filter.Parse(kind, f); err != nil {
		return searchError(err)
	}
	_, err := filter.ParseOrderBy(kind, orderBy)
	return searchError(err)
}

// searchError maps what a search refuses to problems: a filter or order_by
// error (with its position) and exceeded bounds are 400s, a foreign or
// unknown experiment 404, a token of another search invalid-page-token.
func searchError(err error) error {
	var fe *filter.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return problem("validation-failed", fe.Error())
	case errors.Is(err, projections.ErrInvalidSearch):
		return problem("validation-failed", err.Error())
	case errors.Is(err, projections.ErrNotFound):
		return problem("not-found", "experiment not found")
	}
	return pageError(err)
}

func (s *Server) searchRuns(c *call, q runSearchQuery) (RunPage, error) {
	proj, err := s.readableProject(c.r)
	if err != nil {
		return RunPage{}, err
	}
	page, err := s.deps.Queries.SearchRuns(c.ctx, proj.ID, q.s)
	return page, searchError(err)
}

// experimentSearchQuery is ?filter= and ?order_by= (repeated) of the
// experiment list; set says either was given.
type experimentSearchQuery struct {
	set     bool
	filter  string
	orderBy []string
}

func (q *experimentSearchQuery) readParams(r *http.Request) error {
	v := r.URL.Query()
	q.filter, q.orderBy = v.Get("filter"), v["order_by"]
	q.set = q.filter != "" || len(q.orderBy) > 0
	if !q.set {
		return nil
	}
	if len(v.Get("page_token")) > maxExperimentPageToken {
		return problem("invalid-page-token", "use the next_page_token of a previous response")
	}
	return checkSearch(filter.Experiments, q.filter, q.orderBy)
}

// searchExperiments is the experiment list with a filter or an order.
func (s *Server) searchExperiments(c *call, projectID string, q experimentSearchQuery, view projections.View, token string, size int) (ExperimentPage, error) {
	page, err := s.deps.Queries.SearchExperiments(c.ctx, projectID, projections.ExperimentSearch{Filter: q.filter, OrderBy: q.orderBy,
		View: view, MaxResults: size, PageToken: token})
	return page, searchError(err)
}
