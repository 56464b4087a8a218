package vsock

// ring is a fixed-size byte FIFO: one direction of one connection. The
// backing array is allocated on first use and kept, so a busy connection
// does not allocate per packet.
type ring struct {
	buf  []byte
	size int // capacity; buf is allocated lazily
	head int // index of the first byte
	n    int // bytes held
}

func (r *ring) len() int  { return r.n }
func (r *ring) free() int { return r.size - r.n }

func (r *ring) alloc() {
	if r.buf == nil {
		r.buf = make([]byte, r.size)
	}
}

// write appends as much of p as fits and returns how much that was.
func (r *ring) write(p []byte) int {
	if len(p) == 0 || r.n == r.size {
		return 0
	}
	r.alloc()
	total := 0
	for len(p) > 0 && r.n < r.size {
		tail := (r.head + r.n) % r.size
		end := r.size
		if tail < r.head {
			end = r.head
		}
		k := copy(r.buf[tail:end], p)
		r.n += k
		total += k
		p = p[k:]
	}
	return total
}

// peek returns the held bytes as at most two slices, in order.
func (r *ring) peek() (a, b []byte) {
	if r.n == 0 {
		return nil, nil
	}
	end := r.head + r.n
	if end <= r.size {
		return r.buf[r.head:end], nil
	}
	return r.buf[r.head:], r.buf[:end-r.size]
}

// read moves up to len(p) bytes into p.
func (r *ring) read(p []byte) int {
	a, b := r.peek()
	k := copy(p, a)
	k += copy(p[k:], b)
	r.discard(k)
	return k
}

// discard drops the first k held bytes (k <= len).
func (r *ring) discard(k int) {
	r.n -= k
	r.head = (r.head + k) % max(r.size, 1)
	if r.n == 0 {
		r.head = 0
	}
}

// reset empties the ring (keeping its memory).
func (r *ring) reset() { r.head, r.n = 0, 0 }

// space returns the free room as at most two slices, in order; commit
// what was copied there.
func (r *ring) space() (a, b []byte) {
	if r.n == r.size {
		return nil, nil
	}
	r.alloc()
	tail := (r.head + r.n) % r.size
	if tail >= r.head {
		return r.buf[tail:], r.buf[:r.head]
	}
	return r.buf[tail:r.head], nil
}

// commit adds k bytes written into space.
func (r *ring) commit(k int) { r.n += k }
