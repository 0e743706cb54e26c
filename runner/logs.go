package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/maestro-ml/maestro/events"
)

// Job logs live on their own stream, one subject per job: the runner that
// captures them publishes batches of lines as they come, and any API
// instance reads them back (and follows them live) without knowing which
// runner ran the job. At the end of each attempt the runner also stores
// the attempt's log as an artifact of the job's run, which outlives the
// stream's retention.
const (
	// LogStreamName is the stream of job logs.
	LogStreamName = "MAESTRO_JOB_LOGS"
	// LogSubjectPrefix starts every job's log subject.
	LogSubjectPrefix = "maestro.joblogs."
	// LogRetention is how long the stream keeps a job's lines.
	LogRetention = 7 * 24 * time.Hour
	// headerAttempt names the attempt a batch of lines belongs to.
	headerAttempt = "Maestro-Attempt"
	// headerEnd marks the last message of an attempt's log.
	headerEnd = "Maestro-Log-End"
	// maxBatchBytes bounds the lines of one message (the stream takes
	// messages of up to 1 MiB).
	maxBatchBytes = 256 << 10
	// flushEvery is how long a line waits, at most, before it is published.
	flushEvery = 100 * time.Millisecond
)

// LogSubject is the subject of a job's log.
func LogSubject(jobID string) string { return LogSubjectPrefix + jobID }

// OpenLogStream creates (or updates) the job log stream: bounded in age and
// size, oldest lines dropped first.
func OpenLogStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        LogStreamName,
		Description: "Maestro training job logs, one subject per job",
		Subjects:    []string{LogSubjectPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      LogRetention,
		MaxBytes:    8 << 30,
		MaxMsgSize:  1 << 20,
		Replicas:    max(replicas, 1),
	})
	if err != nil {
		return nil, events.ExplainReplicasError(LogStreamName, replicas, fmt.Errorf("job log stream: %w", err))
	}
	return s, nil
}

// LogWriter captures one attempt's output: a LogSink that never blocks
// (lines beyond its queue or its byte limit are counted and dropped, and a
// marker line says how many), secrets replaced before anything leaves it,
// lines published to the job's log subject in batches, and kept in a file
// for the run artifact.
type LogWriter struct {
	js      jetstream.JetStream
	subject string
	attempt int
	limit   int64
	redact  *strings.Replacer
	file    *os.File

	queue   chan Line
	done    chan struct{}
	closed  atomic.Bool
	bytes   atomic.Int64 // accepted so far
	dropped atomic.Int64
	mu      sync.Mutex
	failed  error // the first publish failure
}

// NewLogWriter starts the writer of attempt's log of job jobID, keeping a
// copy in file (which it closes). limit bounds the bytes of lines kept;
// secrets are replaced by "[REDACTED]" wherever they appear in a line.
func NewLogWriter(js jetstream.JetStream, jobID string, attempt int, limit int64, secrets []string, file *os.File) *LogWriter {
	var pairs []string
	for _, s := range secrets {
		if len(s) >= 4 { // shorter values would redact ordinary text
			pairs = append(pairs, s, "[REDACTED]")
		}
	}
	w := &LogWriter{js: js, subject: LogSubject(jobID), attempt: attempt, limit: limit, redact: strings.NewReplacer(pairs...),
		file: file, queue: make(chan Line, 8192), done: make(chan struct{})}
	go w.run()
	return w
}

// Sink is the writer's LogSink.
func (w *LogWriter) Sink(l Line) {
	if w.closed.Load() {
		return
	}
	if w.bytes.Add(int64(len(l.Text))+1) > w.limit {
		w.dropped.Add(1)
		return
	}
	select {
	case w.queue <- l:
	default:
		w.dropped.Add(1)
	}
}

// Dropped is the number of lines dropped so far.
func (w *LogWriter) Dropped() int64 { return w.dropped.Load() }

// Close publishes what is queued, a marker line for dropped lines and the
// end of the attempt's log, and closes the file.
func (w *LogWriter) Close() error {
	if w.closed.Swap(true) {
		<-w.done
		return w.err()
	}
	close(w.queue)
	<-w.done
	return w.err()
}

func (w *LogWriter) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

func (w *LogWriter) run() {
	defer close(w.done)
	defer w.file.Close()
	var batch []Line
	size := 0
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	flush := func(end bool) {
		if len(batch) == 0 && !end {
			return
		}
		w.publish(batch, end)
		batch, size = batch[:0], 0
	}
	for {
		select {
		case l, ok := <-w.queue:
			if !ok {
				if n := w.dropped.Load(); n > 0 {
					batch = append(batch, Line{Time: time.Now().UTC(), Stream: Stderr,
						Text: fmt.Sprintf("[maestro] %d line(s) dropped: the job's log is limited to %d bytes", n, w.limit)})
				}
				flush(true)
				return
			}
			l.Text = w.redact.Replace(l.Text)
			l.Time = l.Time.UTC()
			batch = append(batch, l)
			if size += len(l.Text) + 64; size >= maxBatchBytes {
				flush(false)
			}
		case <-tick.C:
			flush(false)
		}
	}
}

func (w *LogWriter) publish(lines []Line, end bool) {
	for _, l := range lines {
		fmt.Fprintf(w.file, "%s %s %s\n", l.Time.Format(time.RFC3339Nano), l.Stream, l.Text)
	}
	data, err := json.Marshal(lines)
	if err == nil {
		m := nats.NewMsg(w.subject)
		m.Data = data
		m.Header.Set(headerAttempt, strconv.Itoa(w.attempt))
		if end {
			m.Header.Set(headerEnd, "1")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = w.js.PublishMsg(ctx, m)
		cancel()
	}
	if err != nil {
		w.mu.Lock()
		if w.failed == nil {
			w.failed = fmt.Errorf("publish job log: %w", err)
		}
		w.mu.Unlock()
	}
}

// LogLine is a line as read back: its attempt and the line.
type LogLine struct {
	Attempt int `json:"attempt"`
	Line
}

// ReadLogs calls emit for every line of job jobID's log, in order. Without
// follow it returns once it has read what was stored when it began; with
// follow it keeps reading new lines until ended reports that the job has
// ended and every line published by then is read (ended is asked when no
// line came for a second, so a runner that died without an end marker does
// not hold a follower for ever), or ctx ends. One ordered consumer serves
// the whole read (a pull per message batch, no consumer per poll), and the
// server drops it 30 s after a reader vanished.
func ReadLogs(ctx context.Context, js jetstream.JetStream, jobID string, follow bool, ended func(context.Context) (bool, error), emit func(LogLine) error) error {
	stream, err := js.Stream(ctx, LogStreamName)
	if err != nil {
		return fmt.Errorf("read job log: %w", err)
	}
	// last is the sequence of the subject's newest message (0: none yet).
	last := func() (uint64, error) {
		m, err := stream.GetLastMsgForSubject(ctx, LogSubject(jobID))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read job log: %w", err)
		}
		return m.Sequence, nil
	}
	target, err := last()
	if err != nil || (target == 0 && !follow) {
		return err
	}
	c, err := js.OrderedConsumer(ctx, LogStreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{LogSubject(jobID)},
		InactiveThreshold: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("read job log: %w", err)
	}
	it, err := c.Messages()
	if err != nil {
		return fmt.Errorf("read job log: %w", err)
	}
	defer it.Stop()
	var read uint64 // stream sequence of the last message read
	for {
		if !follow && read >= target {
			return nil
		}
		wait, cancel := context.WithTimeout(ctx, time.Second)
		m, err := it.Next(jetstream.NextContext(wait))
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded):
			if !follow {
				// The last stored message may have aged out (or been
				// dropped for room) before it was read: look again.
				if target, err = last(); err != nil {
					return err
				}
				continue
			}
			done, err := ended(ctx)
			if err != nil {
				return err
			}
			if !done {
				continue
			}
			// Lines published right before the end are read first.
			if target, err = last(); err != nil {
				return err
			}
			if read >= target {
				return nil
			}
			follow = false
			continue
		default:
			return fmt.Errorf("read job log: %w", err)
		}
		if md, err := m.Metadata(); err == nil {
			read = md.Sequence.Stream
			if md.NumPending == 0 && !follow {
				target = min(target, read) // nothing more to read, whatever was there at the start
			}
		}
		attempt, _ := strconv.Atoi(m.Headers().Get(headerAttempt))
		var lines []Line
		if err := json.Unmarshal(m.Data(), &lines); err != nil {
			continue // not a batch of lines: nothing to show
		}
		for _, l := range lines {
			if err := emit(LogLine{Attempt: attempt, Line: l}); err != nil {
				return err
			}
		}
	}
}
