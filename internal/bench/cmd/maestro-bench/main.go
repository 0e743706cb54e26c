// Command maestro-bench measures Maestro's hot paths on this machine and
// prints a markdown table: append latency with and without fsync,
// command → projection-visible latency, projection rebuild throughput,
// HTTP login / me under concurrent clients, artifact upload/download
// throughput through the HTTP API, and training jobs of a no-op program
// (queue → start, throughput, overhead per job). It starts everything it
// needs (a private Postgres, unless MAESTRO_BENCH_DATABASE_URL is set, and
// embedded NATS) in a temporary directory and removes it afterwards.
//
//	go run ./internal/bench/cmd/maestro-bench [flags]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/maestro-ml/maestro/internal/bench"
)

func main() {
	cfg := bench.DefaultConfig()
	flag.IntVar(&cfg.Appends, "appends", cfg.Appends, "sequential appends per fsync setting (single events and 2-event batches each)")
	flag.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "concurrent writers for the append throughput row")
	flag.IntVar(&cfg.Visible, "visible", cfg.Visible, "append → projection-visible round trips per fsync setting")
	flag.IntVar(&cfg.RebuildEvents, "rebuild-events", cfg.RebuildEvents, "events in the stream for the rebuild measurement")
	flag.IntVar(&cfg.FillWorkers, "fill-workers", cfg.FillWorkers, "concurrent writers filling the stream for the rebuild")
	flag.IntVar(&cfg.HTTPClients, "http-clients", cfg.HTTPClients, "concurrent HTTP clients")
	flag.IntVar(&cfg.HTTPLogins, "http-logins", cfg.HTTPLogins, "POST /auth/login requests in total")
	flag.IntVar(&cfg.HTTPMe, "http-me", cfg.HTTPMe, "GET /auth/me requests in total")
	flag.Int64Var(&cfg.ArtifactMiB, "artifact-mib", cfg.ArtifactMiB, "MiB of the artifact uploaded and downloaded through the HTTP API")
	flag.BoolVar(&cfg.ArtifactS3, "artifact-s3", cfg.ArtifactS3, "also measure artifacts on S3 (gofakes3 in this process, in memory: about 4× the artifact in RAM)")
	flag.IntVar(&cfg.WebhookEvents, "webhook-events", cfg.WebhookEvents, "events the webhooks scenario offers at 1,000/s to one receiver")
	flag.StringVar(&cfg.MaestroBin, "maestro-bin", "", "maestro binary for the serve scenario (default: build ./cmd/maestro)")
	flag.DurationVar(&cfg.Phase, "phase", cfg.Phase, "length of each load phase of the serve scenario")
	flag.StringVar(&cfg.ProfileDir, "profile", "", "directory for the server's CPU and allocation profiles of each serve phase")
	only := flag.String("only", "", "comma-separated scenarios to run ("+strings.Join(bench.Scenarios, ",")+"); empty = all")
	flag.Parse()
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	if cfg.Phase < time.Second {
		fmt.Fprintln(os.Stderr, "maestro-bench: -phase must be at least 1s")
		os.Exit(2)
	}
	for _, v := range []int{cfg.Appends, cfg.Concurrency, cfg.Visible, cfg.RebuildEvents, cfg.FillWorkers, cfg.HTTPClients, cfg.HTTPLogins, cfg.HTTPMe, int(cfg.ArtifactMiB), cfg.WebhookEvents} {
		if v <= 0 {
			fmt.Fprintln(os.Stderr, "maestro-bench: sizes must be positive")
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench.Run(ctx, cfg, os.Stdout); err != nil {
		stop()
		fmt.Fprintln(os.Stderr, "maestro-bench:", err)
		os.Exit(1)
	}
}
