package api

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/projections"
)

// A run's artifacts: the same content-addressed store, streaming, digest
// check and Range downloads as a model version's (uploadArtifact,
// downloadArtifact), recorded by an event on the run's aggregate
// (maestro.run.artifact_recorded.v1) under tracking's rights: editors
// upload, viewers read. Reads of a deleted run's artifacts work, as reads
// of the run do; uploads to it are refused (409 run-deleted).

const runArtifactsBase = "/api/v1/projects/{project}/runs/{run}/artifacts"

func (s *Server) runArtifactRoutes() []Route {
	return s.artifactRouteSet(runArtifactsBase, query(s, s.listRunArtifacts), s.putRunArtifact, s.getRunArtifact)
}

// readableRun resolves {project} in the read model and checks that the run
// id is one of its runs; a run of another project, or of one the caller
// may not read, is a 404.
func (s *Server) readableRun(r *http.Request, id string) (projections.Project, error) {
	proj, err := s.readableProject(r)
	if err != nil {
		return proj, err
	}
	found, err := s.deps.Queries.RunInProject(r.Context(), proj.ID, id)
	if err == nil && !found {
		err = problem("not-found", "run not found")
	}
	return proj, err
}

func (s *Server) putRunArtifact(w http.ResponseWriter, r *http.Request) error {
	var ref runRef
	if err := ref.readParams(r); err != nil {
		return err
	}
	project := chi.URLParam(r, "project")
	p, _ := principal(r.Context())
	return s.uploadArtifact(w, r, func() error {
		return s.deps.Tracking.AuthorizeArtifactWrite(r.Context(), p, project, ref.run)
	}, func(art registry.Artifact) (registry.Artifact, bool, uint64, error) {
		run, replaced, seq, err := s.deps.Tracking.RecordArtifact(r.Context(), meta(r), p, project, ref.run, art)
		return run.Artifacts[art.Path], replaced, seq, err
	})
}

func (s *Server) getRunArtifact(w http.ResponseWriter, r *http.Request) error {
	var ref runRef
	if err := ref.readParams(r); err != nil {
		return err
	}
	return s.downloadArtifact(w, r, func(apath string) (projections.ArtifactEntry, error) {
		proj, err := s.readableRun(r, ref.run)
		if err != nil {
			return projections.ArtifactEntry{}, err
		}
		return s.deps.Queries.RunArtifact(r.Context(), proj.ID, ref.run, apath)
	})
}

// runArtifactsQuery is the list's paging, and ?path=: list that one
// directory level instead of every file.
type runArtifactsQuery struct {
	runRef
	pageQuery
	dir     string
	listDir bool
}

func (q *runArtifactsQuery) readParams(r *http.Request) error {
	if err := q.runRef.readParams(r); err != nil {
		return err
	}
	if err := q.pageQuery.readParams(r); err != nil {
		return err
	}
	values := r.URL.Query()
	if q.listDir = values.Has("path"); q.listDir {
		// "" and "/" are the root; "dir/" is "dir", as MLflow's clients send it.
		q.dir = strings.TrimSuffix(values.Get("path"), "/")
		if q.dir != "" && !registry.ValidArtifactPath(q.dir) {
			return problem("validation-failed", "path must be a directory of the run's artifacts: a relative path without '.', '..' or empty segments")
		}
	}
	return nil
}

// ArtifactDirectory is one directory level of a run's artifacts (GET
// .../runs/{run}/artifacts?path=), in MLflow's artifacts/list shape.
type ArtifactDirectory struct {
	Files         []FileInfo `json:"files"`
	NextPageToken string     `json:"next_page_token,omitempty"`
}

// FileInfo is an entry of a directory listing: a file, or a directory of
// files (is_dir, no size). Its path is run-relative ("dir/name").
type FileInfo struct {
	Path     string `json:"path"`
	IsDir    bool   `json:"is_dir"`
	FileSize *int64 `json:"file_size,omitempty"`
}

// listRunArtifacts answers an ArtifactList (every file, like a version's
// list) or, with ?path=, an ArtifactDirectory.
func (s *Server) listRunArtifacts(c *call, q runArtifactsQuery) (any, error) {
	proj, err := s.readableRun(c.r, q.run)
	if err != nil {
		return nil, err
	}
	if !q.listDir {
		page, err := s.deps.Queries.ListRunArtifacts(c.ctx, proj.ID, q.run, q.token, q.size)
		if err != nil {
			return nil, pageError(err)
		}
		return ArtifactList(pageOf(page, artifactFromProjection)), nil
	}
	page, err := s.deps.Queries.RunArtifactDirPage(c.ctx, proj.ID, q.run, q.dir, q.token, q.size)
	if err != nil {
		return nil, pageError(err)
	}
	dir := pageOf(page, func(a projections.ArtifactEntry) FileInfo {
		if a.IsDir {
			return FileInfo{Path: a.Path, IsDir: true}
		}
		return FileInfo{Path: a.Path, FileSize: &a.Size}
	})
	return ArtifactDirectory{Files: dir.Items, NextPageToken: dir.NextPageToken}, nil
}
