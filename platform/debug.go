package platform

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// DebugHandler serves Go's profiles (net/http/pprof) under /debug/pprof/.
// It is only ever mounted on the separate, loopback-only admin listener
// (MAESTRO_DEBUG_ADDR), never on the API: profiles show code paths and
// memory, and a CPU profile costs the process while it runs.
func DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// LoopbackAddr checks that addr (host:port) is on a loopback interface.
func LoopbackAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%q: must be a loopback address", addr)
	}
	return nil
}

// serveDebug opens the admin listener when Config.DebugAddr is set.
func (p *Platform) serveDebug() error {
	if p.cfg.DebugAddr == "" {
		return nil
	}
	if err := LoopbackAddr(p.cfg.DebugAddr); err != nil {
		return fmt.Errorf("MAESTRO_DEBUG_ADDR %w", err)
	}
	ln, err := net.Listen("tcp", p.cfg.DebugAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (MAESTRO_DEBUG_ADDR): %w", p.cfg.DebugAddr, err)
	}
	p.debugListener = ln
	p.debugSrv = &http.Server{
		Handler:           DebugHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		// A CPU profile or trace runs for ?seconds= (pprof refuses more than
		// the write timeout allows).
		WriteTimeout: 5 * time.Minute,
		IdleTimeout:  time.Minute,
		ErrorLog:     slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	p.goRun(func() {
		if err := p.debugSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("debug server", "err", err)
		}
	})
	return nil
}

// DebugURL is the base URL of the admin listener ("" when off).
func (p *Platform) DebugURL() string {
	if p.debugListener == nil {
		return ""
	}
	return "http://" + p.debugListener.Addr().String()
}
