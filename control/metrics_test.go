package control

import (
	"strings"
	"testing"
)

func TestWriteMetrics(t *testing.T) {
	var b strings.Builder
	err := WriteMetrics(&b, []Metric{
		{Name: "corral_up", Help: "1 while\nrunning \\ ok", Type: Gauge, Samples: []Sample{{Value: 1}}},
		{Name: "corral_blk_requests_total", Type: Counter, Samples: []Sample{{Labels: map[string]string{"type": "in", "disk": "0"}, Value: 3}}},
		{Name: "corral_blk_requests_total", Samples: []Sample{{Labels: map[string]string{"disk": "1", "type": "in"}, Value: 1.5e20}}},
		{Name: "corral_net_tap", Samples: []Sample{{Labels: map[string]string{"tap": "a\"b\\c\nd"}, Value: 0}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `# HELP corral_up 1 while\nrunning \\ ok
# TYPE corral_up gauge
corral_up 1
# TYPE corral_blk_requests_total counter
corral_blk_requests_total{disk="0",type="in"} 3
corral_blk_requests_total{disk="1",type="in"} 1.5e+20
corral_net_tap{tap="a\"b\\c\nd"} 0
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	for _, bad := range []Metric{{Name: "9lives"}, {Name: "a-b"}, {Name: ""}, {Name: "ok", Samples: []Sample{{Labels: map[string]string{"a:b": "x"}}}}} {
		if err := WriteMetrics(&strings.Builder{}, []Metric{bad}); err == nil {
			t.Errorf("WriteMetrics accepted %+v", bad)
		}
	}
}

func TestSnakeCase(t *testing.T) {
	for in, want := range map[string]string{
		"ProtocolErrors": "protocol_errors", "RxDiscover": "rx_discover", "TXDropped": "tx_dropped",
		"In": "in", "GetID": "get_id", "ReadBytes": "read_bytes", "RX": "rx", "Tx2Frames": "tx2_frames",
	} {
		if got := SnakeCase(in); got != want {
			t.Errorf("SnakeCase(%q) = %q, want %q", in, got, want)
		}
	}
}
