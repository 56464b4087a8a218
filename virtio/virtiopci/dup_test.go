package virtiopci

import "golang.org/x/sys/unix"

func dupFD(fd int) int {
	n, err := unix.Dup(fd)
	if err != nil {
		panic(err)
	}
	return n
}
