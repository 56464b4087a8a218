package control

import (
	"bufio"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// MetricsContentType is the Prometheus text exposition format.
const MetricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// Metric types.
const (
	Counter = "counter"
	Gauge   = "gauge"
)

// Metric is one metric family: a name, its help and type, and its samples.
// Its JSON form is what GET /v1/metrics answers.
type Metric struct {
	Name    string   `json:"name"` // [a-zA-Z_:][a-zA-Z0-9_:]*
	Help    string   `json:"help,omitempty"`
	Type    string   `json:"type,omitempty"` // Counter or Gauge
	Samples []Sample `json:"samples"`
}

// Sample is one value of a metric, told apart by its labels.
type Sample struct {
	Labels map[string]string `json:"labels,omitempty"` // names [a-zA-Z_][a-zA-Z0-9_]*
	Value  float64           `json:"value"`
}

// WriteMetrics writes the metrics in the Prometheus text format, families
// in the order given (families of one name merged), labels sorted.
// Invalid metric or label names are an error, nothing is written for them.
func WriteMetrics(w io.Writer, ms []Metric) error {
	bw := bufio.NewWriter(w)
	order, err := MergeMetrics(ms)
	if err != nil {
		return err
	}
	for _, m := range order {
		if m.Help != "" {
			fmt.Fprintf(bw, "# HELP %s %s\n", m.Name, escapeHelp(m.Help))
		}
		if m.Type != "" {
			fmt.Fprintf(bw, "# TYPE %s %s\n", m.Name, m.Type)
		}
		for _, s := range m.Samples {
			bw.WriteString(m.Name)
			if len(s.Labels) > 0 {
				keys := make([]string, 0, len(s.Labels))
				for k := range s.Labels {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				bw.WriteByte('{')
				for i, k := range keys {
					if i > 0 {
						bw.WriteByte(',')
					}
					fmt.Fprintf(bw, "%s=\"%s\"", k, escapeLabel(s.Labels[k]))
				}
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(strconv.FormatFloat(s.Value, 'g', -1, 64))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

// MergeMetrics returns ms with the families of one name merged (in the
// order of their first appearance), as WriteMetrics and GET /v1/metrics
// give them; an invalid metric or label name is an error.
func MergeMetrics(ms []Metric) ([]Metric, error) {
	seen := map[string]int{}
	order := []Metric{}
	for _, m := range ms {
		if !validName(m.Name, true) {
			return nil, fmt.Errorf("control: metric name %q is invalid", m.Name)
		}
		for _, s := range m.Samples {
			for k := range s.Labels {
				if !validName(k, false) {
					return nil, fmt.Errorf("control: metric %s: label name %q is invalid", m.Name, k)
				}
			}
		}
		if i, ok := seen[m.Name]; ok {
			order[i].Samples = append(order[i].Samples, m.Samples...)
			continue
		}
		seen[m.Name] = len(order)
		m.Samples = append([]Sample{}, m.Samples...)
		order = append(order, m)
	}
	return order, nil
}

func validName(s string, colon bool) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		ok := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (colon && c == ':') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// SnakeCase turns a Go field name into a metric name part:
// "ProtocolErrors" -> "protocol_errors", "RxDiscover" -> "rx_discover",
// "TXDropped" -> "tx_dropped".
func SnakeCase(s string) string {
	var b strings.Builder
	r := []rune(s)
	for i, c := range r {
		upper := c >= 'A' && c <= 'Z'
		if upper && i > 0 {
			prevLower := r[i-1] >= 'a' && r[i-1] <= 'z' || r[i-1] >= '0' && r[i-1] <= '9'
			nextLower := i+1 < len(r) && r[i+1] >= 'a' && r[i+1] <= 'z'
			prevUpper := r[i-1] >= 'A' && r[i-1] <= 'Z'
			if prevLower || (prevUpper && nextLower) {
				b.WriteByte('_')
			}
		}
		if upper {
			c += 'a' - 'A'
		}
		b.WriteRune(c)
	}
	return b.String()
}
