package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions say how to reach Redis.
type RedisOptions struct {
	// URL is redis://host:port/db, rediss://host:port/db or unix:///path?db=N, without password.
	URL string
	// User and Password authenticate (ACL); Password is never logged.
	User, Password string
	// Timeout bounds dialing and each call on the packet path.
	Timeout time.Duration
	// TLSCAFile and TLSServerName tune a rediss:// connection.
	TLSCAFile, TLSServerName string
}

// Redis is the Backend on a real Redis server (go-redis).
type Redis struct {
	opt redis.Options
	cur atomic.Pointer[redis.Client]
}

// quietRedis keeps go-redis's own log lines (one per failed dial, unformatted, unlimited) out of
// the daemon's log: the node reports Redis's state itself, rate-limited. go-redis's logger is
// process-wide, so it is set once.
var quietRedis sync.Once

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// NewRedis returns a Backend for the server o names. It connects lazily (and again after
// every failure): it does not fail when Redis is down.
func NewRedis(o RedisOptions) (*Redis, error) {
	opt, err := redisOptions(o)
	if err != nil {
		return nil, err
	}
	quietRedis.Do(func() { redis.SetLogger(discardLogger{}) })
	r := &Redis{opt: *opt}
	r.cur.Store(r.newClient())
	return r, nil
}

func (r *Redis) newClient() *redis.Client {
	o := r.opt
	return redis.NewClient(&o)
}

// c is the current client.
func (r *Redis) c() *redis.Client { return r.cur.Load() }

// renew replaces the client by a fresh one after a failed health check: go-redis stops dialing
// after repeated dial errors and probes once a second, which would delay the way back.
func (r *Redis) renew() {
	old := r.cur.Swap(r.newClient())
	go old.Close()
}

func redisOptions(o RedisOptions) (*redis.Options, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, errors.New("cluster: redis: unparsable URL")
	}
	if _, has := u.User.Password(); has {
		return nil, errors.New("cluster: redis: a password does not belong in the URL")
	}
	opt := &redis.Options{
		Username:              u.User.Username(),
		Password:              o.Password,
		DialTimeout:           o.Timeout,
		ReadTimeout:           o.Timeout,
		WriteTimeout:          o.Timeout,
		PoolTimeout:           o.Timeout,
		MaxRetries:            -1, // no retry on the packet path: the caller decides
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		PoolSize:              32,
		DialerRetries:         1, // the node's health loop retries, with backoff
		Protocol:              2,
	}
	if o.User != "" {
		opt.Username = o.User
	}
	db := 0
	switch u.Scheme {
	case "unix":
		opt.Network, opt.Addr = "unix", u.Path
		if v := u.Query().Get("db"); v != "" {
			if db, err = strconv.Atoi(v); err != nil {
				return nil, fmt.Errorf("cluster: redis: db %q is not a number", v)
			}
		}
	case "redis", "rediss":
		opt.Network, opt.Addr = "tcp", u.Host
		if u.Port() == "" {
			opt.Addr = u.Host + ":6379"
		}
		if p := strings.Trim(u.Path, "/"); p != "" {
			if db, err = strconv.Atoi(p); err != nil {
				return nil, fmt.Errorf("cluster: redis: db %q is not a number", p)
			}
		}
		if u.Scheme == "rediss" {
			tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname()}
			if o.TLSServerName != "" {
				tc.ServerName = o.TLSServerName
			}
			if o.TLSCAFile != "" {
				pem, err := os.ReadFile(o.TLSCAFile)
				if err != nil {
					return nil, fmt.Errorf("cluster: redis: tls_ca_file: %w", err)
				}
				pool := x509.NewCertPool()
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("cluster: redis: tls_ca_file %s: no certificate", o.TLSCAFile)
				}
				tc.RootCAs = pool
			}
			opt.TLSConfig = tc
		}
	default:
		return nil, fmt.Errorf("cluster: redis: scheme %q is not redis, rediss or unix", u.Scheme)
	}
	opt.DB = db
	return opt, nil
}

// Claim implements Backend.
func (r *Redis) Claim(ctx context.Context, key, member string, ttl time.Duration) (bool, error) {
	if ttl < time.Millisecond {
		ttl = time.Millisecond
	}
	ok, err := r.c().SetNX(ctx, key, member, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("redis set nx: %w", err)
	}
	return ok, nil
}

// Holder implements Backend.
func (r *Redis) Holder(ctx context.Context, key string) (string, error) {
	v, err := r.c().Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("redis get: %w", err)
	}
	return v, nil
}

// Append implements Backend.
func (r *Redis) Append(ctx context.Context, stream string, maxLen int64, data []byte) (string, error) {
	id, err := r.c().XAdd(ctx, &redis.XAddArgs{Stream: stream, MaxLen: maxLen, Approx: true, Values: []any{"data", data}}).Result()
	if err != nil {
		return "", fmt.Errorf("redis xadd: %w", err)
	}
	return id, nil
}

// Read implements Backend.
func (r *Redis) Read(ctx context.Context, after map[string]string, block time.Duration, count int64) ([]Message, error) {
	if len(after) == 0 {
		return nil, nil
	}
	args := make([]string, 0, 2*len(after))
	ids := make([]string, 0, len(after))
	for s, id := range after {
		args = append(args, s)
		ids = append(ids, id)
	}
	res, err := r.c().XRead(ctx, &redis.XReadArgs{Streams: append(args, ids...), Block: block, Count: count}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis xread: %w", err)
	}
	var out []Message
	for _, st := range res {
		for _, m := range st.Messages {
			out = append(out, message(st.Stream, m))
		}
	}
	return out, nil
}

func message(stream string, m redis.XMessage) Message {
	d, _ := m.Values["data"].(string)
	return Message{Stream: stream, ID: m.ID, Data: []byte(d)}
}

// Recent implements Backend.
func (r *Redis) Recent(ctx context.Context, stream string, n int64) ([]Message, error) {
	res, err := r.c().XRevRangeN(ctx, stream, "+", "-", n).Result()
	if err != nil {
		return nil, fmt.Errorf("redis xrevrange: %w", err)
	}
	out := make([]Message, 0, len(res))
	for _, m := range res {
		out = append(out, message(stream, m))
	}
	return out, nil
}

// Beat implements Backend.
func (r *Redis) Beat(ctx context.Context, key, value string, ttl time.Duration) error {
	if err := r.c().Set(ctx, key, value, ttl).Err(); err != nil {
		return fmt.Errorf("redis set: %w", err)
	}
	return nil
}

// Scan implements Backend.
func (r *Redis) Scan(ctx context.Context, prefix string) (map[string]string, error) {
	var keys []string
	iter := r.c().Scan(ctx, 0, prefix+"*", 100).Iterator()
	for iter.Next(ctx) && len(keys) < 10000 {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("redis scan: %w", err)
	}
	out := map[string]string{}
	if len(keys) == 0 {
		return out, nil
	}
	vals, err := r.c().MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis mget: %w", err)
	}
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[keys[i]] = s
		}
	}
	return out, nil
}

// Ack implements Backend.
func (r *Redis) Ack(ctx context.Context, key, field, value string, ttl time.Duration) error {
	_, err := r.c().TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, field, value)
		p.PExpire(ctx, key, ttl)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis hset: %w", err)
	}
	return nil
}

// Hash implements Backend.
func (r *Redis) Hash(ctx context.Context, key string) (map[string]string, error) {
	m, err := r.c().HGetAll(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("redis hgetall: %w", err)
	}
	return m, nil
}

// ServerID implements Backend.
func (r *Redis) ServerID(ctx context.Context) (string, error) {
	info, err := r.c().Info(ctx, "server").Result()
	if err != nil {
		r.renew()
		return "", fmt.Errorf("redis info: %w", err)
	}
	for l := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "run_id:"); ok {
			return v, nil
		}
	}
	return "", errors.New("redis info: no run_id")
}

// Close implements Backend.
func (r *Redis) Close() error { return r.c().Close() }
