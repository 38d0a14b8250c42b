package peers

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/tokenstore/tokenstore/bench/load"
	"github.com/tokenstore/tokenstore/internal/proccluster"
)

// WorkloadDuringSnapshot names the issue run measured while every node
// writes a snapshot; "issue" beside it, run just before, is the steady
// state it is compared with.
const WorkloadDuringSnapshot = "issue_during_snapshot"

// snapshotInfo is the answer of POST /v1/operator/snapshot.
type snapshotInfo struct {
	Index  uint64 `json:"index"`
	Bytes  int64  `json:"bytes"`
	TookMS int64  `json:"took_ms"`
}

// writesDuringSnapshot issues tokens on t for the load's duration (the
// steady state), then again while every node is asked for a snapshot
// half a second in, until the last has written its own: the second run
// holds only the time around the snapshots. It returns both runs, the
// longest snapshot's time and the largest's size.
func writesDuringSnapshot(ctx context.Context, nodes []*proccluster.Node, t load.Target, l load.Load, progress io.Writer) (steady, during *load.Result, took time.Duration, size int64, err error) {
	op, err := load.Prepare(ctx, t, "issue", load.Prepared{}, progress)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	steady = load.Drive(ctx, "issue", l, op, progress)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	wg.Go(func() {
		defer stop()
		select {
		case <-time.After(500 * time.Millisecond):
		case <-runCtx.Done():
			return
		}
		var nw sync.WaitGroup
		for _, n := range nodes {
			nw.Go(func() {
				info, err := takeSnapshot(ctx, n.URL())
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("snapshot of %s: %w", n.ID, err))
					return
				}
				fmt.Fprintf(progress, "  snapshot of %s: index %d, %d bytes, %d ms\n", n.ID, info.Index, info.Bytes, info.TookMS)
				took = max(took, time.Duration(info.TookMS)*time.Millisecond)
				size = max(size, info.Bytes)
			})
		}
		nw.Wait()
	})
	long := l
	long.Duration = 10 * time.Minute // cut short once the snapshots are written
	during = load.Drive(runCtx, WorkloadDuringSnapshot, long, op, progress)
	wg.Wait()
	if len(errs) > 0 {
		return steady, during, took, size, errs[0]
	}
	return steady, during, took, size, nil
}

// takeSnapshot asks the node at url for a snapshot and waits for it.
func takeSnapshot(ctx context.Context, url string) (snapshotInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/operator/snapshot", nil)
	if err != nil {
		return snapshotInfo{}, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
	if err != nil {
		return snapshotInfo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return snapshotInfo{}, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var info snapshotInfo
	return info, json.NewDecoder(resp.Body).Decode(&info)
}
