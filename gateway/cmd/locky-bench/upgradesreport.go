package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// modeResult is what the clients saw across the swaps of one mode.
type modeResult struct {
	name                  string
	swaps                 int
	swapTime              sample // start → done
	sent, answered        int
	gaps                  sample // the longest gap between two answers, per swap
	kiosk, board, backend sample // reconnections: connection lost → CONNACK
	refused               int    // dials refused, all clients
	inFlight, completed   int    // door cycles open at a swap's start; of them, completed after it
}

// result sums up ph from what the clients recorded.
func (r *upgradesRun) result(ph phase) modeResult {
	m := modeResult{name: ph.name, swaps: len(ph.swaps)}
	m.sent, m.answered = r.k.codesBetween(ph.from, ph.to)
	for _, s := range ph.swaps {
		m.swapTime = append(m.swapTime, s.done.Sub(s.start))
		m.gaps = append(m.gaps, r.k.longestGap(s.start, s.settled))
		open, done := r.pool.inFlight(s.start)
		m.inFlight, m.completed = m.inFlight+open, m.completed+done
	}
	for l, s := range map[*link]*sample{r.k.link: &m.kiosk, r.b.link: &m.board, r.be.link: &m.backend} {
		var refused int
		*s, refused = l.between(ph.from, ph.to)
		m.refused += refused
	}
	return m
}

// upgradesTotals are the whole run's counts that belong to no one mode.
type upgradesTotals struct {
	results       map[string]int // first answers by result
	unanswered    int            // codes of the whole run, warm-up included, never answered
	starved       int            // codes not entered: no door was free
	kioskFailed   int            // code publishes that failed (sent again)
	boardFailed   int            // state publishes that failed (reported again)
	otherEvents   map[string]int
	doorsWaiting  int // doors still waiting for their status event at the end
	reservations  int
	cyclesOpened  int
	cyclesNoEvent int // of which the database shows cyclesInStore completed
	cyclesInStore int
	ackedLost     int // cycles not completed although the gateway acked the report closing them
}

func (r *upgradesRun) totals() upgradesTotals {
	t := upgradesTotals{unanswered: r.k.unanswered(), doorsWaiting: r.pool.waiting()}
	r.k.mu.Lock()
	t.results, t.starved, t.kioskFailed = maps.Clone(r.k.results), r.k.starved, r.k.failed
	r.k.mu.Unlock()
	r.b.mu.Lock()
	t.boardFailed = r.b.failed
	r.b.mu.Unlock()
	r.pool.mu.Lock()
	defer r.pool.mu.Unlock()
	t.otherEvents, t.reservations, t.cyclesOpened = maps.Clone(r.pool.other), r.pool.next, len(r.pool.cycles)
	for _, c := range r.pool.cycles {
		if c.event.IsZero() {
			t.cyclesNoEvent++
			if c.inStore {
				t.cyclesInStore++
			}
		}
		if !c.completed() && c.acked {
			t.ackedLost++
		}
	}
	return t
}

// upgradesReport is what `locky-bench upgrades` prints.
type upgradesReport struct {
	cfg                         upgradesConfig
	machine, loadStart, loadEnd string
	modes                       []modeResult
	totals                      upgradesTotals
}

func printUpgradesReport(w io.Writer, rep upgradesReport) {
	fmt.Fprintf(w, "# locky-bench upgrades: what clients see across swaps of one gateway\n\nMachine: %s\n\n", rep.machine)
	fmt.Fprintf(w, "Load average (1, 5, 15 min) at start: %s; at end: %s.\n\n", rep.loadStart, rep.loadEnd)
	rows := [][]string{{"measure", "upgrade in place (`locky-gateway upgrade`)", "stop + start (SIGTERM, exit, exec)"}}
	for _, row := range modeRows(rep.cfg) {
		cells := []string{row.label}
		for _, m := range rep.modes {
			cells = append(cells, row.cell(m))
		}
		rows = append(rows, cells)
	}
	for i, row := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		if i == 0 {
			fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(row)))
		}
	}
	printTotals(w, rep.totals)
	fmt.Fprintf(w, upgradesMethod, rep.cfg.codeEvery, rep.cfg.doors, rep.cfg.doorOpen, rep.cfg.after, rep.cfg.resync)
}

// modeRow is one row of the table: a label and a cell per mode.
type modeRow struct {
	label string
	cell  func(modeResult) string
}

func modeRows(cfg upgradesConfig) []modeRow {
	p50max := func(s sample) string { return fmt.Sprintf("%s / %s", ms(s.pct(0.5)), ms(s.max())) }
	reconnect := func(of func(modeResult) sample) func(modeResult) string {
		return func(m modeResult) string { s := of(m); return fmt.Sprintf("%s (%d)", p50max(s), len(s)) }
	}
	return []modeRow{
		{fmt.Sprintf("swaps (upgrade: %s ⇄ %s; stop/start: the same binary)", versionA, versionB),
			func(m modeResult) string { return fmt.Sprint(m.swaps) }},
		{"swap: the upgrade command's run / SIGTERM → new process ready, p50 / max",
			func(m modeResult) string { return p50max(m.swapTime) }},
		{fmt.Sprintf("codes entered (one every %s) / answered / **lost** (target 0)", cfg.codeEvery),
			func(m modeResult) string {
				return fmt.Sprintf("%d / %d / %s", m.sent, m.answered, bold(m.sent-m.answered > 0, fmt.Sprint(m.sent-m.answered)))
			}},
		{"longest gap between two display answers across a swap, p50 / max (target < 1 s, goal < 100 ms)",
			func(m modeResult) string {
				return fmt.Sprintf("%s / %s", ms(m.gaps.pct(0.5)), bold(m.gaps.max() >= time.Second, ms(m.gaps.max())))
			}},
		{"screen reconnect: connection lost → CONNACK, p50 / max (reconnections)", reconnect(func(m modeResult) sample { return m.kiosk })},
		{"door board reconnect, p50 / max (reconnections)", reconnect(func(m modeResult) sample { return m.board })},
		{"back-end client reconnect, p50 / max (reconnections)", reconnect(func(m modeResult) sample { return m.backend })},
		{"door cycles in flight at a swap (answered opened before it, reported closed after it), summed / completed",
			func(m modeResult) string { return fmt.Sprintf("%d / %d", m.inFlight, m.completed) }},
		{"connection attempts refused (ECONNREFUSED on dial), all clients",
			func(m modeResult) string { return fmt.Sprint(m.refused) }},
	}
}

func bold(on bool, s string) string {
	if on {
		return "**" + s + "**"
	}
	return s
}

func printTotals(w io.Writer, t upgradesTotals) {
	results := make([]string, 0, len(t.results))
	for _, k := range slices.Sorted(maps.Keys(t.results)) {
		results = append(results, fmt.Sprintf("%s %d", k, t.results[k]))
	}
	other := make([]string, 0, len(t.otherEvents))
	for _, k := range slices.Sorted(maps.Keys(t.otherEvents)) {
		other = append(other, fmt.Sprintf("%s %d", k, t.otherEvents[k]))
	}
	fmt.Fprintf(w, "\nWhole run, warm-up included: answers by result: %s; codes never answered: %d; "+
		"codes not entered for want of a free door: %d; code publishes that failed (sent again after the reconnection): %d; "+
		"door state publishes that failed (reported again): %d.\n",
		strings.Join(results, ", "), t.unanswered, t.starved, t.kioskFailed, t.boardFailed)
	fmt.Fprintf(w, "Reservations: %d; door cycles opened: %d, of which %d with no status event at the back-end "+
		"(%d of them completed in the database after the stop, %s not, of which %s although the gateway had acknowledged "+
		"the board's report closing the door); doors still waiting for one at the end: %d; other events: %s.\n",
		t.reservations, t.cyclesOpened, t.cyclesNoEvent, t.cyclesInStore,
		bold(t.cyclesNoEvent > t.cyclesInStore, fmt.Sprint(t.cyclesNoEvent-t.cyclesInStore)),
		bold(t.ackedLost > 0, fmt.Sprint(t.ackedLost)), t.doorsWaiting, strings.Join(other, ", "))
}

const upgradesMethod = `
How it was measured:
- The gateway is built twice (-ldflags -X …/gateway.Version=vA and =vB) and
  runs as a child process from an installed path, with --sim-doors 0 and
  --log-format json on two fixed loopback ports chosen free before its first
  start. An upgrade moves a fresh hard link of the other build over the
  installed path (os.Rename) and runs ` + "`locky-gateway upgrade --http-addr …`" + `
  from a copy that is never moved; it must exit 0 naming the new version. A
  stop/start sends SIGTERM, awaits the exit (status 0) and starts the
  installed binary again on the same data dir and ports.
- Three MQTT 5 clients, each reconnecting at once (1 ms between failed
  attempts) when its connection drops, clean start: the screen enters a
  valid code every %s, a deposit or pickup code of a reservation whose door
  is free, with a request id of its own, and after a reconnection sends every
  code it has no answer to again (same request id); the door board, on each
  open command, reports the door open (retained) and, %[3]s later, closed,
  and after a reconnection reports every door's state again (-board-resync=%[5]v); the back-end
  takes the status events (a stored deposit frees the door for its pickup) and
  upserts a new reservation on each door whose parcel was delivered. %[2]d doors.
- After each swap, the next waits until the screen has had %[4]d answers more.
  Lost = a code with no answer when the run ends (5 s after the last code).
  Gap = the longest time between two consecutive first answers, from the last
  answer before the swap's start to the last before it was followed by those
  answers. Reconnect = the client's connection ended (paho's Done) → the
  CONNACK of the next. In flight = a code answered "opened" before the swap's
  start whose door the board reported closed after it; completed = its status
  event reached the back-end, or, for one that did not, the database (opened
  once the gateway has stopped) shows the reservation past it. The gateway
  publishes locky/up/events locally best-effort (the cloud bridge sends from
  the outbox): an event published while the back-end reconnects is not seen,
  and its door waits to the end, out of the pool.
`
