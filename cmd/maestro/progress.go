package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// progress shows a long command's progress (done/total, rate, ETA) on one
// line of stderr, redrawn every 500 ms, when stderr is a terminal; in a
// script (not a terminal) it prints nothing, so only the command's final
// summary reaches the output.
type progress struct {
	w     io.Writer
	label string
	mu    sync.Mutex
	done  uint64
	total uint64
	start time.Time
	first uint64 // done at the first update: the rate counts from there
	seen  bool
	stop  chan struct{}
	wg    sync.WaitGroup
}

// startProgress starts the reporter (inert when stderr is no terminal).
func startProgress(label string) *progress {
	p := &progress{w: os.Stderr, label: label, start: time.Now(), stop: make(chan struct{})}
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return p
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				fmt.Fprint(p.w, "\r\033[K") // leave the line clean for the summary
				return
			case <-t.C:
				fmt.Fprint(p.w, "\r\033[K"+p.line(time.Now()))
			}
		}
	}()
	return p
}

// Set records the progress: done of total messages.
func (p *progress) Set(done, total uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.seen {
		p.seen, p.first, p.start = true, done, time.Now()
	}
	p.done, p.total = done, total
}

// line renders the progress at now.
func (p *progress) line(now time.Time) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := fmt.Sprintf("%s: %d/%d messages", p.label, p.done, p.total)
	if p.total > 0 {
		s += fmt.Sprintf(" (%.0f%%)", 100*float64(p.done)/float64(p.total))
	}
	el := now.Sub(p.start).Seconds()
	if el <= 0 || p.done <= p.first {
		return s
	}
	rate := float64(p.done-p.first) / el
	s += fmt.Sprintf(", %.0f/s", rate)
	if p.total > p.done {
		s += fmt.Sprintf(", ETA %s", time.Duration(float64(p.total-p.done)/rate*float64(time.Second)).Round(time.Second))
	}
	return s
}

// Stop ends the reporter and clears its line.
func (p *progress) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.wg.Wait()
}
