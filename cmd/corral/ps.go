package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/audit"
	"github.com/corral-vmm/corral/control"
	"github.com/corral-vmm/corral/inventory"
)

// exitFailure is the status of an inventory command (ps, inspect, gc,
// events, logs) that could not do its work.
const exitFailure = 1

// addInventoryFlags defines --name and the repeatable --label K=V on fs,
// filling cfg; `corral run` and `corral exec` share them.
func addInventoryFlags(fs *flag.FlagSet, cfg *corral.Config) {
	fs.StringVar(&cfg.Name, "name", "", "the machine's name in the inventory")
	fs.Func("label", "a KEY=VALUE label (repeatable)", func(v string) error {
		k, val, err := inventory.ParseLabel(v)
		if err != nil {
			return err
		}
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels[k] = val
		return nil
	})
}

// newFlags is a FlagSet for an inventory command that prints the usage
// text on -h.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("corral "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	return fs
}

// parseFlags parses args; done is set with the status to return when
// parsing ends the command (-h, a bad flag).
func parseFlags(fs *flag.FlagSet, args []string) (status int, done bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, true
		}
		return exitUsage, true
	}
	return 0, false
}

// listVMs lists the VMs this user may see, auditing each crash found for
// the first time (vm.crashed); problems with the trail are warnings here.
func listVMs(stderr io.Writer, cmd string) ([]inventory.VM, error) {
	vms, err := inventory.List(inventory.SearchDirs()...)
	if err != nil {
		return nil, err
	}
	var alog *audit.Log
	for i := range vms {
		v := &vms[i]
		if v.State == inventory.Corrupt {
			fmt.Fprintf(stderr, "corral %s: warning: %v\n", cmd, v.Err)
			continue
		}
		if v.State != inventory.Crashed {
			continue
		}
		if alog == nil {
			if alog, err = openAudit(); err != nil {
				fmt.Fprintf(stderr, "corral %s: warning: %v\n", cmd, err)
				return vms, nil
			}
		}
		if v.ClaimCrashReport() {
			if err := alog.AppendVM(v, "vm.crashed"); err != nil {
				fmt.Fprintf(stderr, "corral %s: warning: %v\n", cmd, err)
			}
		}
	}
	return vms, nil
}

func openAudit() (*audit.Log, error) {
	return audit.Open(audit.DefaultPath(inventory.StateDir()), audit.Options{})
}

// findVM resolves an ID, name or ID prefix among the VMs this user sees.
func findVM(q string, stderr io.Writer, cmd string) (*inventory.VM, error) {
	vms, err := listVMs(stderr, cmd)
	if err != nil {
		return nil, err
	}
	return inventory.Resolve(vms, q)
}

// vmJSON is a VM as `corral ps --json` and `corral inspect` print it.
type vmJSON struct {
	ID        string            `json:"id"`
	Name      string            `json:"name,omitempty"`
	State     inventory.State   `json:"state"`
	Labels    map[string]string `json:"labels,omitempty"`
	Owner     int               `json:"owner"`
	OwnerName string            `json:"owner_name,omitempty"`
	// Age and TTLLeft are seconds by the boot-time clock; absent when
	// unknown (a record of another boot, no TTL).
	Age     *float64          `json:"age_seconds,omitempty"`
	TTLLeft *float64          `json:"ttl_left_seconds,omitempty"`
	Dir     string            `json:"dir"`
	Record  *inventory.Record `json:"record,omitempty"`
	Error   string            `json:"error,omitempty"`
	// Metrics are a running VM's counters from its control socket, with
	// --metrics; MetricsError says why they are missing.
	Metrics      []control.Metric `json:"metrics,omitempty"`
	MetricsError string           `json:"metrics_error,omitempty"`
}

func describe(v *inventory.VM, clk inventory.Clock, boot string) vmJSON {
	j := vmJSON{ID: v.ID, Name: v.Name(), State: v.State, Owner: v.Owner, OwnerName: userName(v.Owner), Dir: v.Dir, Record: v.Record}
	if v.Record != nil {
		j.Labels = v.Record.Labels
	}
	if v.Err != nil {
		j.Error = v.Err.Error()
	}
	if d, ok := v.Age(clk, boot); ok {
		s := d.Seconds()
		j.Age = &s
	}
	if d, ok := v.TTLLeft(clk, boot); ok {
		s := d.Seconds()
		j.TTLLeft = &s
	}
	return j
}

func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return ""
}

// vmFilter is one --filter: label=K=V, label=K, name=N or state=S.
type vmFilter struct{ key, k, v string }

func parseFilter(s string) (vmFilter, error) {
	key, rest, ok := strings.Cut(s, "=")
	if !ok || rest == "" {
		return vmFilter{}, fmt.Errorf("filter %q: want label=KEY[=VALUE], name=NAME or state=STATE", s)
	}
	switch key {
	case "label":
		k, v, hasV := strings.Cut(rest, "=")
		f := vmFilter{key: key, k: k, v: v}
		if !hasV {
			f.key = "label-key"
		}
		return f, nil
	case "name", "state":
		return vmFilter{key: key, v: rest}, nil
	}
	return vmFilter{}, fmt.Errorf("filter %q: unknown key %q (want label, name or state)", s, key)
}

func (f vmFilter) match(v *inventory.VM) bool {
	var labels map[string]string
	if v.Record != nil {
		labels = v.Record.Labels
	}
	switch f.key {
	case "label":
		val, ok := labels[f.k]
		return ok && val == f.v
	case "label-key":
		_, ok := labels[f.k]
		return ok
	case "name":
		return v.Name() == f.v
	case "state":
		return string(v.State) == f.v
	}
	return false
}

// psCommand implements `corral ps`.
func psCommand(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("ps", stderr)
	all := fs.Bool("a", false, "include ended and crashed VMs")
	asJSON := fs.Bool("json", false, "print JSON")
	metrics := fs.Bool("metrics", false, "with --json: each running VM's counters from its control socket")
	var filters []vmFilter
	fs.Func("filter", "label=K=V, label=K, name=N or state=S (repeatable)", func(s string) error {
		f, err := parseFilter(s)
		filters = append(filters, f)
		return err
	})
	if st, done := parseFlags(fs, args); done {
		return st
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "corral ps: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *metrics && !*asJSON {
		fmt.Fprintln(stderr, "corral ps: --metrics needs --json (the table has no room for counters)")
		return exitUsage
	}
	vms, err := listVMs(stderr, "ps")
	if err != nil {
		fmt.Fprintf(stderr, "corral ps: %v\n", err)
		return exitFailure
	}
	clk := inventory.SystemClock{}
	boot, _ := inventory.BootID()
	out := []vmJSON{}
	for i := range vms {
		v := &vms[i]
		if !*all && v.State != inventory.Running {
			continue
		}
		if !slices.ContainsFunc(filters, func(f vmFilter) bool { return !f.match(v) }) {
			out = append(out, describe(v, clk, boot))
		}
	}
	if *asJSON {
		if *metrics {
			addMetrics(out)
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tAGE\tTTL LEFT\tCPUS\tMEMORY\tPID\tOWNER\tLABELS")
	for _, j := range out {
		cpus, mem, pid := "-", "-", "-"
		if r := j.Record; r != nil {
			cpus, mem, pid = strconv.Itoa(r.CPUs), corral.FormatSize(r.Memory), strconv.Itoa(r.PID)
		}
		owner := j.OwnerName
		if owner == "" {
			owner = strconv.Itoa(j.Owner)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.ID[:min(12, len(j.ID))], dash(j.Name), j.State,
			seconds(j.Age), seconds(j.TTLLeft), cpus, mem, pid, owner, dash(formatLabels(j.Labels)))
	}
	tw.Flush()
	return exitOK
}

// metricsTimeout bounds how long ps waits for one VM's counters: a VMM
// that does not answer must not hold the listing.
const metricsTimeout = 2 * time.Second

// addMetrics asks each running VM's control socket for its counters, all
// at once, so one slow VMM costs at most metricsTimeout.
func addMetrics(vms []vmJSON) {
	var wg sync.WaitGroup
	for i := range vms {
		v := &vms[i]
		if v.State != inventory.Running {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), metricsTimeout)
			defer cancel()
			ms, err := control.NewClient(filepath.Join(v.Dir, control.SocketName)).MetricFamilies(ctx)
			if err != nil {
				v.MetricsError = err.Error()
				return
			}
			v.Metrics = ms
		})
	}
	wg.Wait()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// seconds formats a duration in seconds to whole seconds, "-" if unknown.
func seconds(s *float64) string {
	if s == nil {
		return "-"
	}
	return (time.Duration(*s) * time.Second).String()
}

func formatLabels(l map[string]string) string {
	var s []string
	for k, v := range l {
		s = append(s, k+"="+v)
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}
