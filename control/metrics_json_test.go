package control

import (
	"context"
	"reflect"
	"strings"
	"testing"
)

// TestMetricFamilies: GET /v1/metrics gives the families WriteMetrics
// writes, merged by name, and refuses invalid names as the text form does.
func TestMetricFamilies(t *testing.T) {
	ft := &fakeTarget{metrics: []Metric{
		{Name: "corral_vcpu_exits_total", Help: "vCPU exits", Type: Counter,
			Samples: []Sample{{Labels: map[string]string{"reason": "io"}, Value: 42}}},
		{Name: "corral_blk_reads_total", Type: Counter, Samples: []Sample{{Labels: map[string]string{"disk": "0"}, Value: 1}}},
		{Name: "corral_blk_reads_total", Type: Counter, Samples: []Sample{{Labels: map[string]string{"disk": "1"}, Value: 2}}},
		{Name: "corral_empty", Type: Gauge},
	}}
	_, c := listen(t, Config{Target: ft})
	got, err := c.MetricFamilies(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Metric{
		{Name: "corral_vcpu_exits_total", Help: "vCPU exits", Type: Counter,
			Samples: []Sample{{Labels: map[string]string{"reason": "io"}, Value: 42}}},
		{Name: "corral_blk_reads_total", Type: Counter, Samples: []Sample{
			{Labels: map[string]string{"disk": "0"}, Value: 1}, {Labels: map[string]string{"disk": "1"}, Value: 2}}},
		{Name: "corral_empty", Type: Gauge, Samples: []Sample{}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("MetricFamilies() =\n%+v\nwant\n%+v", got, want)
	}

	for _, bad := range []struct {
		m    Metric
		want string
	}{
		{Metric{Name: "ok", Samples: []Sample{{Labels: map[string]string{"bad-label": "x"}}}}, `label name "bad-label" is invalid`},
		{Metric{Name: "bad name"}, `metric name "bad name" is invalid`},
	} {
		_, c := listen(t, Config{Target: &fakeTarget{metrics: []Metric{bad.m}}})
		if _, err := c.MetricFamilies(context.Background()); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: %v, want %q", bad.m, err, bad.want)
		}
	}
}
