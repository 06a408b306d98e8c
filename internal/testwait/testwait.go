// Package testwait is how tests wait for state they cannot be told about:
// a condition polled until it holds, with a deadline, so that a test that
// would hang fails instead and says what it waited for.
//
// It does not sleep for a fixed time and call that synchronisation, and it
// runs the condition on the calling goroutine only.
package testwait

import (
	"testing"
	"time"
)

// maxPoll is the longest pause between two calls of a condition.
const maxPoll = 10 * time.Millisecond

// For calls cond until it returns true, failing the test with what it
// waited for when it has not within timeout. cond runs on the caller's
// goroutine, so it may call t.Fatal itself.
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Until calls cond until it returns true or timeout has passed, and reports
// whether it did: for callers that handle the failure themselves (outside
// a test's goroutine, or to return an error).
func Until(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for pause := time.Millisecond; !cond(); pause = min(2*pause, maxPoll) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
	return true
}
