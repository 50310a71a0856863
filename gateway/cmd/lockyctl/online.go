package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"text/tabwriter"
)

func onlineCommand(fs *flag.FlagSet) func(context.Context, *call) error {
	all := fs.Bool("all", false, "list the lockers that are offline too")
	return func(ctx context.Context, c *call) error { return online(ctx, c, *all) }
}

// online lists the lockers whose retained status is online (with all, every
// locker that has a status). It prints nothing on stdout when there is none
// to list, and says so on stderr.
func online(ctx context.Context, c *call, all bool) error {
	cl, err := dial(ctx, c.o)
	if err != nil {
		return err
	}
	defer cl.close()
	v, err := cl.look(ctx, c.o, "lockers/+/status")
	if err != nil {
		return err
	}
	if len(v.statuses) == 0 && v.local {
		return errLocalBroker(c.o.url)
	}
	var ids []string
	up := 0
	for id, st := range v.statuses {
		if st.State == "online" {
			up++
		}
		if st.State == "online" || all {
			ids = append(ids, id)
		}
	}
	switch {
	case len(v.statuses) == 0:
		fmt.Fprintf(c.stderr, "no locker is known to %s: none has published its lockers/{id}/status there (a locker does when it first connects); check that --url is the cloud broker the lockers use\n", c.o.url)
		return nil
	case len(ids) == 0:
		fmt.Fprintf(c.stderr, "no locker is online (%d known, offline: lockyctl online --all lists them)\n", len(v.statuses))
		return nil
	}
	slices.Sort(ids)
	tw := tabwriter.NewWriter(c.stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCKER\tSTATE\tVERSION\tSINCE")
	for _, id := range ids {
		st := v.statuses[id]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", field(id), field(st.State), field(st.Version), field(st.At))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.stderr, "%d of the %d known lockers online\n", up, len(v.statuses))
	return nil
}
