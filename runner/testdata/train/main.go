// Command train is the test fixture for Maestro training jobs: a small but
// real training program that fits y = 3x + 2 + noise by full-batch gradient
// descent and logs its metrics to the MLflow-compatible REST API using only
// the environment the platform injects into a job.
//
// Parameters come from MAESTRO_PARAM_<KEY> (upper-cased keys):
//
//	EPOCHS     number of epochs (default 20)
//	LR         learning rate (default 0.1)
//	N          number of generated samples (default 200)
//	SEED       random seed (default 1)
//	EXIT_CODE  if non-zero, exit with this code after training (failure tests)
//	SLEEP      seconds (float) to sleep per epoch (cancel/timeout tests)
//	TRAP_TERM  "ignore" ignores SIGTERM (SIGKILL-after-grace tests); otherwise
//	           SIGTERM prints "received SIGTERM, stopping" and exits 143
//
// MLflow access uses MLFLOW_TRACKING_URI, MLFLOW_RUN_ID and the optional
// MLFLOW_TRACKING_TOKEN (sent as a bearer token, never printed). Each epoch
// logs the metrics loss, w and b (step = epoch); the end logs final_loss.
// Missing MLflow settings, bad parameters or a failed API call exit with 2.
//
// It uses only the standard library and lives under testdata, so tests build
// it with `go build -o <bin> ./runner/testdata/train`.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
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

// logBatch POSTs metrics to <uri>/api/2.0/mlflow/runs/log-batch.
func logBatch(uri, runID, token string, metrics []metric) {
	body, _ := json.Marshal(map[string]any{"run_id": runID, "metrics": metrics})
	req, err := http.NewRequest(http.MethodPost, uri+"/api/2.0/mlflow/runs/log-batch", bytes.NewReader(body))
	if err != nil {
		fail("log-batch: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		fail("log-batch: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		fail("log-batch: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	io.Copy(io.Discard, resp.Body)
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
	fmt.Fprintf(os.Stderr, "training on %d samples\n", n)

	// Generate y = 3x + 2 + noise with x ~ N(0, 1).
	rng := rand.New(rand.NewPCG(seed, seed))
	xs, ys := make([]float64, n), make([]float64, n)
	for i := range xs {
		xs[i] = rng.NormFloat64()
		ys[i] = 3*xs[i] + 2 + 0.1*rng.NormFloat64()
	}

	// Full-batch gradient descent on the mean squared error.
	var w, b float64
	mse := func() (l float64) {
		for i, x := range xs {
			e := w*x + b - ys[i]
			l += e * e / float64(n)
		}
		return l
	}
	loss := mse()
	for epoch := 1; epoch <= epochs; epoch++ {
		var gw, gb float64
		for i, x := range xs {
			e := w*x + b - ys[i]
			gw += 2 * e * x / float64(n)
			gb += 2 * e / float64(n)
		}
		w -= lr * gw
		b -= lr * gb
		loss = mse()
		fmt.Printf("epoch %d loss=%.4f w=%.2f b=%.2f\n", epoch, loss, w, b)
		ts := time.Now().UnixMilli()
		logBatch(uri, runID, token, []metric{
			{"loss", loss, ts, int64(epoch)},
			{"w", w, ts, int64(epoch)},
			{"b", b, ts, int64(epoch)},
		})
		if sleep > 0 {
			time.Sleep(sleep)
		}
	}

	logBatch(uri, runID, token, []metric{{"final_loss", loss, time.Now().UnixMilli(), int64(epochs)}})
	fmt.Printf("done: final_loss=%.4f w=%.4f b=%.4f\n", loss, w, b)
	if exitCode != 0 {
		fmt.Fprintf(os.Stderr, "exiting with requested code %d\n", exitCode)
		os.Exit(exitCode)
	}
}
