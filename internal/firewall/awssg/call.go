package awssg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
)

// throttleCodes are EC2's answers to too many calls.
var throttleCodes = map[string]bool{
	"RequestLimitExceeded": true, "Throttling": true, "ThrottlingException": true,
	"RequestThrottled": true, "RequestThrottledException": true, "TooManyRequestsException": true,
}

// apiError is what the SDK's API errors (smithy.APIError) have.
type apiError interface {
	error
	ErrorCode() string
}

// code is the EC2 error code of err, or "".
func code(err error) string {
	var ae apiError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func throttled(err error) bool { return throttleCodes[code(err)] }

// retryable reports whether err may go away by itself: throttling, a 5xx, EC2's internal and
// unavailable codes, or a transport error (no answer at all).
func retryable(err error) bool {
	if err == nil {
		return false
	}
	if throttled(err) {
		return true
	}
	switch code(err) {
	case "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable":
		return true
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode() >= 500
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// call runs f, one EC2 call, under CallTimeout, and retries it while it fails with a retryable
// error, at most MaxAttempts times, waiting BaseBackoff·2ⁿ (at most MaxBackoff) with full
// jitter between tries.
func (b *Backend) call(ctx context.Context, op string, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.o.CallTimeout)
	defer cancel()
	var err error
	for attempt := 0; attempt < b.o.MaxAttempts; attempt++ {
		if attempt > 0 {
			b.mu.Lock()
			b.stats.Retries++
			if throttled(err) {
				b.stats.Throttled++
			}
			b.mu.Unlock()
			wait := b.o.BaseBackoff << (attempt - 1)
			if wait > b.o.MaxBackoff || wait <= 0 {
				wait = b.o.MaxBackoff
			}
			b.jmu.Lock()
			wait = time.Duration(b.rng.Int64N(int64(wait)) + 1)
			b.jmu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("aws-sg: %s: %w (last error: %w)", op, ctx.Err(), err)
			case <-t.C:
			}
		}
		err = f(ctx)
		if err == nil || !retryable(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("aws-sg: %s: %w", op, err)
	}
	return nil
}
