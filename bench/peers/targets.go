package peers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/token"
)

// Etcd is the Target of an etcd cluster through clientv3: issue is a
// put-if-absent transaction with a lease, consume a compare-and-delete
// transaction that returns the previous value, lookup a serializable get
// (answered by the member the request reaches, like a tokenstore local
// read). All tokens of a run share one lease with the token TTL: a lease
// per token would add a LeaseGrant round trip that tokenstore does not
// pay for its TTLs.
type Etcd struct {
	load.Unsupported
	clients []*clientv3.Client
	next    atomic.Uint64
	lease   clientv3.LeaseID
}

// NewEtcd connects one client per endpoint (requests are spread over
// them round-robin) and grants the run's lease.
func NewEtcd(ctx context.Context, endpoints []string) (*Etcd, error) {
	e := &Etcd{Unsupported: load.Unsupported{System: "etcd"}}
	for _, ep := range endpoints {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("etcd %s: %w", ep, err)
		}
		e.clients = append(e.clients, c)
	}
	lease, err := e.clients[0].Grant(ctx, int64(load.TokenTTL/time.Second))
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("etcd: grant lease: %w", err)
	}
	e.lease = lease.ID
	return e, nil
}

func (e *Etcd) client() *clientv3.Client {
	return e.clients[int(e.next.Add(1)%uint64(len(e.clients)))]
}

// Issue puts key if it does not exist yet.
func (e *Etcd) Issue(ctx context.Context, key string) (string, error) {
	resp, err := e.client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, tokenValue, clientv3.WithLease(e.lease))).
		Commit()
	if err == nil && !resp.Succeeded {
		err = load.ErrExists
	}
	return key, err
}

// IssueSession puts key with the session as its value if it does not
// exist yet.
func (e *Etcd) IssueSession(ctx context.Context, key string, s load.Session) (string, error) {
	resp, err := e.client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, sessionValue(s), clientv3.WithLease(e.lease))).
		Commit()
	if err == nil && !resp.Succeeded {
		err = load.ErrExists
	}
	return key, err
}

// Consume deletes key if it exists; success means the previous value
// came back.
func (e *Etcd) Consume(ctx context.Context, key string) error {
	resp, err := e.client().Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(clientv3.OpDelete(key, clientv3.WithPrevKV())).
		Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded || len(resp.Responses) == 0 || len(resp.Responses[0].GetResponseDeleteRange().PrevKvs) == 0 {
		return load.ErrNotFound
	}
	return nil
}

// Lookup is a serializable get.
func (e *Etcd) Lookup(ctx context.Context, key string) error {
	resp, err := e.client().Get(ctx, key, clientv3.WithSerializable())
	if err == nil && resp.Count == 0 {
		err = load.ErrNotFound
	}
	return err
}

// Close closes the clients.
func (e *Etcd) Close() error {
	var errs []error
	for _, c := range e.clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// tokenValue is what peers store per token: about the size of a
// tokenstore record's identifying fields.
const tokenValue = `{"kind":"` + token.KindOAuth2Code + `","subject":"bench","client_id":"bench-app"}`

// sessionValue is what peers store for a session: its fields as JSON, as
// an application server would keep them.
func sessionValue(s load.Session) string {
	b, _ := json.Marshal(map[string]string{"kind": token.KindAccess, "subject": s.Subject, "client_id": s.ClientID,
		"title": s.Title, "ip": s.IP, "user_agent": s.UserAgent})
	return string(b)
}

// Redis is the Target of one Redis server: SET NX PX, GETDEL and GET.
type Redis struct {
	load.Unsupported
	c *redis.Client
}

// NewRedis connects to addr with a pool for clients concurrent requests.
func NewRedis(ctx context.Context, addr string, clients int) (*Redis, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: clients, MinIdleConns: clients,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second})
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("redis %s: %w", addr, err)
	}
	return &Redis{Unsupported: load.Unsupported{System: "redis"}, c: c}, nil
}

// Issue is SET key value NX PX ttl.
func (r *Redis) Issue(ctx context.Context, key string) (string, error) {
	err := r.c.Do(ctx, "SET", key, tokenValue, "NX", "PX", load.TokenTTL.Milliseconds()).Err()
	if errors.Is(err, redis.Nil) {
		err = load.ErrExists
	}
	return key, err
}

// IssueSession is SET key session NX PX ttl.
func (r *Redis) IssueSession(ctx context.Context, key string, s load.Session) (string, error) {
	err := r.c.Do(ctx, "SET", key, sessionValue(s), "NX", "PX", load.TokenTTL.Milliseconds()).Err()
	if errors.Is(err, redis.Nil) {
		err = load.ErrExists
	}
	return key, err
}

// Consume is GETDEL key.
func (r *Redis) Consume(ctx context.Context, key string) error {
	err := r.c.GetDel(ctx, key).Err()
	if errors.Is(err, redis.Nil) {
		err = load.ErrNotFound
	}
	return err
}

// Lookup is GET key.
func (r *Redis) Lookup(ctx context.Context, key string) error {
	err := r.c.Get(ctx, key).Err()
	if errors.Is(err, redis.Nil) {
		err = load.ErrNotFound
	}
	return err
}

// Close closes the pool.
func (r *Redis) Close() error { return r.c.Close() }
