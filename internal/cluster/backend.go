package cluster

import (
	"context"
	"time"
)

// Backend is the narrow part of Redis a Node uses: atomic claims, streams, heartbeats and a
// hash per grant. Redis (NewRedis) in production; tests use an in-memory double.
type Backend interface {
	// Claim sets key to member unless it exists (SET key member NX PX ttl) and reports
	// whether it did.
	Claim(ctx context.Context, key, member string, ttl time.Duration) (bool, error)
	// Holder returns the value of key ("" when it does not exist).
	Holder(ctx context.Context, key string) (string, error)
	// Append adds data to stream (XADD stream MAXLEN ~ maxLen * data=...) and returns the
	// entry id.
	Append(ctx context.Context, stream string, maxLen int64, data []byte) (string, error)
	// Read returns entries after the ids in after (stream name → last id seen, "0" for
	// all), waiting up to block for one (XREAD BLOCK); none when block passes.
	Read(ctx context.Context, after map[string]string, block time.Duration, count int64) ([]Message, error)
	// Recent returns up to n of stream's newest entries, newest first (XREVRANGE).
	Recent(ctx context.Context, stream string, n int64) ([]Message, error)
	// Beat sets key to value for ttl (a heartbeat).
	Beat(ctx context.Context, key, value string, ttl time.Duration) error
	// Scan returns the keys matching prefix* with their values (heartbeats; few keys).
	Scan(ctx context.Context, prefix string) (map[string]string, error)
	// Ack sets field to value in the hash key, which expires after ttl.
	Ack(ctx context.Context, key, field, value string, ttl time.Duration) error
	// Hash returns the hash at key.
	Hash(ctx context.Context, key string) (map[string]string, error)
	// ServerID identifies the Redis server process (its run_id): a change means it restarted.
	ServerID(ctx context.Context) (string, error)
	Close() error
}

// Message is one stream entry.
type Message struct {
	Stream, ID string
	Data       []byte
}
