package load

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// HTTPConfig is a closed-loop run of one plain HTTP request, for
// measuring a proxy against the server behind it with the same client.
type HTTPConfig struct {
	Name     string // the Result's workload name
	URL      string
	Method   string // default GET
	Body     []byte
	Header   http.Header
	Clients  int
	Duration time.Duration
}

// RunHTTP sends cfg's request from Clients workers for Duration; a
// response other than 2xx counts as an error. Each run has its own
// connection pool, kept warm by the workers.
func RunHTTP(ctx context.Context, cfg HTTPConfig, progress io.Writer) (*Result, error) {
	if cfg.Clients < 1 || cfg.Duration <= 0 {
		return nil, fmt.Errorf("bench: need clients >= 1 and a positive duration")
	}
	if cfg.Method == "" {
		cfg.Method = http.MethodGet
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConns: cfg.Clients * 2, MaxIdleConnsPerHost: cfg.Clients * 2, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: 30 * time.Second, Transport: tr}
	do := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, cfg.Method, cfg.URL, bytes.NewReader(cfg.Body))
		if err != nil {
			return err
		}
		for k, vs := range cfg.Header {
			req.Header[k] = vs
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s %s: %s", cfg.Method, cfg.URL, resp.Status)
		}
		return err
	}
	if err := do(ctx); err != nil { // fail fast on a wrong address
		return nil, err
	}
	r := Drive(ctx, cfg.Name, Load{Clients: cfg.Clients, Duration: cfg.Duration}, func(ctx context.Context, _ int) error { return do(ctx) }, progress)
	r.System = "http"
	return r, nil
}
