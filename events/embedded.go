package events

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures the in-process nats-server that `maestro serve`
// runs when no external NATS is configured.
type EmbeddedConfig struct {
	StoreDir string // JetStream file store
	// SyncAlways fsyncs every write before the publish ack (rule 9). Off
	// means JetStream's default: ack from the page cache, fsync every 2 min.
	SyncAlways bool
	// Listen is host:port for outside clients on loopback; empty = in-process only.
	Listen string
	// User and Password protect the listening port (deny by default).
	User, Password string
}

// Embedded is a running in-process nats-server.
type Embedded struct {
	srv  *server.Server
	user string
	pass string
}

// StartEmbedded starts nats-server with JetStream in this process.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	opts := &server.Options{
		ServerName:         "maestro",
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		SyncAlways:         cfg.SyncAlways,
		JetStreamMaxMemory: 256 << 20,
		NoSigs:             true,
		NoLog:              true,
		MaxPayload:         2 << 20,
		DontListen:         cfg.Listen == "",
	}
	if cfg.User != "" {
		opts.Users = []*server.User{{Username: cfg.User, Password: cfg.Password}}
	}
	if cfg.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("nats listen address %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("nats listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT // nats-server reads 0 as "the default 4222"
		}
		opts.Host, opts.Port = host, p
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 30s")
	}
	return &Embedded{srv: srv, user: cfg.User, pass: cfg.Password}, nil
}

// Connect opens an in-process client connection (no TCP).
func (e *Embedded) Connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.InProcessServer(e.srv), nats.Name(name), nats.MaxReconnects(-1)}
	if e.user != "" {
		opts = append(opts, nats.UserInfo(e.user, e.pass))
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect embedded nats: %w", err)
	}
	return nc, nil
}

// ClientURL is the loopback URL outside clients use ("" when not listening).
func (e *Embedded) ClientURL() string {
	if addr := e.srv.Addr(); addr != nil {
		return "nats://" + addr.String()
	}
	return ""
}

// Shutdown stops the server after its clients drained.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
