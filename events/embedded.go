package events

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/jwt/v2"
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
	// PublicUser and PublicPassword, when PublicUser is set, open the
	// public account (PublicAccount) with a least-privilege user for
	// outside subscribers: it reads MAESTRO_PUBLIC, the redacted copy of
	// the events, and nothing else (PublicPermissions). Needs User.
	PublicUser, PublicPassword string
}

// Embedded is a running in-process nats-server.
type Embedded struct {
	srv  *server.Server
	user string
	pass string
	// republisherPass is the in-process-only user of the public account
	// the republisher writes with ("" when the account is off).
	republisherPass string
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
	var republisherPass string
	if cfg.PublicUser != "" {
		if cfg.User == "" || cfg.PublicPassword == "" || cfg.PublicUser == cfg.User || cfg.PublicUser == republisherUser {
			return nil, errors.New("embedded nats: the public user needs a password, the internal user, and a name of its own")
		}
		var err error
		if republisherPass, err = randomSecret(); err != nil {
			return nil, err
		}
		pub := server.NewAccount(PublicAccount)
		opts.Accounts = []*server.Account{pub}
		opts.Users = append(opts.Users,
			// The republisher's user exists only in this process.
			&server.User{Username: republisherUser, Password: republisherPass, Account: pub,
				AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeInProcess: {}}},
			&server.User{Username: cfg.PublicUser, Password: cfg.PublicPassword, Account: pub, Permissions: PublicPermissions()})
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
	if cfg.PublicUser != "" {
		if err := enableAccountsJetStream(srv); err != nil {
			srv.Shutdown()
			return nil, err
		}
	}
	return &Embedded{srv: srv, user: cfg.User, pass: cfg.Password, republisherPass: republisherPass}, nil
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

// ConnectPublic opens an in-process connection to the public account as
// the republisher's user: it may write MAESTRO_PUBLIC (the republisher
// creates and appends to it). ErrNoPublicAccount when the account is off.
func (e *Embedded) ConnectPublic(name string) (*nats.Conn, error) {
	if e.republisherPass == "" {
		return nil, ErrNoPublicAccount
	}
	nc, err := nats.Connect("", nats.InProcessServer(e.srv), nats.Name(name), nats.MaxReconnects(-1),
		nats.UserInfo(republisherUser, e.republisherPass))
	if err != nil {
		return nil, fmt.Errorf("connect to the public account: %w", err)
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

// The public account: outside subscribers live in an account of their own,
// where MAESTRO_EVENTS and the internal users' traffic do not exist (in
// the global account a subscription on _INBOX.> would show them the
// replies to internal reads, unredacted events included); the republisher
// writes the redacted copy into it.
const (
	// PublicAccount is the NATS account of outside subscribers.
	PublicAccount = "MAESTRO_PUBLIC"
	// republisherUser is the public account's writer (in-process only).
	republisherUser = "maestro-republisher"
)

// ErrNoPublicAccount: the embedded server runs without the public account.
var ErrNoPublicAccount = errors.New("the embedded nats runs without the public account (MAESTRO_NATS_PUBLIC_USER)")

// PublicPermissions is what the outside subscriber may do, inside the
// public account: create, read, use and delete its own consumers on
// MAESTRO_PUBLIC, read the stream's messages and info, and subscribe to
// its inboxes and to maestro.public.> live. Nothing else may be published
// (no event subject, no stream create, update, delete or purge) and
// nothing else subscribed.
func PublicPermissions() *server.Permissions {
	const s = PublicStreamName
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.INFO",
			"$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
			"$JS.API.STREAM.INFO." + s,
			"$JS.API.STREAM.MSG.GET." + s,
			"$JS.API.DIRECT.GET." + s, "$JS.API.DIRECT.GET." + s + ".>",
			"$JS.API.CONSUMER.CREATE." + s, "$JS.API.CONSUMER.CREATE." + s + ".>",
			"$JS.API.CONSUMER.DURABLE.CREATE." + s + ".*",
			"$JS.API.CONSUMER.INFO." + s + ".*",
			"$JS.API.CONSUMER.NAMES." + s, "$JS.API.CONSUMER.LIST." + s,
			"$JS.API.CONSUMER.DELETE." + s + ".*",
			"$JS.API.CONSUMER.MSG.NEXT." + s + ".*",
			"$JS.ACK." + s + ".>", "$JS.FC." + s + ".>",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", PublicAllSubjects}},
	}
}

// enableAccountsJetStream turns JetStream on for the global account (the
// internal user's: its streams stay where they were, in the store's $G
// directory) and the public account. nats-server enables it by itself
// only when the global account is the only one, and its options cannot
// name the global account in a config; Account.EnableJetStream is what a
// configuration reload does.
func enableAccountsJetStream(srv *server.Server) error {
	pub, err := srv.LookupAccount(PublicAccount)
	if err != nil {
		return fmt.Errorf("embedded nats: public account: %w", err)
	}
	for _, acc := range []*server.Account{srv.GlobalAccount(), pub} {
		if acc.JetStreamEnabled() {
			continue
		}
		if err := acc.EnableJetStream(nil, nil); err != nil {
			return fmt.Errorf("embedded nats: jetstream for account %s: %w", acc.Name, err)
		}
	}
	return nil
}

func randomSecret() (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("random secret: %w", err)
	}
	return hex.EncodeToString(raw[:]), nil
}
