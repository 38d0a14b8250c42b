package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/tokenstore/tokenstore/fsm"
)

type metrics struct {
	applyLatency prometheus.Histogram
	batchSize    prometheus.Histogram
	gcDeleted    prometheus.Counter
	forwarded    prometheus.Counter
	forwardBatch prometheus.Histogram
	leaderReads  prometheus.Counter
	touched      prometheus.Counter
	touchDropped prometheus.Counter
	refused      prometheus.Counter
	clockClamped prometheus.Counter
	leaderGone   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, n *Node) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		applyLatency: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "tokenstore_raft_apply_duration_seconds",
			Help:    "Time from proposing a batch to Raft until it is applied.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		batchSize: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "tokenstore_raft_batch_commands",
			Help:    "Commands coalesced into one log entry.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		gcDeleted: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_gc_deleted_total",
			Help: "Expired records and tombstones removed by garbage collection.",
		}),
		forwarded: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_forwarded_writes_total",
			Help: "Writes this node forwarded to the leader and got an answer for.",
		}),
		forwardBatch: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "tokenstore_forwarded_batch_size",
			Help:    "Writes this node forwarded to the leader in one call, per call answered.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		touched: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_last_used_written_total",
			Help: "Last-use times this node proposed that were applied.",
		}),
		touchDropped: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_last_used_dropped_total",
			Help: "Reads whose last-use time was not buffered because the buffer was full.",
		}),
		refused: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_forwarded_writes_refused_total",
			Help: "Writes forwarded by a peer that this node refused before proposing them (bad type, bad fields).",
		}),
		clockClamped: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_clock_clamped_total",
			Help: "Batches whose log time was clamped because this leader's clock was more than the slack from the voters' median.",
		}),
		leaderGone: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_leader_gone_total",
			Help: "Times this follower found its quiet leader's Raft port refusing connections and shortened its election timeouts.",
		}),
		leaderReads: f.NewCounter(prometheus.CounterOpts{
			Name: "tokenstore_leader_reads_total",
			Help: "Reads this node could not serve locally in time and the leader answered.",
		}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenstore_fsm_applied_index",
		Help: "Log index of the last entry applied to the local state.",
	}, func() float64 { return float64(n.fsm.AppliedIndex()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenstore_raft_leader",
		Help: "1 if this node is the Raft leader.",
	}, func() float64 {
		if n.IsLeader() {
			return 1
		}
		return 0
	})
	for _, reason := range fsm.RejectReasons {
		f.NewCounterFunc(prometheus.CounterOpts{
			Name:        "tokenstore_fsm_rejected_entries_total",
			Help:        "Log entries (or batch entries) the local state machine did not apply as proposed, by reason: answered as bad, skipped, or halting.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(n.fsm.Rejected(reason)) })
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenstore_fsm_halted",
		Help: "1 if the local state machine stopped at an entry it cannot apply.",
	}, func() float64 {
		if _, halted := n.fsm.Halted(); halted {
			return 1
		}
		return 0
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenstore_revoked_families",
		Help: "Revoked grant families the local state remembers, so that nothing is issued into them (about 170 bytes each).",
	}, func() float64 { return float64(n.fsm.RevokedFamilies()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenstore_state_arena_mapped_bytes",
		Help: "Bytes the local state has mapped outside the Go heap: its records and the index by digest's table (pages given back to the kernel included).",
	}, func() float64 { return float64(n.fsm.Arena().Mapped) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenstore_state_arena_record_bytes",
		Help: "Bytes of the mapped memory the local state's records take (their size classes).",
	}, func() float64 { return float64(n.fsm.Arena().Records) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenstore_state_arena_returned_bytes",
		Help: "Bytes of the mapped memory no record is in, given back to the kernel (taking no memory until records are written there again).",
	}, func() float64 { return float64(n.fsm.Arena().Returned) })
	reg.MustRegister(&recordCollector{fsm: n.fsm}, voterClocks{n})
	return m
}

// recordCollector exports the number of records by kind and state.
type recordCollector struct{ fsm *fsm.Machine }

var recordsDesc = prometheus.NewDesc("tokenstore_tokens",
	"Records in the local state by kind and state (active includes expired ones not yet collected).",
	[]string{"kind", "state"}, nil)

func (c *recordCollector) Describe(ch chan<- *prometheus.Desc) { ch <- recordsDesc }

func (c *recordCollector) Collect(ch chan<- prometheus.Metric) {
	for k, v := range c.fsm.Counts() {
		ch <- prometheus.MustNewConstMetric(recordsDesc, prometheus.GaugeValue, float64(v), k.Kind, stateName(k.State))
	}
}

func stateName(s fsm.State) string {
	switch s {
	case fsm.Consumed:
		return "consumed"
	case fsm.Revoked:
		return "revoked"
	}
	return "active"
}
