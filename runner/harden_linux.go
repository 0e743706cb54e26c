package runner

import "syscall"

// HideFromJobs makes this process undumpable. The kernel then owns its
// /proc/<pid> files by root, so a job the local executor runs as the same
// user cannot read the runner's environment or memory (its NATS and
// database credentials, S3 keys) through /proc/$PPID/environ or
// /proc/$PPID/mem. Children are dumpable again after their exec. It does
// not stop a job from reading files the runner's user may read (see
// docs/ARCHITECTURE.md, "The local executor's trust boundary").
func HideFromJobs() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 0, 0); errno != 0 {
		return errno
	}
	return nil
}
