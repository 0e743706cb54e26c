// Command train is the test fixture for Maestro training jobs: a small but
// real training program that fits y = 3x + 0.5z + 0u + 2 + noise (x, z and
// u ~ N(0, 1): u is pure noise) by full-batch gradient descent on a
// training split, logs its metrics to the MLflow-compatible REST API using
// only the environment the platform injects into a job, and explains the
// fitted model on held-out data (the reference explainer).
//
// Parameters come from MAESTRO_PARAM_<KEY> (upper-cased keys):
//
//	EPOCHS     number of epochs (default 20)
//	LR         learning rate (default 0.1)
//	N          number of generated samples (default 200); the last quarter
//	           (N/4 rows) is held out, the rest is fitted
//	SEED       random seed (default 1)
//	EXPLAIN    1 (default) explains the model after training; 0 skips it
//	EXIT_CODE  if non-zero, exit with this code after training (failure tests)
//	SLEEP      seconds (float) to sleep per epoch (cancel/timeout tests)
//	TRAP_TERM  "ignore" ignores SIGTERM (SIGKILL-after-grace tests); otherwise
//	           SIGTERM prints "received SIGTERM, stopping" and exits 143
//
// MLflow access uses MLFLOW_TRACKING_URI, MLFLOW_RUN_ID and the optional
// MLFLOW_TRACKING_TOKEN (sent as a bearer token, never printed). Each epoch
// logs the metrics loss (the training split's mean squared error), w (the
// weight of x) and b (step = epoch); the end logs final_loss and, when rows
// are held out, test_loss (the held-out mean squared error). The weights of
// z and u are fitted too but not logged, so w and b mean what they always
// did.
//
// The explainer (EXPLAIN=1, at least 2 held-out rows) computes on the
// held-out split, seeded by SEED: permutation importance (the increase of
// the mean squared error when one feature's column is shuffled, the mean
// and standard deviation over 5 shuffles) and partial dependence (the mean
// prediction with a feature set to each of 10 values evenly spaced over its
// held-out range). It uploads both as explanation.json (the platform's
// explanation document, schema_version 1) into the run's artifacts the way
// an MLflow client's log_artifact does against a server that proxies
// artifacts: runs/get gives the run's artifact_uri
// (mlflow-artifacts:/<experiment>/<run>/artifacts), and the file is PUT to
// <tracking URI>/api/2.0/mlflow-artifacts/artifacts/<experiment>/<run>/artifacts/explanation.json.
// The importances come out ordered x > z > u, u near 0.
//
// Missing MLflow settings, bad parameters or a failed API call exit with 2.
//
// It uses only the standard library and lives under testdata, so tests build
// it with `go build -o <bin> ./runner/testdata/train`.
package main

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type metric struct {
	Key       string  `json:"key"`
	Value     float64 `json:"value"`
	Timestamp int64   `json:"timestamp"`
	Step      int64   `json:"step"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "train: "+format+"\n", args...)
	os.Exit(2)
}

// param returns MAESTRO_PARAM_<key> parsed as float64, or def when unset.
func param(key string, def float64) float64 {
	s := strings.TrimSpace(os.Getenv("MAESTRO_PARAM_" + key))
	if s == "" {
		return def
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		fail("invalid MAESTRO_PARAM_%s=%q: %v", key, s, err)
	}
	return v
}

var client = &http.Client{Timeout: 10 * time.Second}

// call sends one request to the tracking server and decodes a JSON answer
// into out (if not nil); anything but a 2xx exits.
func call(method, url, token, ctype string, body []byte, out any) {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		fail("%s %s: %v", method, url, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		fail("%s: %v", method, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		fail("%s %s: HTTP %d: %s", method, url, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	if out != nil {
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
			fail("%s %s: decode the answer: %v", method, url, err)
		}
	}
	io.Copy(io.Discard, resp.Body)
}

// logBatch POSTs metrics to <uri>/api/2.0/mlflow/runs/log-batch.
func logBatch(uri, runID, token string, metrics []metric) {
	body, _ := json.Marshal(map[string]any{"run_id": runID, "metrics": metrics})
	call(http.MethodPost, uri+"/api/2.0/mlflow/runs/log-batch", token, "application/json", body, nil)
}

// logArtifact uploads a file into the run's artifacts as MLflow's
// log_artifact does with proxied artifacts: the run's artifact_uri
// (runs/get) names where, the mlflow-artifacts proxy takes a PUT.
func logArtifact(uri, runID, token, name, ctype string, content []byte) {
	var got struct {
		Run struct {
			Info struct {
				ArtifactURI string `json:"artifact_uri"`
			} `json:"info"`
		} `json:"run"`
	}
	call(http.MethodGet, uri+"/api/2.0/mlflow/runs/get?run_id="+url.QueryEscape(runID), token, "", nil, &got)
	root, ok := strings.CutPrefix(got.Run.Info.ArtifactURI, "mlflow-artifacts:")
	if !ok {
		fail("log %s: the run's artifact_uri %q is not an mlflow-artifacts: URI", name, got.Run.Info.ArtifactURI)
	}
	root = strings.Trim(root, "/")
	call(http.MethodPut, uri+"/api/2.0/mlflow-artifacts/artifacts/"+root+"/"+name, token, ctype, content, nil)
}

// features are the model's inputs and the weights the data is made with.
var features = []struct {
	name   string
	weight float64
}{{"x", 3}, {"z", 0.5}, {"u", 0}}

// model is a fitted linear model over features.
type model struct {
	w []float64 // by feature
	b float64
}

func (m model) predict(row []float64) float64 {
	p := m.b
	for j, v := range row {
		p += m.w[j] * v
	}
	return p
}

// mse is the model's mean squared error on rows.
func (m model) mse(rows [][]float64, ys []float64) float64 {
	var l float64
	for i, row := range rows {
		e := m.predict(row) - ys[i]
		l += e * e / float64(len(rows))
	}
	return l
}

func main() {
	if strings.EqualFold(os.Getenv("MAESTRO_PARAM_TRAP_TERM"), "ignore") {
		signal.Ignore(syscall.SIGTERM)
	} else {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		go func() {
			<-sig
			fmt.Println("received SIGTERM, stopping")
			os.Exit(143)
		}()
	}

	uri := strings.TrimRight(os.Getenv("MLFLOW_TRACKING_URI"), "/")
	runID := os.Getenv("MLFLOW_RUN_ID")
	token := os.Getenv("MLFLOW_TRACKING_TOKEN")
	if uri == "" || runID == "" {
		fail("MLFLOW_TRACKING_URI and MLFLOW_RUN_ID must be set")
	}

	epochs := int(param("EPOCHS", 20))
	lr := param("LR", 0.1)
	n := int(param("N", 200))
	seed := uint64(param("SEED", 1))
	explain := param("EXPLAIN", 1) != 0
	exitCode := int(param("EXIT_CODE", 0))
	sleep := time.Duration(param("SLEEP", 0) * float64(time.Second))
	if epochs < 0 || n <= 0 {
		fail("EPOCHS must be >= 0 and N > 0 (got %d, %d)", epochs, n)
	}

	for _, k := range []string{"MAESTRO_JOB_ID", "MAESTRO_RUN_ID"} {
		if v := os.Getenv(k); v != "" {
			fmt.Printf("%s=%s\n", k, v)
		}
	}
	nTest := n / 4
	nTrain := n - nTest
	fmt.Fprintf(os.Stderr, "training on %d samples (%d fitted, %d held out)\n", n, nTrain, nTest)

	// Generate y = 3x + 0.5z + 0u + 2 + noise. x and the noise come from
	// the stream they always came from, z and u from one of their own.
	rng := rand.New(rand.NewPCG(seed, seed))
	more := rand.New(rand.NewPCG(seed, seed+1))
	rows, ys := make([][]float64, n), make([]float64, n)
	for i := range rows {
		x := rng.NormFloat64()
		z, u := more.NormFloat64(), more.NormFloat64()
		rows[i] = []float64{x, z, u}
		ys[i] = 2 + 0.1*rng.NormFloat64()
		for j, f := range features {
			ys[i] += f.weight * rows[i][j]
		}
	}
	train, trainY := rows[:nTrain], ys[:nTrain]
	test, testY := rows[nTrain:], ys[nTrain:]

	// Full-batch gradient descent on the training split's mean squared
	// error.
	m := model{w: make([]float64, len(features))}
	loss := m.mse(train, trainY)
	for epoch := 1; epoch <= epochs; epoch++ {
		gw, gb := make([]float64, len(features)), 0.0
		for i, row := range train {
			e := m.predict(row) - trainY[i]
			for j, v := range row {
				gw[j] += 2 * e * v / float64(nTrain)
			}
			gb += 2 * e / float64(nTrain)
		}
		for j := range m.w {
			m.w[j] -= lr * gw[j]
		}
		m.b -= lr * gb
		loss = m.mse(train, trainY)
		fmt.Printf("epoch %d loss=%.4f w=%.2f b=%.2f\n", epoch, loss, m.w[0], m.b)
		ts := time.Now().UnixMilli()
		logBatch(uri, runID, token, []metric{
			{"loss", loss, ts, int64(epoch)},
			{"w", m.w[0], ts, int64(epoch)},
			{"b", m.b, ts, int64(epoch)},
		})
		if sleep > 0 {
			time.Sleep(sleep)
		}
	}

	final := []metric{{"final_loss", loss, time.Now().UnixMilli(), int64(epochs)}}
	if nTest > 0 {
		final = append(final, metric{"test_loss", m.mse(test, testY), time.Now().UnixMilli(), int64(epochs)})
	}
	logBatch(uri, runID, token, final)
	fmt.Printf("done: final_loss=%.4f w=%.4f b=%.4f\n", loss, m.w[0], m.b)
	switch {
	case !explain:
	case nTest < 2:
		fmt.Fprintf(os.Stderr, "not explaining: %d held-out rows are too few\n", nTest)
	default:
		doc := explanation(m, test, testY, seed)
		b, err := json.MarshalIndent(doc, "", "  ")
		if err != nil {
			fail("explanation: %v", err)
		}
		logArtifact(uri, runID, token, "explanation.json", "application/json", append(b, '\n'))
		var order []string
		for _, fi := range doc.Importances {
			order = append(order, fmt.Sprintf("%s=%.4f", fi.Feature, fi.Score))
		}
		fmt.Printf("explained on %d held-out rows: permutation importance %s\n", nTest, strings.Join(order, " "))
	}
	if exitCode != 0 {
		fmt.Fprintf(os.Stderr, "exiting with requested code %d\n", exitCode)
		os.Exit(exitCode)
	}
}

// The explanation document (schema_version 1), the parts this explainer
// fills.
type (
	explanationDoc struct {
		SchemaVersion int          `json:"schema_version"`
		Dataset       dataset      `json:"dataset"`
		Target        string       `json:"target"`
		Metric        metricRef    `json:"metric"`
		Importances   []importance `json:"feature_importances"`
		Effects       []effect     `json:"feature_effects"`
	}
	dataset struct {
		Name        string `json:"name"`
		Rows        int    `json:"rows"`
		Split       string `json:"split"`
		Digest      string `json:"digest"`
		Description string `json:"description"`
	}
	metricRef struct {
		Name      string  `json:"name"`
		Baseline  float64 `json:"baseline"`
		Direction string  `json:"direction"`
	}
	importance struct {
		Feature string  `json:"feature"`
		Method  string  `json:"method"`
		Score   float64 `json:"score"`
		Std     float64 `json:"std"`
	}
	effect struct {
		Feature string  `json:"feature"`
		Method  string  `json:"method"`
		Points  []point `json:"points"`
	}
	point struct {
		Value  float64 `json:"value"`
		Effect float64 `json:"effect"`
	}
)

const (
	// shuffles is how many times permutation importance shuffles each
	// feature's column; gridPoints the values of a partial dependence.
	shuffles   = 5
	gridPoints = 10
)

// explanation explains m on the held-out rows: permutation importance
// (sorted, most important first) and partial dependence of every feature.
func explanation(m model, rows [][]float64, ys []float64, seed uint64) explanationDoc {
	base := m.mse(rows, ys)
	h := sha256.New()
	for i, row := range rows {
		fmt.Fprintf(h, "%v,%v\n", row, ys[i])
	}
	doc := explanationDoc{SchemaVersion: 1, Target: "y",
		Dataset: dataset{Name: "holdout", Rows: len(rows), Split: "test", Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)),
			Description: "the last quarter of the generated samples, not fitted"},
		Metric: metricRef{Name: "mse", Baseline: base, Direction: "minimize"}}
	rng := rand.New(rand.NewPCG(seed, 2))
	shuffled := make([][]float64, len(rows))
	for i := range shuffled {
		shuffled[i] = slices.Clone(rows[i])
	}
	for j, f := range features {
		// Permutation importance: the error's increase with column j
		// shuffled, over several shuffles.
		var scores []float64
		for range shuffles {
			perm := rng.Perm(len(rows))
			for i := range shuffled {
				shuffled[i][j] = rows[perm[i]][j]
			}
			scores = append(scores, m.mse(shuffled, ys)-base)
		}
		for i := range shuffled {
			shuffled[i][j] = rows[i][j]
		}
		var mean, sq float64
		for _, s := range scores {
			mean += s / float64(len(scores))
		}
		for _, s := range scores {
			sq += (s - mean) * (s - mean) / float64(len(scores)-1)
		}
		doc.Importances = append(doc.Importances, importance{Feature: f.name, Method: "permutation", Score: mean, Std: math.Sqrt(sq)})

		// Partial dependence: the mean prediction with column j set to
		// each value of a grid over its held-out range.
		lo, hi := rows[0][j], rows[0][j]
		for _, row := range rows {
			lo, hi = min(lo, row[j]), max(hi, row[j])
		}
		e := effect{Feature: f.name, Method: "partial_dependence"}
		for g := range gridPoints {
			v := lo + (hi-lo)*float64(g)/float64(gridPoints-1)
			for i := range shuffled {
				shuffled[i][j] = v
			}
			var mean float64
			for _, row := range shuffled {
				mean += m.predict(row) / float64(len(shuffled))
			}
			e.Points = append(e.Points, point{Value: v, Effect: mean})
		}
		for i := range shuffled {
			shuffled[i][j] = rows[i][j]
		}
		doc.Effects = append(doc.Effects, e)
	}
	slices.SortStableFunc(doc.Importances, func(a, b importance) int { return cmp.Compare(b.Score, a.Score) })
	return doc
}
