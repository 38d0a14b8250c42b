package nonce

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenstore/tokenstore/internal/memcachedtest"
)

// BenchmarkMemcachedAdd adds fresh keys to a real memcached from 64
// goroutines (as many as the peer bench's clients), the way the nonce
// checks of a loaded node do.
func BenchmarkMemcachedAdd(b *testing.B) {
	mc := memcachedtest.Start(b)
	m, err := NewMemcached(MemcachedConfig{Servers: []string{mc.Addr}, Timeout: 2 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var n atomic.Int64
	prefix := "bench:" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Add(prefix+strconv.FormatInt(n.Add(1), 10), time.Minute); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
