package runner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

// Labels the Kubernetes executor puts on every Job, its pod template and
// its env Secret. The Job controller adds batchv1.JobNameLabel to the pods.
const (
	KubeLabelManagedBy = "app.kubernetes.io/managed-by"
	KubeLabelJobID     = "maestro.dev/job-id"
	KubeLabelRunID     = "maestro.dev/run-id"
	KubeLabelProjectID = "maestro.dev/project-id"
	KubeLabelAttempt   = "maestro.dev/attempt"

	kubeManagedBy = "maestro"
	// kubeContainer is the name of the one container of an attempt's pod.
	kubeContainer = "main"
)

// KubernetesConfig configures the Kubernetes executor. Zero values take
// the defaults named on each field.
type KubernetesConfig struct {
	// Namespace the Jobs run in ("" = "maestro-jobs", the namespace
	// deploy/k8s/runner-rbac.yaml grants the runner).
	Namespace string
	// DefaultImage is used when the spec names no image; with neither,
	// Start fails.
	DefaultImage string
	// ServiceAccountName the attempt's pod runs as ("" = the namespace's
	// default). Its token is never mounted.
	ServiceAccountName string
	// RunAsNonRoot makes the kubelet refuse to start an image whose user
	// is root (the image must then name a numeric non-root USER).
	RunAsNonRoot bool
	// Owner, if set, is put on every Job so that deleting the owner
	// garbage-collects its Jobs (and their pods). The owner must be
	// cluster-scoped or live in Namespace: Kubernetes treats an owner in
	// another namespace as absent and deletes the dependent Job at once.
	// So with the runner in "maestro" and Jobs in "maestro-jobs" (the
	// shipped layout) leave it nil and rely on TTLAfterFinished.
	Owner *metav1.OwnerReference
	// TTLAfterFinished is how long a finished Job (and its pod and logs)
	// is kept (0 = 1h; negative = until deleted by hand).
	TTLAfterFinished time.Duration
	// PollInterval is how often the Job (and, until its log stream is
	// open, its pods) are read (0 = 2s).
	PollInterval time.Duration
	// LogWait bounds how long Wait waits, after the Job ended, for the log
	// stream to end: the wait is cut once no line arrived for this long
	// (0 = 10s).
	LogWait time.Duration
	// StopTimeout is how long after the spec's grace period a stopped Job
	// may take to disappear before Wait reports the stop anyway (0 = 1m):
	// a pod stuck on an unreachable node would otherwise hold it forever.
	StopTimeout time.Duration
	// APIErrorTimeout is how long reading the Job may keep failing before
	// Wait gives up with an error (0 = 5m); the Job is then deleted, best
	// effort, so that no unobserved attempt keeps running.
	APIErrorTimeout time.Duration
	// InlineEnv puts the attempt's environment literally into the Job's
	// container spec. By default it goes into a per-attempt Secret owned
	// by the Job (referenced with secretKeyRef), since the environment
	// carries resolved secrets and whoever may read Jobs would see them.
	InlineEnv bool
}

// Kubernetes runs each attempt as a batch/v1 Job with one pod: Kubernetes
// retries nothing (backoffLimit 0), Maestro's runner owns attempts and
// timeouts.
type Kubernetes struct {
	client kubernetes.Interface
	cfg    KubernetesConfig
}

// NewKubernetes returns an executor creating Jobs through client.
func NewKubernetes(client kubernetes.Interface, cfg KubernetesConfig) *Kubernetes {
	if cfg.Namespace == "" {
		cfg.Namespace = "maestro-jobs"
	}
	if cfg.TTLAfterFinished == 0 {
		cfg.TTLAfterFinished = time.Hour
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 2 * time.Second
	}
	if cfg.LogWait <= 0 {
		cfg.LogWait = 10 * time.Second
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = time.Minute
	}
	if cfg.APIErrorTimeout <= 0 {
		cfg.APIErrorTimeout = 5 * time.Minute
	}
	return &Kubernetes{client: client, cfg: cfg}
}

// NewKubernetesFromConfig connects with the in-cluster service account
// when kubeconfig is "", else with the kubeconfig file at that path.
func NewKubernetesFromConfig(kubeconfig string, cfg KubernetesConfig) (*Kubernetes, error) {
	var rc *rest.Config
	var err error
	if kubeconfig == "" {
		rc, err = rest.InClusterConfig()
	} else {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes config: %w", err)
	}
	// client-go's defaults (5 requests/s, bursts of 10) would throttle a
	// runner polling a few dozen attempts every PollInterval.
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = 50, 100
	}
	rc.UserAgent = "maestro-runner"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return NewKubernetes(cs, cfg), nil
}

// Name is "kubernetes".
func (k *Kubernetes) Name() string { return "kubernetes" }

// Start creates the attempt's Job (and its env Secret) and returns once
// the API server has accepted it; scheduling, image pulls and the pod's
// start happen after. A Job of the same name left by an earlier Start of
// the same attempt (a runner restarted mid-start) is adopted; one of
// another job is an error. ctx bounds the creation only: the returned
// handle watches the Job until it ends or is stopped.
func (k *Kubernetes) Start(ctx context.Context, spec Spec, logs LogSink) (Handle, error) {
	job, secret, err := k.build(spec)
	if err != nil {
		return nil, err
	}
	jobs := k.client.BatchV1().Jobs(k.cfg.Namespace)
	created, err := jobs.Create(ctx, job, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = jobs.Get(ctx, job.Name, metav1.GetOptions{})
		if err == nil && !kubeSameAttempt(created, job) {
			return nil, fmt.Errorf("kubernetes job %s/%s exists and belongs to another attempt (labels %v)", k.cfg.Namespace, job.Name, created.Labels)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("create kubernetes job %s/%s: %w", k.cfg.Namespace, job.Name, err)
	}
	if secret != nil {
		// Owned by the Job: the garbage collector deletes it with the Job
		// (Stop, TTL). blockOwnerDeletion stays unset, which would need
		// update rights on jobs/finalizers.
		secret.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "batch/v1", Kind: "Job", Name: created.Name, UID: created.UID, Controller: ptr.To(true),
		}}
		_, err := k.client.CoreV1().Secrets(k.cfg.Namespace).Create(ctx, secret, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			// Leave nothing running. Until the Secret exists the pod cannot
			// start its container (CreateContainerConfigError), so nothing
			// ran yet either.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if derr := jobs.Delete(dctx, created.Name, kubeForeground()); derr != nil && !apierrors.IsNotFound(derr) {
				err = errors.Join(err, fmt.Errorf("delete job: %w", derr))
			}
			return nil, fmt.Errorf("create env secret for kubernetes job %s/%s: %w", k.cfg.Namespace, job.Name, err)
		}
	}
	if logs == nil {
		logs = func(Line) {}
	}
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &kubeHandle{
		k: k, name: created.Name, logs: logs, grace: spec.Grace,
		ctx: base, cancel: cancel,
		stop: make(chan struct{}), ended: make(chan struct{}),
		logsDone: make(chan struct{}), done: make(chan struct{}),
	}
	go h.streamLogs()
	go h.monitor()
	return h, nil
}

// build returns the attempt's Job and, unless InlineEnv, the Secret
// holding its environment (nil when the environment is empty).
func (k *Kubernetes) build(spec Spec) (*batchv1.Job, *corev1.Secret, error) {
	image := spec.Image
	if image == "" {
		image = k.cfg.DefaultImage
	}
	if image == "" {
		return nil, nil, errors.New("kubernetes executor: the job names no image and no default image is configured")
	}
	if len(spec.Command) == 0 {
		return nil, nil, errors.New("kubernetes executor: empty command")
	}
	name, err := kubeJobName(spec.JobID, spec.Attempt)
	if err != nil {
		return nil, nil, err
	}
	labels := map[string]string{
		KubeLabelManagedBy: kubeManagedBy,
		KubeLabelJobID:     spec.JobID,
		KubeLabelRunID:     spec.RunID,
		KubeLabelProjectID: spec.ProjectID,
		KubeLabelAttempt:   strconv.Itoa(spec.Attempt),
	}
	for key, v := range labels {
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, nil, fmt.Errorf("kubernetes executor: label %s=%q: %s", key, v, strings.Join(errs, "; "))
		}
	}

	res := corev1.ResourceList{}
	for rn, q := range map[corev1.ResourceName]string{corev1.ResourceCPU: spec.Resources.CPU, corev1.ResourceMemory: spec.Resources.Memory} {
		if q == "" {
			continue
		}
		qty, err := resource.ParseQuantity(q)
		if err != nil {
			return nil, nil, fmt.Errorf("kubernetes executor: %s %q: %w", rn, q, err)
		}
		if qty.Sign() <= 0 {
			return nil, nil, fmt.Errorf("kubernetes executor: %s %q must be positive", rn, q)
		}
		res[rn] = qty
	}
	var resources corev1.ResourceRequirements
	if len(res) > 0 {
		// Requests = limits: the attempt gets exactly what it asked for
		// (Guaranteed QoS when both are set) and is not evicted first.
		resources = corev1.ResourceRequirements{Requests: res, Limits: res.DeepCopy()}
	}

	// The environment arrives with secrets already resolved. By default
	// it goes into a Secret of its own so that the values are not in the
	// Job object for everyone who can read Jobs; InlineEnv writes them
	// into the container spec as they are.
	var env []corev1.EnvVar
	var secret *corev1.Secret
	names := slices.Sorted(maps.Keys(spec.Env))
	if !k.cfg.InlineEnv && len(names) > 0 {
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.cfg.Namespace, Labels: maps.Clone(labels)},
			Type:       corev1.SecretTypeOpaque,
			Immutable:  ptr.To(true),
			Data:       map[string][]byte{},
		}
	}
	for i, n := range names {
		if secret == nil {
			env = append(env, corev1.EnvVar{Name: n, Value: spec.Env[n]})
			continue
		}
		key := n
		if len(validation.IsConfigMapKey(n)) > 0 {
			key = "maestro.env." + strconv.Itoa(i)
		}
		secret.Data[key] = []byte(spec.Env[n])
		env = append(env, corev1.EnvVar{Name: n, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key,
		}}})
	}

	pod := corev1.PodSpec{
		RestartPolicy:                corev1.RestartPolicyNever,
		ServiceAccountName:           k.cfg.ServiceAccountName,
		AutomountServiceAccountToken: ptr.To(false),
		SecurityContext: &corev1.PodSecurityContext{
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:       kubeContainer,
			Image:      image,
			Command:    slices.Clone(spec.Command),
			WorkingDir: spec.WorkingDir,
			Env:        env,
			Resources:  resources,
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
	}
	if k.cfg.RunAsNonRoot {
		pod.SecurityContext.RunAsNonRoot = ptr.To(true)
	}
	if spec.Grace > 0 {
		// Whole seconds, rounded up; unset keeps Kubernetes' 30 s.
		pod.TerminationGracePeriodSeconds = ptr.To(int64((spec.Grace + time.Second - 1) / time.Second))
	}
	js := batchv1.JobSpec{
		// One pod, one try: Maestro counts attempts and retries itself.
		BackoffLimit: ptr.To[int32](0),
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: maps.Clone(labels)},
			Spec:       pod,
		},
	}
	if spec.Timeout > 0 {
		// The runner enforces the timeout (SIGTERM, grace, SIGKILL); the
		// deadline, a minute past timeout and grace, is the backstop that
		// ends a Job whose runner died, so no attempt runs unobserved for
		// ever.
		js.ActiveDeadlineSeconds = ptr.To(int64((spec.Timeout + spec.Grace + time.Minute + time.Second - 1) / time.Second))
	}
	if k.cfg.TTLAfterFinished > 0 {
		js.TTLSecondsAfterFinished = ptr.To(int32(min(k.cfg.TTLAfterFinished/time.Second, 1<<31-1)))
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.cfg.Namespace, Labels: labels},
		Spec:       js,
	}
	if k.cfg.Owner != nil {
		job.OwnerReferences = []metav1.OwnerReference{*k.cfg.Owner}
	}
	return job, secret, nil
}

// kubeJobName is the Job's name: "maestro-<job id>-<attempt>", a DNS-1123
// label of at most 63 characters. A job id that is too long or not
// already lower-case alphanumerics and dashes (a UUID is) is cut and
// sanitized, with a hash of the original keeping names distinct.
func kubeJobName(jobID string, attempt int) (string, error) {
	if jobID == "" {
		return "", errors.New("kubernetes executor: empty job id")
	}
	if attempt < 0 {
		return "", fmt.Errorf("kubernetes executor: attempt %d", attempt)
	}
	suffix := "-" + strconv.Itoa(attempt)
	budget := validation.DNS1123LabelMaxLength - len("maestro-") - len(suffix)
	id := strings.Trim(strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return '-'
	}, jobID), "-")
	if id != jobID || len(id) > budget {
		h := fnv.New32a()
		h.Write([]byte(jobID))
		id = strings.Trim(id[:min(len(id), budget-9)], "-")
		id = strings.TrimPrefix(id+"-", "-") + fmt.Sprintf("%08x", h.Sum32())
	}
	name := "maestro-" + id + suffix
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return "", fmt.Errorf("kubernetes executor: job name %q: %s", name, strings.Join(errs, "; "))
	}
	return name, nil
}

// kubeSameAttempt reports whether an existing Job is the one Start would
// have created: Maestro's, for the same job and attempt.
func kubeSameAttempt(have, want *batchv1.Job) bool {
	for _, l := range []string{KubeLabelManagedBy, KubeLabelJobID, KubeLabelAttempt} {
		if have.Labels[l] != want.Labels[l] {
			return false
		}
	}
	return true
}

func kubeForeground() metav1.DeleteOptions {
	// Foreground: the Job goes only after its pods are gone. The legacy
	// default for Jobs (orphan) would leave the pod running.
	return metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}
}

// kubeHandle watches one attempt's Job. Three goroutines: monitor (polls
// the Job, carries out Stop, decides the result), streamLogs (finds the
// pod, follows its log) and the caller's.
type kubeHandle struct {
	k     *Kubernetes
	name  string
	logs  LogSink
	grace time.Duration

	ctx    context.Context // cancelled once the result is final
	cancel context.CancelFunc

	stopOnce sync.Once
	stop     chan struct{} // closed by Stop
	ended    chan struct{} // closed when the Job's outcome is known
	logsDone chan struct{} // closed when streamLogs returned
	done     chan struct{} // closed when result is set
	activity atomic.Int64  // unix nanos of the last log line
	result   Result
}

// Wait returns the attempt's result once the Job has ended (or vanished,
// or was stopped) and its log was delivered.
func (h *kubeHandle) Wait() Result {
	<-h.done
	return h.result
}

// Stop deletes the Job with foreground propagation: its pod gets SIGTERM
// and, after the spec's grace period, SIGKILL. It returns at once; a Job
// that had already finished is left alone and keeps its result.
func (h *kubeHandle) Stop() {
	h.stopOnce.Do(func() { close(h.stop) })
}

func (h *kubeHandle) stopRequested() bool {
	select {
	case <-h.stop:
		return true
	default:
		return false
	}
}

// kubeStopped is the result of an attempt stopped before it finished.
var kubeStopped = Result{ExitCode: 128 + 15, Signal: "SIGTERM"}

func (h *kubeHandle) monitor() {
	res := h.watchJob()
	close(h.ended)
	h.awaitLogs()
	h.cancel()
	h.result = res
	close(h.done)
}

// watchJob polls the Job until its outcome is known.
func (h *kubeHandle) watchJob() Result {
	cfg := h.k.cfg
	jobs := h.k.client.BatchV1().Jobs(cfg.Namespace)
	tick := time.NewTicker(cfg.PollInterval)
	defer tick.Stop()
	stopCh := h.stop
	var deleted bool           // Stop deleted the still unfinished Job
	var stopDeadline time.Time // after it, report the stop without the Job being gone
	var failingSince time.Time
	for {
		job, err := h.get()
		switch {
		case apierrors.IsNotFound(err):
			if deleted || h.stopRequested() {
				return kubeStopped
			}
			return Result{ExitCode: -1, Err: fmt.Errorf("kubernetes job %s/%s deleted", cfg.Namespace, h.name)}
		case err != nil:
			if failingSince.IsZero() {
				failingSince = time.Now()
			} else if time.Since(failingSince) > cfg.APIErrorTimeout {
				ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
				_ = jobs.Delete(ctx, h.name, kubeForeground())
				cancel()
				return Result{ExitCode: -1, Err: fmt.Errorf("kubernetes job %s/%s: cannot be read for %s: %w", cfg.Namespace, h.name, cfg.APIErrorTimeout, err)}
			}
		default:
			failingSince = time.Time{}
			if res, finished := h.outcome(job); finished {
				if deleted {
					return kubeStopped
				}
				return res
			}
			if h.stopRequested() && !deleted {
				ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
				err := jobs.Delete(ctx, h.name, kubeForeground())
				cancel()
				switch {
				case err == nil:
					deleted = true
					stopDeadline = time.Now().Add(h.grace + cfg.StopTimeout)
				case apierrors.IsNotFound(err):
					return kubeStopped
				} // else: try again at the next poll
			}
		}
		if deleted && time.Now().After(stopDeadline) {
			return kubeStopped
		}
		select {
		case <-tick.C:
		case <-stopCh:
			stopCh = nil // act on it now, then poll as usual
		}
	}
}

func (h *kubeHandle) get() (*batchv1.Job, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	return h.k.client.BatchV1().Jobs(h.k.cfg.Namespace).Get(ctx, h.name, metav1.GetOptions{})
}

// outcome maps a Job's status to a result; finished is false while it runs.
func (h *kubeHandle) outcome(job *batchv1.Job) (res Result, finished bool) {
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return Result{}, true
		case batchv1.JobFailed:
			return h.failedResult(), true
		}
	}
	if job.Status.Succeeded > 0 {
		return Result{}, true
	}
	return Result{}, false
}

// failedResult reads the exit status of the container from the Job's
// pod; without one (deadline, eviction, pod gone) the exit code is 1.
func (h *kubeHandle) failedResult() Result {
	pods := h.pods()
	slices.Reverse(pods) // newest first
	for _, p := range pods {
		for _, cs := range p.Status.ContainerStatuses {
			t := cs.State.Terminated
			if cs.Name != kubeContainer || t == nil {
				continue
			}
			res := Result{ExitCode: int(t.ExitCode), Signal: kubeSignalName(int(t.Signal))}
			if t.Reason == "OOMKilled" && res.Signal == "" {
				res.Signal = "SIGKILL"
			}
			if res.ExitCode == 0 && res.Signal == "" {
				res.ExitCode = 1 // the Job failed although the container did not say so
			}
			return res
		}
	}
	return Result{ExitCode: 1}
}

// pods lists the Job's pods, oldest first.
func (h *kubeHandle) pods() []corev1.Pod {
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	list, err := h.k.client.CoreV1().Pods(h.k.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + h.name})
	if err != nil {
		return nil
	}
	pods := list.Items
	slices.SortStableFunc(pods, func(a, b corev1.Pod) int {
		return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
	})
	return pods
}

func kubeSignalName(n int) string {
	switch n {
	case 0:
		return ""
	case 1:
		return "SIGHUP"
	case 2:
		return "SIGINT"
	case 6:
		return "SIGABRT"
	case 9:
		return "SIGKILL"
	case 11:
		return "SIGSEGV"
	case 15:
		return "SIGTERM"
	}
	return "signal " + strconv.Itoa(n)
}

// awaitLogs waits for the log stream to end after the Job did, cutting it
// once no line arrived for LogWait.
func (h *kubeHandle) awaitLogs() {
	endedAt := time.Now().UnixNano()
	tick := time.NewTicker(min(h.k.cfg.PollInterval, h.k.cfg.LogWait))
	defer tick.Stop()
	for {
		select {
		case <-h.logsDone:
			return
		case <-tick.C:
			if time.Since(time.Unix(0, max(endedAt, h.activity.Load()))) > h.k.cfg.LogWait {
				h.cancel()
				<-h.logsDone
				return
			}
		}
	}
}

// streamLogs waits for the Job's pod to run and follows its container's
// log into the sink. A stream cut short (not at its end) is reopened from
// the last timestamp seen; lines at or before it are skipped.
func (h *kubeHandle) streamLogs() {
	defer close(h.logsDone)
	pods := h.k.client.CoreV1().Pods(h.k.cfg.Namespace)
	tick := time.NewTicker(h.k.cfg.PollInterval)
	defer tick.Stop()
	var pod string
	var last time.Time
	resumed := false
	for {
		ended := false
		select {
		case <-h.ended:
			ended = true // one more try below, then give up
		default:
		}
		if pod == "" {
			for _, p := range h.pods() {
				if p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
					pod = p.Name
					break
				}
			}
		}
		if pod != "" {
			opts := &corev1.PodLogOptions{Container: kubeContainer, Follow: true, Timestamps: true}
			if resumed {
				opts.SinceTime = &metav1.Time{Time: last}
			}
			rc, err := pods.GetLogs(pod, opts).Stream(h.ctx)
			if err == nil {
				skipUntil := time.Time{}
				if resumed {
					skipUntil = last
				}
				err = kubeReadLines(rc, func(raw []byte) {
					l, stamped := kubeParseLine(raw)
					if stamped {
						if !l.Time.After(skipUntil) {
							return
						}
						last = l.Time
					}
					h.activity.Store(time.Now().UnixNano())
					h.logs(l)
				})
				rc.Close()
				if errors.Is(err, io.EOF) || h.ctx.Err() != nil {
					return
				}
				resumed = true
			} else if apierrors.IsNotFound(err) {
				pod = ""
			}
		}
		if ended {
			return
		}
		select {
		case <-h.ctx.Done():
			return
		case <-tick.C:
		case <-h.ended:
		}
	}
}

// kubeTimestampMax bounds the RFC3339Nano timestamp (and its space) the
// kubelet puts before each line.
const kubeTimestampMax = 40

// kubeReadLines calls emit with each line of r (without its newline), a
// line cut at MaxLineBytes plus room for its timestamp. It returns io.EOF
// at the end of r; a last line without newline is emitted then, but not
// when the stream broke (it will be read again when resumed).
func kubeReadLines(r io.Reader, emit func([]byte)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	limit := MaxLineBytes + kubeTimestampMax
	line := make([]byte, 0, 4096)
	for {
		chunk, err := br.ReadSlice('\n')
		nl := len(chunk) > 0 && chunk[len(chunk)-1] == '\n'
		if nl {
			chunk = chunk[:len(chunk)-1]
		}
		if room := limit - len(line); room > 0 {
			line = append(line, chunk[:min(room, len(chunk))]...)
		}
		if nl {
			emit(line)
			line = line[:0]
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			if len(line) > 0 {
				emit(line)
			}
			return io.EOF
		default:
			return err
		}
	}
}

// kubeParseLine splits the kubelet's leading RFC3339Nano timestamp off a
// log line; stamped is false (and the time now) when there is none.
func kubeParseLine(raw []byte) (l Line, stamped bool) {
	l = Line{Stream: Stdout}
	text := raw
	ts := raw
	if i := bytes.IndexByte(raw, ' '); i >= 0 {
		ts = raw[:i]
	}
	if len(ts) <= kubeTimestampMax {
		if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil {
			l.Time, stamped = t, true
			text = raw[min(len(ts)+1, len(raw)):]
		}
	}
	if !stamped {
		l.Time = time.Now()
	}
	text = bytes.TrimSuffix(text, []byte("\r"))
	if len(text) > MaxLineBytes {
		text = text[:MaxLineBytes]
		// Do not end on half a UTF-8 sequence.
		for i := 0; i < utf8.UTFMax && len(text) > 0; i++ {
			if r, size := utf8.DecodeLastRune(text); r != utf8.RuneError || size != 1 {
				break
			}
			text = text[:len(text)-1]
		}
	}
	l.Text = string(text)
	return l, stamped
}
