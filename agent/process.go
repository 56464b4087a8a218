package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/agent/proto"
)

// defaultPath is the search path when neither the command's environment
// nor the agent's has PATH (PID 1 starts without one).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// output is one stream the agent reads from the command.
type output struct {
	stream proto.Stream
	f      *os.File
	done   chan struct{} // closed when its pump ends
}

// process is a started command.
type process struct {
	cmd      *exec.Cmd
	pid      int
	tty      bool
	stdin    *os.File // pipe write end, or the terminal master
	outputs  []*output
	reaped   <-chan syscall.WaitStatus // from the Reaper, or nil
	oomKills uint64                    // /proc/vmstat oom_kill at start
	resolved bool                      // the path is the host's (hostResolved)

	mu         sync.Mutex
	exited     bool // no more signals: the pid may be reused
	closeOnce  sync.Once
	stdinClose sync.Once
}

// startProcess starts e with its standard streams on fresh pipes or a new
// pseudo-terminal; with e.Resolved set, at that path if the guest's mount
// table (mountinfo) shows it is what the search would find (hostResolved).
func startProcess(e *proto.Exec, r *Reaper, mountinfo string) (*process, error) {
	env := e.Env
	if env == nil {
		env = os.Environ()
	}
	var err error
	path, resolved := "", false
	if e.Resolved != "" {
		if mounts, err := mountPoints(mountinfo); err == nil {
			path, resolved = hostResolved(e, mounts)
		}
	}
	if !resolved {
		if path, err = lookPath(e.Path, env, e.Dir); err != nil {
			return nil, err
		}
	}
	if err := checkWorkdir(e.Dir); err != nil {
		return nil, fmt.Errorf("agent: starting %s: %w", e.Path, err)
	}
	args := e.Args
	if len(args) == 0 {
		args = []string{e.Path}
	}
	cmd := &exec.Cmd{Path: path, Args: args, Env: env, Dir: e.Dir, SysProcAttr: &syscall.SysProcAttr{}}
	if e.Cred {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: e.UID, Gid: e.GID, Groups: []uint32{}}
	}
	p := &process{cmd: cmd, tty: e.TTY, resolved: resolved}
	var childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
	}()
	if e.TTY {
		master, slave, err := openPTY(e.Rows, e.Cols)
		if err != nil {
			return nil, err
		}
		childEnds = append(childEnds, slave)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		// A new session with the terminal as its controlling terminal, so
		// the shell's job control and ^C work as on a console.
		cmd.SysProcAttr.Setsid = true
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
		p.stdin = master
		p.outputs = []*output{{stream: proto.StreamStdout, f: master, done: make(chan struct{})}}
	} else {
		files := make([]*os.File, 0, 6)
		for range 3 {
			r, w, err := os.Pipe()
			if err != nil {
				for _, f := range files {
					f.Close()
				}
				return nil, fmt.Errorf("agent: pipe for %s: %w", e.Path, err)
			}
			files = append(files, r, w)
		}
		cmd.Stdin, p.stdin = files[0], files[1]
		p.outputs = []*output{
			{stream: proto.StreamStdout, f: files[2], done: make(chan struct{})},
			{stream: proto.StreamStderr, f: files[4], done: make(chan struct{})},
		}
		cmd.Stdout, cmd.Stderr = files[3], files[5]
		childEnds = append(childEnds, files[0], files[3], files[5])
		// Its own process group, so a group signal reaches what it started.
		cmd.SysProcAttr.Setpgid = true
	}
	p.oomKills = readOOMKills()
	if r != nil {
		p.reaped, err = r.start(cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		p.closeFiles()
		return nil, fmt.Errorf("agent: starting %s: %w", e.Path, err)
	}
	p.pid = cmd.Process.Pid
	return p, nil
}

// lookPath finds file the way execvp does, in the command's PATH; a name
// with a slash is used as it is (relative to dir).
func lookPath(file string, env []string, dir string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := searchPath(env)
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, file)
		if !filepath.IsAbs(p) && dir != "" {
			p = filepath.Join(dir, p)
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("agent: %q: executable file not found in $PATH (%s)", file, path)
}

// searchPath is the PATH a command with environment env is looked up in:
// its last PATH= entry, else defaultPath.
func searchPath(env []string) string {
	path := defaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	return path
}

// wait waits for the command to end and reports how.
func (p *process) wait() (proto.Exit, error) {
	var ws syscall.WaitStatus
	if p.reaped != nil {
		ws = <-p.reaped
	} else {
		st, err := p.cmd.Process.Wait()
		if err != nil {
			return proto.Exit{}, fmt.Errorf("agent: waiting for pid %d: %w", p.pid, err)
		}
		ws = st.Sys().(syscall.WaitStatus)
	}
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	p.cmd.Process.Release()
	if ws.Signaled() {
		x := proto.Exit{Signaled: true, Value: int32(ws.Signal()), CoreDumped: ws.CoreDump()}
		// The kernel does not say who sent a SIGKILL; an OOM kill during
		// the command's life is the best evidence there is.
		x.OOM = ws.Signal() == syscall.SIGKILL && readOOMKills() > p.oomKills
		return x, nil
	}
	return proto.Exit{Value: int32(ws.ExitStatus())}, nil
}

// signal delivers s unless the command has been reaped.
func (p *process) signal(s proto.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return
	}
	if s.Group {
		// The command leads its own group (Setpgid or Setsid).
		unix.Kill(-p.pid, syscall.Signal(s.Num))
		return
	}
	p.cmd.Process.Signal(syscall.Signal(s.Num))
}

// kill ends the command and everything in its group.
func (p *process) kill() {
	p.signal(proto.Signal{Num: uint32(syscall.SIGKILL), Group: true})
}

func (p *process) resize(r proto.Resize) {
	if p.tty {
		setWinsize(p.stdin, r.Rows, r.Cols)
	}
}

// closeStdin ends the command's standard input. On a terminal it types
// the end-of-file character instead: the master is also the output.
func (p *process) closeStdin() {
	p.stdinClose.Do(func() {
		if p.tty {
			p.stdin.Write([]byte{4})
			return
		}
		p.stdin.Close()
	})
}

// closeFiles closes the agent's ends, which also unblocks its pumps.
func (p *process) closeFiles() {
	p.closeOnce.Do(func() {
		if p.stdin != nil {
			p.stdin.Close()
		}
		for _, o := range p.outputs {
			o.f.Close()
		}
	})
}

// readOOMKills returns the kernel's count of OOM kills, 0 if unknown.
func readOOMKills() uint64 {
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "oom_kill "); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			return n
		}
	}
	return 0
}

// errNotPTY is returned when the kernel has no /dev/ptmx.
var errNotPTY = errors.New("agent: no pseudo-terminals (/dev/ptmx; is devpts mounted?)")

// checkWorkdir reports a working directory the command cannot start in.
// The child's failed chdir would otherwise surface as "fork/exec PATH: no
// such file or directory", naming the program, which exists.
func checkWorkdir(dir string) error {
	if dir == "" {
		return nil
	}
	st, err := os.Stat(dir)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("working directory %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("working directory %s: not a directory", dir)
	}
	return nil
}
