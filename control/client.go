package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// ErrNoServer is wrapped by Client errors when nothing listens on the
// socket: the VMM is gone (a stale socket) or never created one.
var ErrNoServer = errors.New("control: no VMM is listening on the socket")

// Client talks to one machine's control socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client of the control socket at path. Nothing is
// dialled until a request.
func NewClient(path string) *Client {
	d := net.Dialer{Timeout: 5 * time.Second}
	return &Client{path: path, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}}
}

// VM returns the machine's state and record.
func (c *Client) VM(ctx context.Context) (Info, error) {
	var info Info
	err := c.do(ctx, http.MethodGet, "/v1/vm", nil, &info)
	return info, err
}

// Stop asks the guest to power off and has the machine stopped hard after
// timeout; it returns once the machine has ended.
func (c *Client) Stop(ctx context.Context, timeout time.Duration) (Ended, error) {
	var e Ended
	err := c.do(ctx, http.MethodPost, "/v1/stop", StopRequest{Timeout: timeout.String()}, &e)
	return e, err
}

// Kill stops the machine hard; it returns once the machine has ended.
func (c *Client) Kill(ctx context.Context) (Ended, error) {
	var e Ended
	err := c.do(ctx, http.MethodPost, "/v1/kill", nil, &e)
	return e, err
}

// Metrics returns the machine's counters in the Prometheus text format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	var b bytes.Buffer
	err := c.do(ctx, http.MethodGet, "/metrics", nil, &b)
	return b.String(), err
}

// MetricFamilies returns the machine's counters as metric families (GET
// /v1/metrics), the same as Metrics gives in the text format.
func (c *Client) MetricFamilies(ctx context.Context) ([]Metric, error) {
	var ms []Metric
	err := c.do(ctx, http.MethodGet, "/v1/metrics", nil, &ms)
	return ms, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("control: %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://corral"+path, rd)
	if err != nil {
		return fmt.Errorf("control: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("%w (%s): %v", ErrNoServer, c.path, err)
		}
		return fmt.Errorf("control: %s %s on %s: %w", method, path, c.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control: %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		msg := string(bytes.TrimSpace(b))
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			msg = eb.Error
		}
		if resp.StatusCode == http.StatusForbidden {
			return fmt.Errorf("%w: %s", ErrForbidden, msg)
		}
		return fmt.Errorf("control: %s %s: %s: %s", method, path, resp.Status, msg)
	}
	if buf, ok := out.(*bytes.Buffer); ok {
		buf.Write(b)
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("control: %s %s: bad answer: %w", method, path, err)
	}
	return nil
}
