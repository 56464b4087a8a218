//go:build !(linux && amd64)

package benchconfine

import "errors"

func confine() (string, error) {
	return "", errors.New("confinement needs linux/amd64 (package sandbox)")
}
