package api

import (
	"math"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/maestro-ml/maestro/handlers/registry"
	"github.com/maestro-ml/maestro/projections"
)

// MLflow's artifact RPCs over the artifacts Maestro records on runs and
// model versions: artifacts/list of the tracking service, and the
// mlflow-artifacts proxy (mlflow_artifacts.proto) that MLflow clients use
// when a run's artifact_uri is mlflow-artifacts:/<experiment>/<run>/artifacts
// (docs/MLFLOW_REFERENCE.md §4.4). The proxy's paths are
// <experiment>/<run>/artifacts/<path> for a run's files and
// models/<name>/versions/<version>/artifacts/<path> for a version's (what
// get-download-uri names when a version has no source); uploads go to runs
// only, as MLflow clients log models into runs. Bytes move through the same
// code as on Maestro's own API (storeArtifact, downloadArtifact): the same
// store, limits, digests and Range support. Artifacts are records of an
// immutable history, so the proxy has no DELETE (MLflow clients never call
// it unasked).
func (s *Server) mlflowArtifactRPCs() []mlflowRPC {
	maxBody := s.deps.ArtifactMaxBytes
	if maxBody < math.MaxInt64 {
		maxBody++ // the store, not the MaxBytesReader, notices an oversized upload
	}
	return []mlflowRPC{
		{method: "GET", path: "/mlflow/artifacts/list", handle: mlflowHandler(s, s.mlListArtifacts)},
		{method: "GET", path: "/mlflow-artifacts/artifacts", handle: mlflowHandler(s, s.mlProxyList)},
		{method: "GET", path: "/mlflow-artifacts/artifacts/*", timeout: artifactTransferTimeout, handle: s.mlProxyDownload},
		// Not a command route: the body is streamed, never buffered for an
		// idempotency record (as on Maestro's own artifact routes).
		{method: "PUT", path: "/mlflow-artifacts/artifacts/*", maxBody: maxBody, timeout: artifactTransferTimeout, handle: s.mlProxyUpload},
	}
}

// MLflowFileInfo is MLflow's FileInfo; is_dir is always sent (the Python
// client reads it unconditionally).
type MLflowFileInfo struct {
	Path     string `json:"path"`
	IsDir    bool   `json:"is_dir"`
	FileSize *int64 `json:"file_size,omitempty"`
}

func mlflowFiles(entries []projections.ArtifactEntry, name func(string) string) []MLflowFileInfo {
	files := make([]MLflowFileInfo, 0, len(entries))
	for _, e := range entries {
		f := MLflowFileInfo{Path: name(e.Path), IsDir: e.IsDir}
		if !e.IsDir {
			f.FileSize = &e.Size
		}
		files = append(files, f)
	}
	return files
}

// artifactDir is a directory of an artifact tree as a client names it: ""
// and "/" are the root, a trailing "/" is dropped.
func artifactDir(p string) (string, error) {
	p = strings.TrimSuffix(p, "/")
	if p != "" && !registry.ValidArtifactPath(p) {
		return "", mlflowProblem("INVALID_PARAMETER_VALUE", "Invalid path: "+strconv.Quote(p)+
			" must be a relative path without '.', '..' or empty segments")
	}
	return p, nil
}

type mlListArtifactsRequest struct {
	mlflowRunRef
	Path      string `json:"path"`
	PageToken string `json:"page_token"`
}

type mlListArtifactsResponse struct {
	RootURI       string           `json:"root_uri"`
	Files         []MLflowFileInfo `json:"files,omitempty"`
	NextPageToken string           `json:"next_page_token,omitempty"`
}

// mlListArtifacts is artifacts/list: one directory level of a run's
// artifacts, paths run-relative, a page at a time.
func (s *Server) mlListArtifacts(c *call, req mlListArtifactsRequest) (mlListArtifactsResponse, error) {
	dir, err := artifactDir(req.Path)
	if err != nil {
		return mlListArtifactsResponse{}, err
	}
	proj, err := s.mlflowReadable(c)
	if err != nil {
		return mlListArtifactsResponse{}, err
	}
	run, err := s.mlflowRunRow(c, proj, req.id())
	if err != nil {
		return mlListArtifactsResponse{}, err
	}
	page, err := s.deps.Queries.RunArtifactDirPage(c.ctx, proj.ID, run.ID, dir, req.PageToken, runArtifactDirPageSize)
	if err != nil {
		return mlListArtifactsResponse{}, pageError(err)
	}
	return mlListArtifactsResponse{RootURI: mlflowRunArtifactURI(run), NextPageToken: page.NextPageToken,
		Files: mlflowFiles(page.Items, func(p string) string { return p })}, nil
}

// runArtifactDirPageSize is a page of artifacts/list.
const runArtifactDirPageSize = 1000

// proxyTarget is what a proxy path names: a run's artifact (run set) or a
// version's (model set), and the path below its artifact root.
type proxyTarget struct {
	experiment, run string
	model           string
	version         int
	path            string
}

// parseProxyPath splits a proxy path (already checked by
// registry.ValidArtifactPath or artifactDir: relative, no dot segments).
func parseProxyPath(p string) (proxyTarget, error) {
	seg := strings.Split(p, "/")
	bad := mlflowProblem("RESOURCE_DOES_NOT_EXIST", "No artifact at "+strconv.Quote(p)+
		": paths are <experiment>/<run>/artifacts/... or models/<name>/versions/<version>/artifacts/...")
	if len(seg) >= 5 && seg[0] == "models" && seg[2] == "versions" && seg[4] == "artifacts" {
		v, err := strconv.Atoi(seg[3])
		if err != nil || v < 1 || v > maxVersion || !registry.ValidModelName(seg[1]) {
			return proxyTarget{}, bad
		}
		return proxyTarget{model: seg[1], version: v, path: strings.Join(seg[5:], "/")}, nil
	}
	if len(seg) >= 3 && seg[2] == "artifacts" {
		return proxyTarget{experiment: mlflowUUID(seg[0]), run: mlflowUUID(seg[1]), path: strings.Join(seg[3:], "/")}, nil
	}
	return proxyTarget{}, bad
}

// proxyRun is the readable run a proxy path names (in the experiment it
// names).
func (s *Server) proxyRun(c *call, proj projections.Project, t proxyTarget) (projections.Run, error) {
	run, err := s.mlflowRunRow(c, proj, t.run)
	if err == nil && run.ExperimentID != t.experiment {
		err = runMissing(t.run)
	}
	return run, err
}

// proxyVersion is the live model version a proxy path names (of a
// readable project): a deleted model or version is gone for MLflow
// clients, its files too.
func (s *Server) proxyVersion(c *call, proj projections.Project, t proxyTarget) (projections.Model, error) {
	m, err := s.mlflowLiveModel(c, proj, t.model)
	if err != nil {
		return m, err
	}
	_, err = s.mlflowVersionOf(c, m, t.version)
	return m, err
}

type mlProxyListRequest struct {
	Path string `json:"path"`
}

type mlProxyListResponse struct {
	Files []MLflowFileInfo `json:"files,omitempty"`
}

// mlProxyList lists one directory of the proxy's tree, entries by their
// base names (as MLflow's server answers). The root and the levels above a
// run's or version's artifacts are not listed: MLflow clients only list
// below an artifact_uri.
func (s *Server) mlProxyList(c *call, req mlProxyListRequest) (mlProxyListResponse, error) {
	dir, err := artifactDir(req.Path)
	if err != nil {
		return mlProxyListResponse{}, err
	}
	t, err := parseProxyPath(dir)
	if err != nil {
		return mlProxyListResponse{}, err
	}
	proj, err := s.mlflowReadable(c)
	if err != nil {
		return mlProxyListResponse{}, err
	}
	var entries []projections.ArtifactEntry
	if t.model != "" {
		m, err := s.proxyVersion(c, proj, t)
		if err != nil {
			return mlProxyListResponse{}, err
		}
		entries, err = s.deps.Queries.VersionArtifactDir(c.ctx, m.ID, t.version, t.path)
		if err != nil {
			return mlProxyListResponse{}, err
		}
	} else {
		run, err := s.proxyRun(c, proj, t)
		if err != nil {
			return mlProxyListResponse{}, err
		}
		if entries, err = s.deps.Queries.RunArtifactDir(c.ctx, proj.ID, run.ID, t.path); err != nil {
			return mlProxyListResponse{}, err
		}
	}
	return mlProxyListResponse{Files: mlflowFiles(entries, path.Base)}, nil
}

// mlProxyDownload streams a file of the proxy's tree.
func (s *Server) mlProxyDownload(w http.ResponseWriter, r *http.Request) error {
	c := newCall(w, r)
	return s.downloadArtifact(w, r, func(apath string) (projections.ArtifactEntry, error) {
		t, err := parseProxyPath(apath)
		if err != nil {
			return projections.ArtifactEntry{}, err
		}
		proj, err := s.mlflowReadable(c)
		if err != nil {
			return projections.ArtifactEntry{}, err
		}
		if t.model != "" {
			m, err := s.proxyVersion(c, proj, t)
			if err != nil {
				return projections.ArtifactEntry{}, err
			}
			return s.deps.Queries.Artifact(r.Context(), m.ID, t.version, t.path)
		}
		run, err := s.proxyRun(c, proj, t)
		if err != nil {
			return projections.ArtifactEntry{}, err
		}
		return s.deps.Queries.RunArtifact(r.Context(), proj.ID, run.ID, t.path)
	})
}

// mlProxyUpload stores a file into a run's artifacts and answers {} (200),
// as MLflow's server does. The run is checked on the write side: it must
// be in the experiment the path names, active, and writable by the caller.
func (s *Server) mlProxyUpload(w http.ResponseWriter, r *http.Request) error {
	c := newCall(w, r)
	apath, err := artifactPathParam(r)
	if err != nil {
		return err
	}
	t, err := parseProxyPath(apath)
	if err != nil {
		return err
	}
	if t.model != "" || t.path == "" {
		return mlflowProblem("INVALID_PARAMETER_VALUE", "uploads go to a run's artifacts: <experiment>/<run>/artifacts/<path>")
	}
	ref, err := mlflowProject(c)
	if err != nil {
		return err
	}
	_, _, seq, err := s.storeArtifact(w, r, t.path, func() error {
		run, err := s.deps.Tracking.Run(c.ctx, c.who, ref, t.run)
		if err == nil && run.ExperimentID != t.experiment {
			return runMissing(t.run)
		}
		if err != nil {
			return mlflowMissing(err, "run", runMissing(t.run))
		}
		return s.deps.Tracking.AuthorizeArtifactWrite(c.ctx, c.who, ref, t.run)
	}, func(art registry.Artifact) (registry.Artifact, bool, uint64, error) {
		run, replaced, seq, err := s.deps.Tracking.RecordArtifact(c.ctx, c.meta, c.who, ref, t.run, art)
		return run.Artifacts[art.Path], replaced, seq, err
	})
	if err != nil {
		return err
	}
	s.settle(c, "Maestro-Sequence", seq)
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}
