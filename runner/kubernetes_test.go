package runner

// The Kubernetes executor is tested against client-go's fake clientset
// (k8s.io/client-go/kubernetes/fake), the well-known in-memory stand-in
// for an API server, since none runs here. The fake has no controllers:
// creating a Job creates no pod and sets no status, deleting one deletes
// nothing else, and pod logs are whatever a reactor returns (no follow).
// So each test plays the Job controller itself: it creates the pod with
// the batch.kubernetes.io/job-name label and writes the Job's conditions
// with UpdateStatus.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"
)

const kubeTestNS = "ml"

func kubeTestSpec() Spec {
	return Spec{
		JobID:     "0b7e3c5e-1f0a-4c55-9d2e-6b1f3f0c9a41",
		ProjectID: "5f1d2c3b-aaaa-bbbb-cccc-0123456789ab",
		RunID:     "8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5",
		Name:      "train",
		Attempt:   2,
		Command:   []string{"python", "train.py", "--epochs", "3"},
		Env:       map[string]string{"ZETA": "z", "ALPHA": "a", "MLFLOW_RUN_ID": "r1", "DB_PASSWORD": "s3cret"},
		Image:     "ghcr.io/acme/train:1.2",
		Resources: Resources{CPU: "500m", Memory: "1Gi"},
		Grace:     7500 * time.Millisecond,
	}
}

func newKubeTest(t *testing.T, cfg KubernetesConfig) (*fake.Clientset, *Kubernetes) {
	t.Helper()
	cs := fake.NewClientset()
	cfg.Namespace = kubeTestNS
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Millisecond
	}
	if cfg.LogWait == 0 {
		cfg.LogWait = 200 * time.Millisecond
	}
	return cs, NewKubernetes(cs, cfg)
}

// kubeLines collects what the sink receives.
type kubeLines struct {
	mu    sync.Mutex
	lines []Line
}

func (c *kubeLines) sink(l Line) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, l)
}

func (c *kubeLines) get() []Line {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lines)
}

func kubeEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func kubeWait(t *testing.T, h Handle) Result {
	t.Helper()
	ch := make(chan Result, 1)
	go func() { ch <- h.Wait() }()
	select {
	case r := <-ch:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return")
		return Result{}
	}
}

func kubeStart(t *testing.T, ex *Kubernetes, spec Spec, logs LogSink) (*kubeHandle, *batchv1.Job) {
	t.Helper()
	h, err := ex.Start(context.Background(), spec, logs)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	kh := h.(*kubeHandle)
	t.Cleanup(func() { kh.Stop(); kh.Wait() })
	job, err := ex.client.BatchV1().Jobs(kubeTestNS).Get(context.Background(), kh.name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the Job was not created: %v", err)
	}
	return kh, job
}

// kubePod plays the Job controller and the kubelet: the Job's pod, in
// phase, with the main container's termination state if given.
func kubePod(t *testing.T, cs *fake.Clientset, job string, phase corev1.PodPhase, term *corev1.ContainerStateTerminated) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: job + "-x7k2p", Namespace: kubeTestNS, Labels: map[string]string{batchv1.JobNameLabel: job}},
		Status:     corev1.PodStatus{Phase: phase},
	}
	if term != nil {
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "main", State: corev1.ContainerState{Terminated: term}}}
	}
	if _, err := cs.CoreV1().Pods(kubeTestNS).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// kubeFinish plays the Job controller marking the Job finished.
func kubeFinish(t *testing.T, cs *fake.Clientset, name string, cond batchv1.JobConditionType) {
	t.Helper()
	ctx := context.Background()
	j, err := cs.BatchV1().Jobs(kubeTestNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	j.Status.Conditions = append(j.Status.Conditions, batchv1.JobCondition{Type: cond, Status: corev1.ConditionTrue, Reason: "Test"})
	if cond == batchv1.JobComplete {
		j.Status.Succeeded = 1
	} else {
		j.Status.Failed = 1
	}
	if _, err := cs.BatchV1().Jobs(kubeTestNS).UpdateStatus(ctx, j, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// kubeLogReactor makes the fake return body as the pod's log.
func kubeLogReactor(cs *fake.Clientset, body string) {
	cs.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "log" {
			return false, nil, nil
		}
		return true, &runtime.Unknown{Raw: []byte(body)}, nil
	})
}

func TestKubernetesJobSpec(t *testing.T) {
	owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "maestro-runner", UID: "1234-uid"}
	cs, ex := newKubeTest(t, KubernetesConfig{
		InlineEnv: true, Owner: &owner, ServiceAccountName: "trainer", RunAsNonRoot: true, TTLAfterFinished: 10 * time.Minute,
	})
	if ex.Name() != "kubernetes" {
		t.Errorf("Name() = %q", ex.Name())
	}
	spec := kubeTestSpec()
	spec.WorkingDir = "/workspace"
	spec.Timeout = 90 * time.Second
	_, job := kubeStart(t, ex, spec, nil)

	if want := "maestro-" + spec.JobID + "-2"; job.Name != want {
		t.Errorf("name %q, want %q", job.Name, want)
	}
	if errs := validation.IsDNS1123Label(job.Name); len(errs) > 0 || len(job.Name) > 63 {
		t.Errorf("name %q is not a DNS-1123 label: %v", job.Name, errs)
	}
	if job.Namespace != kubeTestNS {
		t.Errorf("namespace %q", job.Namespace)
	}
	wantLabels := map[string]string{
		"app.kubernetes.io/managed-by": "maestro", "maestro.dev/job-id": spec.JobID, "maestro.dev/run-id": spec.RunID,
		"maestro.dev/project-id": spec.ProjectID, "maestro.dev/attempt": "2",
	}
	for k, v := range wantLabels {
		if job.Labels[k] != v || job.Spec.Template.Labels[k] != v {
			t.Errorf("label %s: job %q, pod template %q, want %q", k, job.Labels[k], job.Spec.Template.Labels[k], v)
		}
	}
	if len(job.OwnerReferences) != 1 || job.OwnerReferences[0] != owner {
		t.Errorf("owner references %+v, want %+v", job.OwnerReferences, owner)
	}
	js := job.Spec
	if js.BackoffLimit == nil || *js.BackoffLimit != 0 {
		t.Errorf("backoffLimit %v, want 0", js.BackoffLimit)
	}
	// The backstop for a runner that died: timeout + grace (7.5 s) + 1 min, rounded up.
	if js.ActiveDeadlineSeconds == nil || *js.ActiveDeadlineSeconds != 158 {
		t.Errorf("activeDeadlineSeconds %v, want 158", js.ActiveDeadlineSeconds)
	}
	if js.TTLSecondsAfterFinished == nil || *js.TTLSecondsAfterFinished != 600 {
		t.Errorf("ttlSecondsAfterFinished %v, want 600", js.TTLSecondsAfterFinished)
	}
	ps := js.Template.Spec
	if ps.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %q", ps.RestartPolicy)
	}
	if ps.TerminationGracePeriodSeconds == nil || *ps.TerminationGracePeriodSeconds != 8 {
		t.Errorf("terminationGracePeriodSeconds %v, want 8 (7.5 s rounded up)", ps.TerminationGracePeriodSeconds)
	}
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Error("the service account token must not be mounted")
	}
	if ps.ServiceAccountName != "trainer" {
		t.Errorf("serviceAccountName %q", ps.ServiceAccountName)
	}
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
		t.Error("runAsNonRoot not set")
	}
	if len(ps.Containers) != 1 {
		t.Fatalf("%d containers", len(ps.Containers))
	}
	c := ps.Containers[0]
	if c.Name != "main" || c.Image != spec.Image || !slices.Equal(c.Command, spec.Command) || len(c.Args) != 0 || c.WorkingDir != "/workspace" {
		t.Errorf("container %s image %q command %v args %v dir %q", c.Name, c.Image, c.Command, c.Args, c.WorkingDir)
	}
	var env []string
	for _, e := range c.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	if want := []string{"ALPHA=a", "DB_PASSWORD=s3cret", "MLFLOW_RUN_ID=r1", "ZETA=z"}; !slices.Equal(env, want) {
		t.Errorf("env %v, want %v (sorted)", env, want)
	}
	for _, rl := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		if q := rl[corev1.ResourceCPU]; q.Cmp(resource.MustParse("500m")) != 0 {
			t.Errorf("cpu %s, want 500m as request and limit", q.String())
		}
		if q := rl[corev1.ResourceMemory]; q.Cmp(resource.MustParse("1Gi")) != 0 {
			t.Errorf("memory %s, want 1Gi as request and limit", q.String())
		}
	}
	if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container securityContext %+v", sc)
	}
	if secrets, _ := cs.CoreV1().Secrets(kubeTestNS).List(context.Background(), metav1.ListOptions{}); len(secrets.Items) != 0 {
		t.Errorf("InlineEnv created %d secrets", len(secrets.Items))
	}
}

// By default the environment goes into a Secret owned by the Job, and
// the Job only references it.
func TestKubernetesEnvSecret(t *testing.T) {
	cs, ex := newKubeTest(t, KubernetesConfig{DefaultImage: "python:3.13"})
	spec := kubeTestSpec()
	spec.Image = ""
	spec.Resources = Resources{}
	spec.Grace = 0
	spec.Env["ODD NAME"] = "x"
	_, job := kubeStart(t, ex, spec, nil)
	ps := job.Spec.Template.Spec
	c := ps.Containers[0]
	if c.Image != "python:3.13" {
		t.Errorf("image %q, want the default image", c.Image)
	}
	if len(c.Resources.Requests)+len(c.Resources.Limits) != 0 || ps.TerminationGracePeriodSeconds != nil || ps.SecurityContext.RunAsNonRoot != nil {
		t.Errorf("unset resources/grace/runAsNonRoot should stay unset: %+v %v", c.Resources, ps.TerminationGracePeriodSeconds)
	}
	if job.Spec.TTLSecondsAfterFinished == nil || *job.Spec.TTLSecondsAfterFinished != 3600 {
		t.Errorf("default TTL %v, want 3600", job.Spec.TTLSecondsAfterFinished)
	}
	sec, err := cs.CoreV1().Secrets(kubeTestNS).Get(context.Background(), job.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no env secret: %v", err)
	}
	if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].Kind != "Job" || sec.OwnerReferences[0].Name != job.Name {
		t.Errorf("secret owner %+v, want the Job", sec.OwnerReferences)
	}
	if sec.Labels["maestro.dev/job-id"] != spec.JobID || sec.Immutable == nil || !*sec.Immutable {
		t.Errorf("secret labels %v immutable %v", sec.Labels, sec.Immutable)
	}
	var names []string
	for _, e := range c.Env {
		names = append(names, e.Name)
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != job.Name {
			t.Errorf("env %s is not a secretKeyRef to %s: %+v", e.Name, job.Name, e)
			continue
		}
		if got := string(sec.Data[e.ValueFrom.SecretKeyRef.Key]); got != spec.Env[e.Name] {
			t.Errorf("env %s: secret key %q holds %q, want %q", e.Name, e.ValueFrom.SecretKeyRef.Key, got, spec.Env[e.Name])
		}
	}
	if want := []string{"ALPHA", "DB_PASSWORD", "MLFLOW_RUN_ID", "ODD NAME", "ZETA"}; !slices.Equal(names, want) {
		t.Errorf("env names %v, want %v", names, want)
	}
	if strings.Contains(fmt.Sprintf("%+v", job), "s3cret") {
		t.Error("a secret value appears in the Job")
	}
}

func TestKubernetesJobName(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{
		"0b7e3c5e-1f0a-4c55-9d2e-6b1f3f0c9a41",
		strings.Repeat("a", 80), strings.Repeat("a", 81),
		"Job_ONE", "job-one", "--x--", "ÄÖÜ",
	} {
		for _, attempt := range []int{0, 1, 12345} {
			name, err := kubeJobName(id, attempt)
			if err != nil {
				t.Fatalf("%q/%d: %v", id, attempt, err)
			}
			if errs := validation.IsDNS1123Label(name); len(errs) > 0 || len(name) > 63 {
				t.Errorf("%q/%d: %q invalid: %v", id, attempt, name, errs)
			}
			if !strings.HasPrefix(name, "maestro-") || !strings.HasSuffix(name, fmt.Sprintf("-%d", attempt)) {
				t.Errorf("%q/%d: %q", id, attempt, name)
			}
			key := fmt.Sprintf("%s/%d", id, attempt)
			if prev, dup := seen[name]; dup {
				t.Errorf("%s and %s both map to %s", prev, key, name)
			}
			seen[name] = key
		}
	}
	if _, err := kubeJobName("", 1); err == nil {
		t.Error("empty job id accepted")
	}
}

func TestKubernetesSucceededWithLogs(t *testing.T) {
	cs, ex := newKubeTest(t, KubernetesConfig{})
	kubeLogReactor(cs, "2026-03-01T10:00:00.123456789Z epoch 1\n"+
		"2026-03-01T10:00:01Z epoch 2 \r\n"+
		"no timestamp here\n"+
		"2026-03-01T10:00:02.5Z last line without newline")
	var got kubeLines
	before := time.Now()
	h, job := kubeStart(t, ex, kubeTestSpec(), got.sink)
	kubePod(t, cs, job.Name, corev1.PodRunning, nil)
	kubeEventually(t, "the log lines", func() bool { return len(got.get()) == 4 })
	kubePod(t, cs, job.Name+"-other", corev1.PodPending, nil) // not followed: one stream per attempt
	kubeFinish(t, cs, job.Name, batchv1.JobComplete)
	if r := kubeWait(t, h); r.ExitCode != 0 || r.Signal != "" || r.Err != nil {
		t.Fatalf("result %+v, want exit 0", r)
	}
	lines := got.get()
	want := []struct {
		text string
		at   string
	}{
		{"epoch 1", "2026-03-01T10:00:00.123456789Z"},
		{"epoch 2 ", "2026-03-01T10:00:01Z"},
		{"no timestamp here", ""},
		{"last line without newline", "2026-03-01T10:00:02.5Z"},
	}
	if len(lines) != len(want) {
		t.Fatalf("lines %+v", lines)
	}
	for i, w := range want {
		l := lines[i]
		if l.Text != w.text || l.Stream != Stdout {
			t.Errorf("line %d: %q on %s, want %q on stdout", i, l.Text, l.Stream, w.text)
		}
		if w.at == "" {
			if l.Time.Before(before) || l.Time.After(time.Now()) {
				t.Errorf("line %d: time %v, want about now", i, l.Time)
			}
		} else if at, _ := time.Parse(time.RFC3339Nano, w.at); !l.Time.Equal(at) {
			t.Errorf("line %d: time %v, want %v", i, l.Time, at)
		}
	}
	var logGets int
	for _, a := range cs.Actions() {
		if a.GetVerb() == "get" && a.GetSubresource() == "log" {
			logGets++
			o := a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
			if o.Container != "main" || !o.Follow || !o.Timestamps {
				t.Errorf("log options %+v, want container main, follow, timestamps", o)
			}
		}
	}
	if logGets != 1 {
		t.Errorf("%d log streams opened, want 1", logGets)
	}
	if r := h.Wait(); r.ExitCode != 0 {
		t.Errorf("second Wait: %+v", r)
	}
}

func TestKubernetesFailed(t *testing.T) {
	t.Run("exit code from the pod", func(t *testing.T) {
		cs, ex := newKubeTest(t, KubernetesConfig{})
		var got kubeLines
		h, job := kubeStart(t, ex, kubeTestSpec(), got.sink)
		kubePod(t, cs, job.Name, corev1.PodFailed, &corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"})
		kubeFinish(t, cs, job.Name, batchv1.JobFailed)
		if r := kubeWait(t, h); r.ExitCode != 3 || r.Signal != "" || r.Err != nil {
			t.Errorf("result %+v, want exit 3", r)
		}
		// The fake's default log body, read from the failed pod.
		if l := got.get(); len(l) != 1 || l[0].Text != "fake logs" {
			t.Errorf("logs %+v", l)
		}
	})
	t.Run("OOM killed", func(t *testing.T) {
		cs, ex := newKubeTest(t, KubernetesConfig{})
		h, job := kubeStart(t, ex, kubeTestSpec(), nil)
		kubePod(t, cs, job.Name, corev1.PodFailed, &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"})
		kubeFinish(t, cs, job.Name, batchv1.JobFailed)
		if r := kubeWait(t, h); r.ExitCode != 137 || r.Signal != "SIGKILL" {
			t.Errorf("result %+v, want 137 SIGKILL", r)
		}
	})
	t.Run("no pod", func(t *testing.T) {
		cs, ex := newKubeTest(t, KubernetesConfig{})
		h, job := kubeStart(t, ex, kubeTestSpec(), nil)
		kubeFinish(t, cs, job.Name, batchv1.JobFailed)
		if r := kubeWait(t, h); r.ExitCode != 1 || r.Err != nil {
			t.Errorf("result %+v, want exit 1", r)
		}
	})
}

func TestKubernetesJobVanished(t *testing.T) {
	cs, ex := newKubeTest(t, KubernetesConfig{})
	h, job := kubeStart(t, ex, kubeTestSpec(), nil)
	kubePod(t, cs, job.Name, corev1.PodRunning, nil)
	if err := cs.BatchV1().Jobs(kubeTestNS).Delete(context.Background(), job.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r := kubeWait(t, h)
	if r.ExitCode != -1 || r.Err == nil || !strings.Contains(r.Err.Error(), "kubernetes job") || !strings.Contains(r.Err.Error(), "deleted") {
		t.Errorf("result %+v, want -1 and a deleted-job error", r)
	}
}

func TestKubernetesStop(t *testing.T) {
	cs, ex := newKubeTest(t, KubernetesConfig{})
	var got kubeLines
	h, job := kubeStart(t, ex, kubeTestSpec(), got.sink)
	kubePod(t, cs, job.Name, corev1.PodRunning, nil)
	h.Stop()
	h.Stop()
	r := kubeWait(t, h)
	if r.ExitCode != 143 || r.Signal != "SIGTERM" || r.Err != nil {
		t.Errorf("result %+v, want 143 SIGTERM", r)
	}
	h.Stop()
	if r2 := h.Wait(); r2 != r {
		t.Errorf("second Wait %+v, first %+v", r2, r)
	}
	var deletes int
	for _, a := range cs.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok && a.GetResource().Resource == "jobs" {
			deletes++
			if d.GetName() != job.Name {
				t.Errorf("deleted job %q", d.GetName())
			}
			if p := d.GetDeleteOptions().PropagationPolicy; p == nil || *p != metav1.DeletePropagationForeground {
				t.Errorf("delete propagation %v, want Foreground", p)
			}
		}
	}
	if deletes != 1 {
		t.Errorf("%d job deletes, want 1", deletes)
	}
	if _, err := cs.BatchV1().Jobs(kubeTestNS).Get(context.Background(), job.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Job is still there: %v", err)
	}
}

// A Job that finished before Stop keeps its result and is not deleted.
func TestKubernetesStopAfterFinish(t *testing.T) {
	// The monitor reads the Job once at start, then only on Stop: the
	// Job is complete when Stop makes it look again.
	cs, ex := newKubeTest(t, KubernetesConfig{PollInterval: time.Hour})
	h, job := kubeStart(t, ex, kubeTestSpec(), nil)
	kubeEventually(t, "the first poll", func() bool {
		return slices.ContainsFunc(cs.Actions(), func(a k8stesting.Action) bool {
			return a.GetVerb() == "get" && a.GetResource().Resource == "jobs" && a.GetSubresource() == ""
		})
	})
	kubeFinish(t, cs, job.Name, batchv1.JobComplete)
	h.Stop()
	if r := kubeWait(t, h); r.ExitCode != 0 || r.Signal != "" {
		t.Errorf("result %+v, want the real exit 0", r)
	}
	for _, a := range cs.Actions() {
		if a.GetVerb() == "delete" {
			t.Errorf("unexpected %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
}

func TestKubernetesStartErrors(t *testing.T) {
	for name, mutate := range map[string]func(*Spec){
		"no image":         func(s *Spec) { s.Image = "" },
		"bad cpu":          func(s *Spec) { s.Resources.CPU = "lots" },
		"bad memory":       func(s *Spec) { s.Resources.Memory = "1 GB" },
		"negative memory":  func(s *Spec) { s.Resources.Memory = "-1Gi" },
		"no command":       func(s *Spec) { s.Command = nil },
		"no job id":        func(s *Spec) { s.JobID = "" },
		"bad label value":  func(s *Spec) { s.RunID = "run id with spaces" },
		"negative attempt": func(s *Spec) { s.Attempt = -1 },
	} {
		t.Run(name, func(t *testing.T) {
			cs, ex := newKubeTest(t, KubernetesConfig{})
			spec := kubeTestSpec()
			mutate(&spec)
			if h, err := ex.Start(context.Background(), spec, nil); err == nil {
				h.Stop()
				t.Fatal("Start succeeded")
			}
			if n := len(cs.Actions()); n != 0 {
				t.Errorf("%d API calls for an invalid spec: %v", n, cs.Actions())
			}
		})
	}
}

// A failed Secret creation leaves no Job behind.
func TestKubernetesSecretFailureDeletesJob(t *testing.T) {
	cs, ex := newKubeTest(t, KubernetesConfig{})
	cs.PrependReactor("create", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "x", fmt.Errorf("no"))
	})
	if _, err := ex.Start(context.Background(), kubeTestSpec(), nil); err == nil || !apierrors.IsForbidden(err) {
		t.Fatalf("Start: %v, want the Forbidden error", err)
	}
	jobs, _ := cs.BatchV1().Jobs(kubeTestNS).List(context.Background(), metav1.ListOptions{})
	if len(jobs.Items) != 0 {
		t.Errorf("%d jobs left", len(jobs.Items))
	}
}

func TestKubernetesAdoptsExistingJob(t *testing.T) {
	cs, ex := newKubeTest(t, KubernetesConfig{InlineEnv: true})
	spec := kubeTestSpec()
	existing, _, err := ex.build(spec)
	if err != nil {
		t.Fatal(err)
	}
	existing.UID = "uid-of-the-first-start"
	if _, err := cs.BatchV1().Jobs(kubeTestNS).Create(context.Background(), existing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h, job := kubeStart(t, ex, spec, nil)
	if job.UID != existing.UID {
		t.Errorf("Job %s replaced", job.Name)
	}
	kubeFinish(t, cs, job.Name, batchv1.JobComplete)
	if r := kubeWait(t, h); r.ExitCode != 0 || r.Err != nil {
		t.Errorf("result %+v", r)
	}

	// Same name, another job's labels: not ours to adopt.
	other := existing.DeepCopy()
	spec.Attempt = 3
	other.Name, _ = kubeJobName(spec.JobID, spec.Attempt)
	other.UID = ""
	other.Labels = map[string]string{"maestro.dev/job-id": "someone-else", "maestro.dev/attempt": "3", "app.kubernetes.io/managed-by": "maestro"}
	if _, err := cs.BatchV1().Jobs(kubeTestNS).Create(context.Background(), other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if h, err := ex.Start(context.Background(), spec, nil); err == nil {
		h.Stop()
		t.Fatal("adopted another job's Job")
	}
}

func TestKubernetesLogLineLimits(t *testing.T) {
	long := strings.Repeat("x", MaxLineBytes+100)
	utf := strings.Repeat("é", MaxLineBytes/2+10) // 2 bytes each: the cut falls on a rune boundary
	odd := "y" + utf                              // here it does not
	body := "2026-03-01T10:00:00Z " + long + "\n" + long + "\n" + odd + "\n2026-03-01T10:00:00Z\n" + "\n"
	var lines []Line
	err := kubeReadLines(strings.NewReader(body), func(raw []byte) {
		l, _ := kubeParseLine(raw)
		lines = append(lines, l)
	})
	if err == nil || err.Error() != "EOF" {
		t.Fatalf("err %v, want EOF", err)
	}
	if len(lines) != 5 {
		t.Fatalf("%d lines", len(lines))
	}
	if lines[0].Text != long[:MaxLineBytes] || lines[1].Text != long[:MaxLineBytes] {
		t.Errorf("long lines cut at %d and %d bytes, want %d", len(lines[0].Text), len(lines[1].Text), MaxLineBytes)
	}
	if n := len(lines[2].Text); n != MaxLineBytes-1 || !strings.HasPrefix(odd, lines[2].Text) {
		t.Errorf("multi-byte line cut to %d bytes, want %d (no half rune)", n, MaxLineBytes-1)
	}
	if lines[3].Text != "" || lines[3].Time.Year() != 2026 {
		t.Errorf("empty stamped line: %+v", lines[3])
	}
	if lines[4].Text != "" {
		t.Errorf("empty line: %+v", lines[4])
	}

	// A stream that breaks mid-line does not deliver the partial line
	// (the resumed stream sends it again, whole).
	broken := io.MultiReader(strings.NewReader("whole\npart"), kubeErrReader{})
	var got []string
	err = kubeReadLines(broken, func(raw []byte) { got = append(got, string(raw)) })
	if !errors.Is(err, errKubeBroken) || !slices.Equal(got, []string{"whole"}) {
		t.Errorf("broken stream: %v %q", err, got)
	}
}

var errKubeBroken = errors.New("connection reset")

type kubeErrReader struct{}

func (kubeErrReader) Read([]byte) (int, error) { return 0, errKubeBroken }

// A Job that cannot be read for APIErrorTimeout ends the attempt with an
// error, and the executor deletes the Job rather than leave it unobserved.
func TestKubernetesAPIErrors(t *testing.T) {
	cs, ex := newKubeTest(t, KubernetesConfig{APIErrorTimeout: 50 * time.Millisecond})
	// Reactors are added before Start: the fake does not lock its
	// reactor chain against calls in flight.
	var failing atomic.Bool
	cs.PrependReactor("get", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !failing.Load() {
			return false, nil, nil
		}
		return true, nil, apierrors.NewServiceUnavailable("etcd is sad")
	})
	h, job := kubeStart(t, ex, kubeTestSpec(), nil)
	failing.Store(true)
	r := kubeWait(t, h)
	if r.ExitCode != -1 || !apierrors.IsServiceUnavailable(r.Err) {
		t.Errorf("result %+v, want -1 and the API error", r)
	}
	if !slices.ContainsFunc(cs.Actions(), func(a k8stesting.Action) bool { return a.GetVerb() == "delete" }) {
		t.Error("the unobservable Job was not deleted")
	}
	if _, err := cs.Tracker().Get(batchv1.SchemeGroupVersion.WithResource("jobs"), kubeTestNS, job.Name); !apierrors.IsNotFound(err) {
		t.Errorf("Job still there: %v", err)
	}
}

// A stopped Job that never goes away (a pod stuck terminating on a lost
// node) is reported stopped after grace + StopTimeout.
func TestKubernetesStopTimeout(t *testing.T) {
	cs, ex := newKubeTest(t, KubernetesConfig{StopTimeout: 50 * time.Millisecond})
	spec := kubeTestSpec()
	spec.Grace = 0
	cs.PrependReactor("delete", "jobs", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, nil // accepted, but the Job stays (finalizers pending)
	})
	h, job := kubeStart(t, ex, spec, nil)
	h.Stop()
	if r := kubeWait(t, h); r.ExitCode != 143 || r.Signal != "SIGTERM" {
		t.Errorf("result %+v, want 143 SIGTERM", r)
	}
	if _, err := cs.BatchV1().Jobs(kubeTestNS).Get(context.Background(), job.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("the test's Job should still exist: %v", err)
	}
}

// The runner's Role (deploy/k8s/runner-rbac.yaml) grants exactly the
// calls the executor makes: every call it makes in the scenarios below is
// allowed, and every verb granted is used. The controller's part is done
// on the fake's tracker directly, so cs.Actions() holds only the
// executor's calls.
func TestKubernetesRBACMatchesCalls(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "k8s", "runner-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	granted := map[string]bool{}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var role rbacv1.Role
		if err := yaml.Unmarshal([]byte(doc), &role); err != nil || role.Kind != "Role" {
			continue
		}
		for _, r := range role.Rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						granted[g+" "+res+" "+v] = true
					}
				}
			}
		}
	}
	if len(granted) == 0 {
		t.Fatal("no Role rules in runner-rbac.yaml")
	}

	cs, ex := newKubeTest(t, KubernetesConfig{})
	kubeLogReactor(cs, "2026-03-01T10:00:00Z hello\n")
	jobsGVR := batchv1.SchemeGroupVersion.WithResource("jobs")
	ctx := context.Background()
	finish := func(name string, cond batchv1.JobConditionType) {
		obj, err := cs.Tracker().Get(jobsGVR, kubeTestNS, name)
		if err != nil {
			t.Fatal(err)
		}
		j := obj.(*batchv1.Job)
		j.Status.Conditions = []batchv1.JobCondition{{Type: cond, Status: corev1.ConditionTrue}}
		if err := cs.Tracker().Update(jobsGVR, j, kubeTestNS); err != nil {
			t.Fatal(err)
		}
	}

	// A failed attempt with logs, then its adoption by a second Start.
	spec := kubeTestSpec()
	h, err := ex.Start(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	name := h.(*kubeHandle).name
	if err := cs.Tracker().Add(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-p", Namespace: kubeTestNS, Labels: map[string]string{batchv1.JobNameLabel: name}},
		Status: corev1.PodStatus{Phase: corev1.PodFailed, ContainerStatuses: []corev1.ContainerStatus{
			{Name: "main", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2}}},
		}},
	}); err != nil {
		t.Fatal(err)
	}
	h2, err := ex.Start(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	finish(name, batchv1.JobFailed)
	if r := kubeWait(t, h); r.ExitCode != 2 {
		t.Errorf("result %+v", r)
	}
	kubeWait(t, h2)
	// A stopped attempt.
	spec.Attempt++
	h3, err := ex.Start(ctx, spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	h3.Stop()
	kubeWait(t, h3)

	used := map[string]bool{}
	for _, a := range cs.Actions() {
		res := a.GetResource().Resource
		if sub := a.GetSubresource(); sub != "" {
			res += "/" + sub
		}
		key := a.GetResource().Group + " " + res + " " + a.GetVerb()
		used[key] = true
		if !granted[key] {
			t.Errorf("the executor calls %q, which runner-rbac.yaml does not grant", key)
		}
	}
	for key := range granted {
		if !used[key] {
			t.Errorf("runner-rbac.yaml grants %q, which the executor never calls", key)
		}
	}
}

func TestKubernetesFromConfig(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t0ken}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ex, err := NewKubernetesFromConfig(kubeconfig, KubernetesConfig{})
	if err != nil {
		t.Fatalf("from kubeconfig: %v", err)
	}
	if ex.cfg.Namespace != "maestro-jobs" || ex.cfg.PollInterval != 2*time.Second || ex.cfg.TTLAfterFinished != time.Hour {
		t.Errorf("defaults %+v", ex.cfg)
	}
	if _, err := NewKubernetesFromConfig(filepath.Join(t.TempDir(), "missing"), KubernetesConfig{}); err == nil {
		t.Error("a missing kubeconfig was accepted")
	}
	// Outside a cluster the in-cluster configuration is an error.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if _, err := NewKubernetesFromConfig("", KubernetesConfig{}); err == nil {
		t.Error("in-cluster config outside a cluster")
	}
}
