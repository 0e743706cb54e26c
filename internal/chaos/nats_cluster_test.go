package chaos

// Scenario 4: a three-node NATS cluster (real nats-server processes on
// loopback, JetStream with sync_interval: always, the event stream and the
// idempotency bucket with three replicas, as deploy/ runs it) under
// `maestro serve`. During a burst of keyed commands the event stream's
// leader is killed with kill -9 and brought back a few seconds later: no
// acknowledged event is lost or duplicated, and maestro carries on by
// itself (no restart).

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
)

// leaderDownFor is how long the killed leader stays down.
const leaderDownFor = 3 * time.Second

func TestNATSClusterLeaderKilled(t *testing.T) {
	const user, password = "maestro", "chaos-nats-password"
	nodes := startNATSCluster(t, 3, user, password)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.clientURL())
	}
	dir := dataDir(t)
	env := baseEnv(append(bootstrapAdmin, "MAESTRO_REGISTRATIONS_PER_HOUR=100000", "MAESTRO_NATS_URL="+strings.Join(urls, ","),
		"MAESTRO_NATS_USER="+user, "MAESTRO_NATS_PASSWORD="+password, "MAESTRO_NATS_REPLICAS=3")...)
	serve := startProc(t, "serve", env, "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0")
	l := &ledger{}
	ws := setupWorkspace(t, serve.url, login(t, serve.url), l)
	w := world{hotModel: ws.hotModel, verifyCmd: verifyDataDir(t, dir)}.with(t, dir) // run.json names all three nodes: the checker reads from any live one
	js, err := jetstream.New(w.nc)
	if err != nil {
		t.Fatal(err)
	}

	for rep := range *reps {
		token := login(t, serve.url)
		start := len(l.entries)
		obs := &observations{}
		ld := startLoad(func(ctx context.Context, acked chan<- struct{}) {
			patientBurst(ctx, l, obs, serve.url, ws.nextCommand("s4", rep, token, false), ws.queries(token), acked)
		})

		waitAcks(t, ld.acked, 30)
		leader := nodes[streamLeader(t, js, nodes)]
		wasMaestros := leader.hasClient(t, "maestro")
		leader.kill(t)
		killed := time.Now()
		// Commands work again once a new leader is elected, with the old
		// one still down.
		recovery := probeRecovery(t, l, serve.url, token, fmt.Sprintf("s4-r%d-probe", rep)).Sub(killed)
		waitUntil(t, killed.Add(leaderDownFor))
		leader.start(t)
		waitReplicasCurrent(t, js)
		waitAcks(t, ld.acked, 30)
		ld.stop()

		if serve.cmd.ProcessState != nil {
			t.Fatalf("maestro exited: %s", serve.cmd.ProcessState)
		}
		waitReady(t, serve.url)
		waitCaughtUp(t, serve.url, token, l)
		v := checkInvariant(t, w, l, start)
		report(t, result{Scenario: "4 NATS stream leader kill -9", Rep: rep + 1, verdict: v, Recovery: recovery,
			Note: fmt.Sprintf("(killed %s, maestro's connection was on it: %t; requests: %s)", leader.name, wasMaestros, obs.summary())})
	}
	serve.stop(t)
}

// summary counts the load's requests by status and names the slowest.
func (o *observations) summary() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	byStatus := map[string]int{}
	var slowest observation
	for _, ob := range o.all {
		k := fmt.Sprint(ob.a.Status)
		if ob.a.Err != nil {
			k = "unanswered"
		}
		byStatus[k]++
		if ob.took > slowest.took {
			slowest = ob
		}
	}
	return fmt.Sprintf("%d by status %v, slowest %s %s: %s", len(o.all), byStatus, slowest.took.Round(time.Millisecond), slowest.what, firstLine(slowest.a.Body))
}

// ---- the NATS cluster ----

var (
	natsOnce sync.Once
	natsBin  string
	natsErr  error
)

// natsServerBin builds nats-server from the module go.mod already pins
// (the server maestro embeds), next to the maestro binary.
func natsServerBin(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(maestroBin(t))
	natsOnce.Do(func() {
		natsBin = filepath.Join(dir, "nats-server")
		if out, err := exec.Command("go", "build", "-o", natsBin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
			natsErr = fmt.Errorf("go build nats-server: %w\n%s", err, out)
		}
	})
	if natsErr != nil {
		t.Fatal(natsErr)
	}
	return natsBin
}

// natsNode is one nats-server process of the cluster, restartable with
// the same configuration (ports, store directory).
type natsNode struct {
	name                     string
	conf, log                string
	port, clusterPort, mport int
	cmd                      *exec.Cmd
}

func (n *natsNode) clientURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// startNATSCluster writes one configuration per node (the settings of
// deploy/nats-cluster.conf on loopback ports) and starts the nodes, then
// waits until JetStream answers.
func startNATSCluster(t *testing.T, size int, user, password string) []*natsNode {
	t.Helper()
	dir := t.TempDir()
	nodes := make([]*natsNode, size)
	var routes []string
	for i := range nodes {
		n := &natsNode{name: fmt.Sprintf("n%d", i+1), port: freePort(t), clusterPort: freePort(t), mport: freePort(t)}
		n.conf, n.log = filepath.Join(dir, n.name+".conf"), filepath.Join(dir, n.name+".log")
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", n.clusterPort))
		nodes[i] = n
	}
	for _, n := range nodes {
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  sync_interval: always
}
cluster {
  name: chaos
  listen: 127.0.0.1:%d
  routes: [%s]
}
authorization {
  users: [ { user: %q, password: %q } ]
}
`, n.name, n.port, n.mport, filepath.Join(dir, n.name), n.clusterPort, strings.Join(routes, ", "), user, password)
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		n.start(t)
		t.Cleanup(func() {
			if n.cmd.ProcessState == nil {
				_ = n.cmd.Process.Kill()
				_ = n.cmd.Wait()
			}
			if t.Failed() {
				b, _ := os.ReadFile(n.log)
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("nats-server %s's log (end):\n%s", n.name, b)
			}
		})
	}
	nc, err := nats.Connect(nodes[0].clientURL(), nats.UserInfo(user, password))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("the NATS cluster's JetStream did not answer within 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// start starts the node and waits until it accepts connections.
func (n *natsNode) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(n.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	n.cmd = exec.Command(natsServerBin(t), "-c", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz?js-server-only=true", n.mport))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server %s did not become healthy within 30s: %v", n.name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill is kill -9 of the node.
func (n *natsNode) kill(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", n.name, err)
	}
	_ = n.cmd.Wait()
}

// hasClient reports whether a client connection named name is on the node
// (its monitoring endpoint's /connz).
func (n *natsNode) hasClient(t *testing.T, name string) bool {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/connz?limit=1024", n.mport))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var connz struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&connz); err != nil {
		t.Fatal(err)
	}
	for _, c := range connz.Connections {
		if c.Name == name {
			return true
		}
	}
	return false
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// streamLeader is the index in nodes of the event stream's leader.
func streamLeader(t *testing.T, js jetstream.JetStream, nodes []*natsNode) int {
	t.Helper()
	info := streamInfo(t, js)
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("%s is not replicated on three nodes: %+v", events.StreamName, info.Cluster)
	}
	for i, n := range nodes {
		if n.name == info.Cluster.Leader {
			return i
		}
	}
	t.Fatalf("%s's leader %q is none of the nodes", events.StreamName, info.Cluster.Leader)
	return 0
}

func streamInfo(t *testing.T, js jetstream.JetStream) *jetstream.StreamInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatalf("stream %s: %v", events.StreamName, err)
	}
	return s.CachedInfo()
}

// waitReplicasCurrent waits until the event stream has a leader and both
// followers are current again (the restarted node caught up).
func waitReplicasCurrent(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := js.Stream(ctx, events.StreamName)
		cancel()
		if err == nil {
			c := s.CachedInfo().Cluster
			current := 0
			for _, r := range c.Replicas {
				if r.Current && !r.Offline {
					current++
				}
			}
			if c.Leader != "" && current == 2 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's replicas were not all current 60s after the restart: %v", events.StreamName, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
