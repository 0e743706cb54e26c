// Package deploy_test checks the deployment files, since no cluster or
// Docker engine runs where the tests do: every Kubernetes document decodes
// strictly into its typed API object (an unknown or misspelt field fails),
// the NATS configurations parse with nats-server's own parser, and the
// invariants that make the roles start and keep data hold.
package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/maestro-ml/maestro/events"
)

// settings are the MAESTRO_* variables the binary reads (from its kong tags).
func settings(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "cmd", "maestro", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`env:"(MAESTRO_[A-Z0-9_]+)"`).FindAllSubmatch(src, -1) {
		known[string(m[1])] = true
	}
	if len(known) < 10 {
		t.Fatalf("found only %d settings in cmd/maestro/main.go", len(known))
	}
	return known
}

type manifests struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	// RBAC objects by namespace/name (runner-rbac.yaml is namespaced).
	serviceAccounts map[string]*corev1.ServiceAccount
	roles           map[string]*rbacv1.Role
	roleBindings    map[string]*rbacv1.RoleBinding
}

// decodeStrict decodes every YAML document of path into its typed object.
func decodeStrict(t *testing.T, m *manifests, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := sigsyaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s document %d: %v", path, i, err)
		}
		var obj interface{ GetName() string }
		switch tm.APIVersion + "/" + tm.Kind {
		case "apps/v1/Deployment":
			obj = &appsv1.Deployment{}
		case "apps/v1/StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "v1/Service":
			obj = &corev1.Service{}
		case "v1/ConfigMap":
			obj = &corev1.ConfigMap{}
		case "v1/ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "rbac.authorization.k8s.io/v1/Role":
			obj = &rbacv1.Role{}
		case "rbac.authorization.k8s.io/v1/RoleBinding":
			obj = &rbacv1.RoleBinding{}
		default:
			t.Fatalf("%s document %d: unexpected %s %s", path, i, tm.APIVersion, tm.Kind)
		}
		if err := sigsyaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", path, i, tm.Kind, err)
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments[o.Name] = o
		case *appsv1.StatefulSet:
			m.statefulSets[o.Name] = o
		case *corev1.Service:
			m.services[o.Name] = o
		case *corev1.ConfigMap:
			m.configMaps[o.Name] = o
		case *corev1.ServiceAccount:
			m.serviceAccounts[o.Namespace+"/"+o.Name] = o
		case *rbacv1.Role:
			m.roles[o.Namespace+"/"+o.Name] = o
		case *rbacv1.RoleBinding:
			m.roleBindings[o.Namespace+"/"+o.Name] = o
		}
	}
}

func stripComments(doc string) string {
	var b strings.Builder
	for l := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l)
		}
	}
	return b.String()
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		serviceAccounts: map[string]*corev1.ServiceAccount{}, roles: map[string]*rbacv1.Role{}, roleBindings: map[string]*rbacv1.RoleBinding{}}
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	for _, f := range files {
		decodeStrict(t, m, f)
	}
	return m
}

// natsOptions parses a NATS configuration with nats-server's own parser.
func natsOptions(t *testing.T, conf string) *server.Options {
	t.Helper()
	t.Setenv("SERVER_NAME", "nats-0")
	t.Setenv("MAESTRO_NATS_PASSWORD", "a-test-password")
	t.Setenv("MAESTRO_NATS_REPUBLISHER_PASSWORD", "a-republisher-password")
	t.Setenv("MAESTRO_NATS_SUBSCRIBER_PASSWORD", "a-subscriber-password")
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats config: %v", err)
	}
	return opts
}

// checkNATSConf asserts a cluster configuration is durable and complete:
// JetStream fsyncs before every ack, routes name every node, and the
// users have their passwords from the environment, never a literal: maestro
// alone in account MAESTRO, and in MAESTRO_PUBLIC the republisher and the
// outside subscribers' user with exactly events.PublicPermissions.
func checkNATSConf(t *testing.T, conf string, nodes int) {
	t.Helper()
	opts := natsOptions(t, conf)
	if !opts.JetStream || !opts.SyncAlways {
		t.Errorf("NATS config: jetstream=%v sync always=%v, want both", opts.JetStream, opts.SyncAlways)
	}
	if len(opts.Routes) != nodes || opts.Cluster.Port == 0 {
		t.Errorf("NATS config routes to %d nodes (cluster port %d), want %d", len(opts.Routes), opts.Cluster.Port, nodes)
	}
	users := map[string]*server.User{}
	for _, u := range opts.Users {
		users[u.Username] = u
	}
	for name, want := range map[string]struct{ account, password string }{
		"maestro":             {"MAESTRO", "a-test-password"},
		"maestro-republisher": {events.PublicAccount, "a-republisher-password"},
		"subscriber":          {events.PublicAccount, "a-subscriber-password"},
	} {
		u := users[name]
		if u == nil || u.Account == nil || u.Account.Name != want.account || u.Password != want.password {
			t.Errorf("NATS config: want user %s in account %s with its password from the environment", name, want.account)
		}
	}
	if len(users) != 3 {
		t.Errorf("NATS config has %d users, want 3 (maestro, maestro-republisher, subscriber)", len(users))
	}
	if u := users["maestro"]; u != nil && u.Permissions != nil {
		t.Errorf("user maestro has permissions %+v, want full access to its account", u.Permissions)
	}
	if u := users["subscriber"]; u != nil && !reflect.DeepEqual(u.Permissions, events.PublicPermissions()) {
		t.Errorf("user subscriber's permissions %+v %+v\nwant events.PublicPermissions %+v %+v", u.Permissions.Publish, u.Permissions.Subscribe, events.PublicPermissions().Publish, events.PublicPermissions().Subscribe)
	}
	if opts.ServerName != "nats-0" {
		t.Errorf("server_name %q, want $SERVER_NAME", opts.ServerName)
	}
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	return env
}

func TestKubernetesManifests(t *testing.T) {
	known := settings(t)
	m := loadManifests(t)

	nats := m.statefulSets["nats"]
	if nats == nil || nats.Spec.Replicas == nil {
		t.Fatal("no NATS StatefulSet with replicas")
	}
	natsNodes := int(*nats.Spec.Replicas)
	if cm := m.configMaps["nats-config"]; cm == nil {
		t.Fatal("no ConfigMap nats-config")
	} else {
		checkNATSConf(t, cm.Data["nats.conf"], natsNodes)
		for i := range natsNodes {
			route := fmt.Sprintf("nats://%s-%d.%s:", nats.Name, i, nats.Spec.ServiceName)
			if !strings.Contains(cm.Data["nats.conf"], route) {
				t.Errorf("nats.conf has no route %s…", route)
			}
		}
	}
	if svc := m.services[nats.Spec.ServiceName]; svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("StatefulSet nats needs the headless Service %s", nats.Spec.ServiceName)
	}
	if m.services["nats"] == nil {
		t.Error("no Service nats for clients")
	}

	roles := map[string]string{"maestro-api": "api", "maestro-worker": "worker", "maestro-runner": "runner"}
	for name, role := range roles {
		d := m.deployments[name]
		if d == nil {
			t.Fatalf("no Deployment %s", name)
		}
		pod := d.Spec.Template.Spec
		if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.FSGroup == nil {
			t.Errorf("%s: pod must run as non-root with an fsGroup (to read the secret volume)", name)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = v
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: %d containers", name, len(pod.Containers))
		}
		c := pod.Containers[0]
		if !slices.Equal(c.Args, []string{role}) {
			t.Errorf("%s: args %v, want [%s]", name, c.Args, role)
		}
		env := envOf(c)
		for n, e := range env {
			if strings.HasPrefix(n, "MAESTRO_") && !known[n] {
				t.Errorf("%s: %s is not a Maestro setting", name, n)
			}
			if strings.Contains(n, "PASSWORD") || strings.Contains(n, "SECRET") || strings.Contains(n, "ACCESS_KEY") || n == "MAESTRO_DATABASE_URL" {
				if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					t.Errorf("%s: %s must come from a Secret", name, n)
				}
			}
		}
		for _, n := range []string{"MAESTRO_S3_ENDPOINT", "MAESTRO_S3_BUCKET", "MAESTRO_S3_ACCESS_KEY", "MAESTRO_S3_SECRET_KEY"} {
			if e, ok := env[n]; !ok || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				t.Errorf("%s: %s must be set from a Secret (shared artifact storage)", name, n)
			}
		}
		if env["MAESTRO_NATS_URL"].Value == "" || env["MAESTRO_DATABASE_URL"].ValueFrom == nil {
			t.Errorf("%s: needs MAESTRO_NATS_URL and MAESTRO_DATABASE_URL", name)
		}
		if r, err := strconv.Atoi(env["MAESTRO_NATS_REPLICAS"].Value); err != nil || r != natsNodes {
			t.Errorf("%s: MAESTRO_NATS_REPLICAS %q, want %d (one per NATS server)", name, env["MAESTRO_NATS_REPLICAS"].Value, natsNodes)
		}

		// A read-only root filesystem: every write goes to a volume. With
		// NATS, PostgreSQL and the signing key all external the platform
		// needs no data dir; /tmp is an emptyDir for anything that spools.
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: want readOnlyRootFilesystem", name)
		}
		mounts := map[string]corev1.VolumeMount{}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				t.Errorf("%s: mount of undefined volume %s", name, vm.Name)
			}
			mounts[vm.MountPath] = vm
		}
		if tmp, ok := mounts["/tmp"]; !ok || volumes[tmp.Name].EmptyDir == nil {
			t.Errorf("%s: /tmp must be an emptyDir", name)
		}
		keyFile := env["MAESTRO_SIGNING_KEY_FILE"].Value
		km, ok := mounts[filepath.Dir(keyFile)]
		if !ok || volumes[km.Name].Secret == nil {
			t.Fatalf("%s: MAESTRO_SIGNING_KEY_FILE %q is not in a mounted Secret", name, keyFile)
		}
		if !slices.ContainsFunc(volumes[km.Name].Secret.Items, func(k corev1.KeyToPath) bool { return k.Path == filepath.Base(keyFile) }) {
			t.Errorf("%s: the secret volume does not project %s", name, filepath.Base(keyFile))
		}

		if role == "api" {
			var port string
			for _, p := range c.Ports {
				port = p.Name
			}
			for probe, path := range map[*corev1.Probe]string{c.ReadinessProbe: "/readyz", c.LivenessProbe: "/healthz"} {
				if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port.String() != port {
					t.Errorf("%s: want an HTTP probe of %s on port %s", name, path, port)
				}
			}
			if a := env["MAESTRO_HTTP_ADDR"].Value; a != "" && !strings.HasPrefix(a, "0.0.0.0:") {
				t.Errorf("%s: MAESTRO_HTTP_ADDR %q is not reachable by probes", name, a)
			}
		}
	}
	if svc := m.services["maestro-api"]; svc == nil || svc.Spec.Selector["role"] != "api" {
		t.Error("Service maestro-api must select the api pods")
	}
}

// Every RoleBinding binds an existing Role in its namespace to existing
// ServiceAccounts, and no rule grants wildcards. (Which verbs the runner's
// Role holds is checked against the executor's calls in runner/.)
func TestRBACManifests(t *testing.T) {
	m := loadManifests(t)
	if len(m.roleBindings) == 0 {
		t.Fatal("no RoleBinding (runner-rbac.yaml)")
	}
	for key, rb := range m.roleBindings {
		if rb.RoleRef.Kind != "Role" || m.roles[rb.Namespace+"/"+rb.RoleRef.Name] == nil {
			t.Errorf("RoleBinding %s: no Role %s in its namespace", key, rb.RoleRef.Name)
		}
		for _, s := range rb.Subjects {
			if s.Kind != "ServiceAccount" || m.serviceAccounts[s.Namespace+"/"+s.Name] == nil {
				t.Errorf("RoleBinding %s: subject %s %s/%s is not a ServiceAccount defined here", key, s.Kind, s.Namespace, s.Name)
			}
		}
	}
	for key, r := range m.roles {
		for _, rule := range r.Rules {
			for _, list := range [][]string{rule.APIGroups, rule.Resources, rule.Verbs} {
				if slices.Contains(list, "*") {
					t.Errorf("Role %s grants a wildcard: %+v", key, rule)
				}
			}
		}
	}
}

// A misspelt field is an error, not silently dropped.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	doc := "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: x }\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n        - name: c\n          readOnlyRootFileSystem: true\n"
	if err := sigsyaml.UnmarshalStrict([]byte(doc), &appsv1.Deployment{}); err == nil {
		t.Fatal("a misplaced field decoded without error")
	}
}

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Configs     []struct {
			Source string `yaml:"source"`
			Target string `yaml:"target"`
		} `yaml:"configs"`
	} `yaml:"services"`
	Configs map[string]struct {
		File string `yaml:"file"`
	} `yaml:"configs"`
}

func TestDockerCompose(t *testing.T) {
	known := settings(t)
	data, err := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}

	var natsNodes []string
	for name, s := range cf.Services {
		if !strings.HasPrefix(s.Image, "nats:") {
			continue
		}
		natsNodes = append(natsNodes, name)
		if !slices.Equal(s.Command, []string{"-c", "/etc/nats/nats.conf"}) || len(s.Configs) != 1 || s.Configs[0].Target != "/etc/nats/nats.conf" {
			t.Fatalf("%s: must run with the cluster configuration, got %v %+v", name, s.Command, s.Configs)
		}
		conf, err := os.ReadFile(filepath.Join("..", cf.Configs[s.Configs[0].Source].File))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		checkNATSConf(t, string(conf), 3)
		if !bytes.Contains(conf, []byte("nats://"+name+":6222")) {
			t.Errorf("%s is not among the configuration's routes", name)
		}
		if s.Environment["SERVER_NAME"] != name {
			t.Errorf("%s: SERVER_NAME %q", name, s.Environment["SERVER_NAME"])
		}
	}
	if len(natsNodes) != 3 {
		t.Fatalf("compose runs %d NATS servers, want a 3-node cluster", len(natsNodes))
	}

	for _, role := range []string{"api", "worker", "runner"} {
		s, ok := cf.Services[role]
		if !ok || !slices.Equal(s.Command, []string{role}) {
			t.Fatalf("service %s: command %v", role, s.Command)
		}
		env := s.Environment
		for n := range env {
			if strings.HasPrefix(n, "MAESTRO_") && !known[n] {
				t.Errorf("%s: %s is not a Maestro setting", role, n)
			}
		}
		for _, n := range []string{"MAESTRO_S3_ENDPOINT", "MAESTRO_S3_BUCKET", "MAESTRO_S3_ACCESS_KEY", "MAESTRO_S3_SECRET_KEY"} {
			if env[n] == "" {
				t.Errorf("%s: %s unset (shared artifact storage)", role, n)
			}
		}
		if env["MAESTRO_NATS_REPLICAS"] != strconv.Itoa(len(natsNodes)) {
			t.Errorf("%s: MAESTRO_NATS_REPLICAS %q, want %d", role, env["MAESTRO_NATS_REPLICAS"], len(natsNodes))
		}
		for _, n := range natsNodes {
			if !strings.Contains(env["MAESTRO_NATS_URL"], "nats://"+n+":4222") {
				t.Errorf("%s: MAESTRO_NATS_URL %q misses %s", role, env["MAESTRO_NATS_URL"], n)
			}
		}
		for n, v := range env {
			if (strings.Contains(n, "PASSWORD") || strings.Contains(n, "SECRET")) && !strings.HasPrefix(v, "${") {
				t.Errorf("%s: %s is a literal; secrets come from the environment", role, n)
			}
		}
	}
}
