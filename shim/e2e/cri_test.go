package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/corral-vmm/corral/shim/internal/ctrdtest"
)

// TestCRI is Kubernetes' path: through the CRI plugin's v1 RuntimeService,
// a pod sandbox with runtime handler corral on the host network, a
// container in it running sh -c 'exit 5', its exit code read back, and the
// pod removed with nothing left in the inventory or running.
func TestCRI(t *testing.T) {
	// The CRI plugin copies these into a host-network pod.
	ctrdtest.MustHaveFile(t, "/etc/hosts")
	ctrdtest.MustHaveFile(t, "/etc/resolv.conf")
	e := setup(t, "k8s.io")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	conn, err := grpc.DialContext(ctx, "unix://"+e.d.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", e.d.Address, err)
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	v, err := rs.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		t.Fatalf("CRI Version: %v", err)
	}
	t.Logf("CRI: %s %s (API %s)", v.RuntimeName, v.RuntimeVersion, v.RuntimeApiVersion)

	logDir := t.TempDir()
	pod := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "p1", Uid: "uid-p1", Namespace: "default"},
		Hostname:     "p1",
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}},
	}
	start := time.Now()
	run, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod, RuntimeHandler: ctrdtest.CRIHandler})
	if err != nil {
		t.Fatalf("RunPodSandbox (handler %s): %v", ctrdtest.CRIHandler, err)
	}
	podID := run.PodSandboxId
	t.Logf("RunPodSandbox took %v", time.Since(start))
	removed := false
	t.Cleanup(func() {
		if !removed {
			rs.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
			rs.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
		}
	})
	cc, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: podID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "c1"},
			Image:    &runtimeapi.ImageSpec{Image: ctrdtest.ImageRef},
			Command:  []string{"sh", "-c", "exit 5"},
			LogPath:  "c1.log",
		},
		SandboxConfig: pod,
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if _, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cc.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	var st *runtimeapi.ContainerStatus
	waitFor(t, bootTimeout, "the container to exit", func() (bool, string) {
		r, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: cc.ContainerId})
		if err != nil {
			return false, err.Error()
		}
		st = r.Status
		return st.State == runtimeapi.ContainerState_CONTAINER_EXITED, st.State.String()
	})
	if st.ExitCode != 5 {
		t.Fatalf("container exit code %d (reason %q, message %q), want 5", st.ExitCode, st.Reason, st.Message)
	}
	if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cc.ContainerId}); err != nil {
		t.Errorf("RemoveContainer: %v", err)
	}
	if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	removed = true
	waitFor(t, 10*time.Second, "no shim or inventory entry left of the pod", func() (bool, string) {
		pids, vms := e.shims(t), e.inventory(t, "")
		return len(pids) == 0 && len(vms) == 0, fmt.Sprintf("shims %v, inventory %s", pids, strings.Join(vmIDs(vms), " "))
	})
}
