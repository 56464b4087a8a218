package task

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
)

// RegisterTTRPC serves the task API on server (the shim library looks
// for this method on a ttrpc plugin).
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}

// RegisterPlugin registers the task service as the shim's ttrpc plugin,
// as runc's shim does, for shim.RunManager to serve. Its logs go to the
// shim's log (containerd's log FIFO in the bundle), and so does the guest's
// console when containerd runs the shim with -debug (its debug level); the
// console's last lines are in a failed boot's error either way.
func RegisterPlugin() {
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			ns, err := namespaces.NamespaceRequired(ic.Context)
			if err != nil {
				return nil, err
			}
			out := log.G(ic.Context).Logger.Out
			level, console := slog.LevelInfo, io.Writer(nil)
			if o, ok := ic.Context.Value(shim.OptsKey{}).(shim.Opts); ok && o.Debug {
				// containerd's debug level: the guest's console too, a
				// line a write (lineWriter).
				level, console = slog.LevelDebug, newLineWriter(out)
			}
			lg := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
			begun := ProcessBegun()
			if sb, sp, ok := parseStartTimes(os.Getenv(EnvStartTimes)); ok {
				// Where a task's first milliseconds go: the start
				// process (containerd waits for it), this process's exec
				// and Go init, and the plugin graph up to here.
				lg.Debug("shim: serving", "start_process", sp.Sub(sb).Round(time.Millisecond),
					"spawn_to_begun", begun.Sub(sp).Round(time.Millisecond),
					"begun_to_plugin_init", time.Since(begun).Round(time.Millisecond))
			}
			pub := pp.(shim.Publisher)
			sd := ss.(shutdown.Service)
			svc := NewService(ic.Context, Config{
				Namespace: ns,
				Publisher: pub,
				Launch:    AgentLauncher(lg, console),
				Shutdown:  sd.Shutdown,
				Log:       lg,
				Begun:     begun,
			})
			svc.CloseOnShutdown(sd, pub)
			return svc, nil
		},
	})
}
