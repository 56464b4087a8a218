package dhcp

import "time"

// maxRateSources bounds the per-source limiter table. Sources beyond it share
// one bucket, so a guest cycling source MACs cannot grow memory.
const maxRateSources = 256

// gcra is one generic-cell-rate bucket: it allows a burst of b frames and then
// one frame per interval. tat is the theoretical arrival time.
type gcra struct {
	tat time.Duration
}

// allow admits a frame at now if the bucket has room.
func (g *gcra) allow(now, interval, tolerance time.Duration) bool {
	tat := max(g.tat, now)
	if tat-now > tolerance {
		return false
	}
	g.tat = addSat(tat, interval)
	return true
}

// idle reports whether the bucket is full again, i.e. forgetting it loses nothing.
func (g *gcra) idle(now time.Duration) bool { return g.tat <= now }

// rateLimiter limits frames per source MAC and for all sources together.
type rateLimiter struct {
	interval, tolerance   time.Duration // per source
	gInterval, gTolerance time.Duration // global
	global                gcra
	overflow              gcra // shared by sources that find the table full
	index                 map[[ethAddrLen]byte]int
	keys                  [][ethAddrLen]byte
	buckets               []gcra
}

func newRateLimiter(rate, burst, globalRate int) *rateLimiter {
	r := &rateLimiter{
		interval:  time.Second / time.Duration(rate),
		gInterval: time.Second / time.Duration(globalRate),
		index:     make(map[[ethAddrLen]byte]int, maxRateSources),
		keys:      make([][ethAddrLen]byte, 0, maxRateSources),
		buckets:   make([]gcra, 0, maxRateSources),
	}
	r.tolerance = r.interval * time.Duration(burst-1)
	r.gTolerance = r.gInterval * time.Duration(globalRate-1) // one second's worth as burst
	return r
}

// allow admits one frame from src at now.
func (r *rateLimiter) allow(src [ethAddrLen]byte, now time.Duration) bool {
	b := r.bucket(src, now)
	if !b.allow(now, r.interval, r.tolerance) {
		return false
	}
	return r.global.allow(now, r.gInterval, r.gTolerance)
}

func (r *rateLimiter) bucket(src [ethAddrLen]byte, now time.Duration) *gcra {
	if i, ok := r.index[src]; ok {
		return &r.buckets[i]
	}
	if len(r.keys) < maxRateSources {
		r.index[src] = len(r.keys)
		r.keys = append(r.keys, src)
		r.buckets = append(r.buckets, gcra{})
		return &r.buckets[len(r.buckets)-1]
	}
	for i := range r.buckets {
		if r.buckets[i].idle(now) {
			delete(r.index, r.keys[i])
			r.keys[i] = src
			r.index[src] = i
			r.buckets[i] = gcra{}
			return &r.buckets[i]
		}
	}
	return &r.overflow
}
