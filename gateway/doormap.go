package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/locky-edge/locky/gateway/linefile"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/kerong"
	"github.com/locky-edge/locky/lockio/modbus"
)

// DoorMap is the --door-map file: which lock board drives each door. Its
// lines (blank lines and # comments aside):
//
//	bus DEVICE [baud=N] [parity=none|even|odd] [stop-bits=1|2] [timeout=DURATION]
//	door N kerong DEVICE board=B lock=L [channels=C] [open-when-set]
//	door N modbus DEVICE unit=U coil=C input=I [open-when=1|0] [occupancy=I [occupied-when=1|0]]
//	poll-interval DURATION
//	pulse DURATION
//
// A bus line sets the serial line of a device (the boards' defaults
// otherwise); one bus is driven by one kind of board only, since two
// protocols on one RS485 line would talk over each other. Pulse is how long
// a Modbus coil stays on. A Modbus door's occupancy= is the discrete input of
// its occupancy (infrared) sensor, on the same unit, and occupied-when the
// level it reads with a parcel in (1 by default); without it the door
// reports no occupancy. Every mistake is named path:line.
type DoorMap struct {
	Kerong kerong.Config   // Doors empty when no door is a Kerong one
	Modbus []modbus.Config // one per bus device
}

// doorMapLine is what one line of the map says, before the banks are built.
type doorMapLine struct {
	kind   string // bus, door, poll-interval, pulse
	n      int    // line number
	fields []string
}

// ReadDoorMap reads and checks the door map at path; New of each bank checks
// it again, with the same words, when the gateway starts.
func ReadDoorMap(path string) (DoorMap, error) {
	var lines []doorMapLine
	err := linefile.Read(path, "the door map (--door-map)", func(n int, line string) error {
		f := strings.Fields(line)
		switch f[0] {
		case "bus", "door", "poll-interval", "pulse":
			lines = append(lines, doorMapLine{f[0], n, f[1:]})
			return nil
		}
		return fmt.Errorf("%q: a line starts with bus, door, poll-interval or pulse", f[0])
	})
	if err != nil {
		return DoorMap{}, err
	}
	m, err := buildDoorMap(lines)
	if err != nil {
		return DoorMap{}, fmt.Errorf("%s:%w", path, err)
	}
	return m, m.check()
}

// serialLine is a bus line: the serial settings of one device.
type serialLine struct {
	baud, stopBits int
	parity         string
	timeout        time.Duration
}

// doorMapSettings are what the lines other than door lines set.
type doorMapSettings struct {
	buses       map[string]serialLine // device → its bus line
	poll, pulse time.Duration
}

// buildDoorMap reads the settings first, so that their order does not
// matter, then the doors, then puts each bus line on the bank of its doors.
func buildDoorMap(lines []doorMapLine) (DoorMap, error) {
	set, err := readDoorMapSettings(lines)
	if err != nil {
		return DoorMap{}, err
	}
	m := DoorMap{Kerong: kerong.Config{Doors: map[int]kerong.Door{}, Buses: map[string]kerong.Bus{}, PollInterval: set.poll}}
	modbusDoors, kindOf, err := readDoorLines(lines, &m.Kerong)
	if err != nil {
		return DoorMap{}, err
	}
	for dev, s := range set.buses {
		switch kindOf[dev] {
		case "kerong":
			m.Kerong.Buses[dev] = kerong.Bus{Baud: s.baud, Parity: s.parity, StopBits: s.stopBits, ResponseTimeout: s.timeout}
		case "":
			return DoorMap{}, fmt.Errorf("bus %s: no door is on it", dev)
		}
	}
	m.Modbus = modbusConfigs(modbusDoors, set)
	if len(kindOf) == 0 { // no door line named a door
		return DoorMap{}, errors.New(" no door line: the map must name at least one door") // after the path's colon
	}
	return m, nil
}

// readDoorMapSettings reads the bus, poll-interval and pulse lines.
func readDoorMapSettings(lines []doorMapLine) (doorMapSettings, error) {
	set := doorMapSettings{buses: map[string]serialLine{}}
	for _, l := range lines {
		var err error
		switch l.kind {
		case "bus":
			err = readBusLine(l, set.buses)
		case "poll-interval":
			set.poll, err = oneDuration(l)
		case "pulse":
			set.pulse, err = oneDuration(l)
		}
		if err != nil {
			return doorMapSettings{}, fmt.Errorf("%d: %w", l.n, err)
		}
	}
	return set, nil
}

// readDoorLines adds the Kerong doors of the door lines to k and returns the
// Modbus doors by bus device, and the kind of board on each device.
func readDoorLines(lines []doorMapLine, k *kerong.Config) (map[string][]modbus.Door, map[string]string, error) {
	modbusDoors := map[string][]modbus.Door{}
	kindOf := map[string]string{} // device → kerong or modbus
	seen := map[int]int{}         // door → line
	for _, l := range lines {
		if l.kind != "door" {
			continue
		}
		n, kind, dev, opts, err := readDoorLine(l)
		if err == nil && seen[n] != 0 {
			err = fmt.Errorf("door %d is mapped twice (line %d)", n, seen[n])
		}
		if err == nil && kindOf[dev] != "" && kindOf[dev] != kind {
			err = fmt.Errorf("bus %s has %s and %s boards: one bus takes one kind of board", dev, kindOf[dev], kind)
		}
		if err == nil {
			seen[n], kindOf[dev] = l.n, kind
			if kind == "kerong" {
				err = addKerongDoor(k, n, dev, opts)
			} else {
				var d modbus.Door
				d, err = modbusDoor(n, dev, opts)
				modbusDoors[dev] = append(modbusDoors[dev], d)
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%d: %w", l.n, err)
		}
	}
	return modbusDoors, kindOf, nil
}

// modbusConfigs returns one Modbus bank per bus device, in the order of the
// device names, with the serial settings of its bus line.
func modbusConfigs(modbusDoors map[string][]modbus.Door, set doorMapSettings) []modbus.Config {
	devs := make([]string, 0, len(modbusDoors))
	for dev := range modbusDoors {
		devs = append(devs, dev)
	}
	sort.Strings(devs)
	var out []modbus.Config
	for _, dev := range devs {
		s := set.buses[dev]
		c := modbus.Config{Doors: modbusDoors[dev], Baud: s.baud, StopBits: s.stopBits, Timeout: s.timeout,
			PollInterval: set.poll, PulseLength: set.pulse}
		if s.parity != "" {
			c.Parity = map[string]modbus.Parity{"none": modbus.ParityNone, "even": modbus.ParityEven, "odd": modbus.ParityOdd}[s.parity]
		}
		out = append(out, c)
	}
	return out
}

// Maps reports whether the map names door n.
func (m DoorMap) Maps(n int) bool {
	if _, ok := m.Kerong.Doors[n]; ok {
		return true
	}
	for _, c := range m.Modbus {
		for _, d := range c.Doors {
			if d.Door == n {
				return true
			}
		}
	}
	return false
}

// check builds each bank, as the gateway will, so that a mistake the banks
// find (a channel used twice, an address out of range) is said before start.
func (m DoorMap) check() error {
	b, err := m.newBanks(nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	return b.Close()
}

func readBusLine(l doorMapLine, buses map[string]serialLine) error {
	if len(l.fields) == 0 {
		return errors.New("bus: name its device, e.g. bus /dev/serial/by-id/usb-FTDI_FT232R-if00-port0 baud=9600")
	}
	dev := l.fields[0]
	if _, dup := buses[dev]; dup {
		return fmt.Errorf("bus %s is set twice", dev)
	}
	var s serialLine
	opts, err := options(l.fields[1:], "baud", "parity", "stop-bits", "timeout")
	if err != nil {
		return fmt.Errorf("bus %s: %w", dev, err)
	}
	if s.baud, err = intOption(opts, "baud", 0, 1200, 1000000); err == nil {
		if s.stopBits, err = intOption(opts, "stop-bits", 0, 1, 2); err == nil {
			s.timeout, err = durationOption(opts, "timeout")
		}
	}
	if p, ok := opts["parity"]; ok && p != "none" && p != "even" && p != "odd" {
		err = fmt.Errorf("parity=%s: use none, even or odd", p)
	}
	s.parity = opts["parity"]
	if err != nil {
		return fmt.Errorf("bus %s: %w", dev, err)
	}
	buses[dev] = s
	return nil
}

func readDoorLine(l doorMapLine) (n int, kind, dev string, opts map[string]string, err error) {
	if len(l.fields) < 3 {
		return 0, "", "", nil, errors.New("door: write door N kerong|modbus DEVICE key=value…")
	}
	n, err = strconv.Atoi(l.fields[0])
	if err != nil || n < 1 || n > contract.MaxDoor {
		return 0, "", "", nil, fmt.Errorf("door %q: a door number is 1..%d", l.fields[0], contract.MaxDoor)
	}
	kind, dev = l.fields[1], l.fields[2]
	switch kind {
	case "kerong":
		opts, err = options(l.fields[3:], "board", "lock", "channels", "open-when-set")
	case "modbus":
		opts, err = options(l.fields[3:], "unit", "coil", "input", "open-when", "occupancy", "occupied-when")
	default:
		err = fmt.Errorf("door %d: board kind %q: use kerong or modbus", n, kind)
	}
	if err != nil {
		return 0, "", "", nil, fmt.Errorf("door %d: %w", n, err)
	}
	return n, kind, dev, opts, nil
}

func addKerongDoor(c *kerong.Config, n int, dev string, opts map[string]string) error {
	d := kerong.Door{Bus: dev}
	var err error
	if d.Board, err = intOption(opts, "board", -1, 0, 31); err == nil {
		if d.Lock, err = intOption(opts, "lock", -1, 1, 48); err == nil {
			d.Channels, err = intOption(opts, "channels", 0, 8, 48)
		}
	}
	if v, ok := opts["open-when-set"]; ok {
		d.OpenWhenSet = v == "" || v == "true"
		if v != "" && v != "true" && v != "false" {
			err = fmt.Errorf("open-when-set=%s: write open-when-set alone, or =true or =false", v)
		}
	}
	if err != nil {
		return fmt.Errorf("door %d: %w", n, err)
	}
	c.Doors[n] = d
	return nil
}

func modbusDoor(n int, dev string, opts map[string]string) (modbus.Door, error) {
	d := modbus.Door{Door: n, Device: dev}
	unit, err := intOption(opts, "unit", -1, 1, 247)
	var coil, input, occupancy int
	if err == nil {
		if coil, err = intOption(opts, "coil", -1, 0, 65535); err == nil {
			if input, err = intOption(opts, "input", -1, 0, 65535); err == nil {
				occupancy, err = intOption(opts, "occupancy", 0, 0, 65535)
			}
		}
	}
	switch opts["open-when"] {
	case "", "1":
	case "0":
		d.Polarity = modbus.OpenWhen0
	default:
		err = fmt.Errorf("open-when=%s: the sensor input level of an open door, 1 or 0", opts["open-when"])
	}
	_, hasOccupancy := opts["occupancy"]
	when, hasWhen := opts["occupied-when"]
	switch {
	case hasWhen && !hasOccupancy:
		err = fmt.Errorf("occupied-when=%s without occupancy=: add the occupancy sensor's input, occupancy=I", when)
	case when == "" || when == "1":
	case when == "0":
		d.OccupancyPolarity = modbus.OccupiedWhen0
	default:
		err = fmt.Errorf("occupied-when=%s: the occupancy input level with a parcel in, 1 or 0", when)
	}
	if err != nil {
		return d, fmt.Errorf("door %d: %w", n, err)
	}
	d.Unit, d.Coil, d.Input = unit, uint16(coil), uint16(input)
	if hasOccupancy {
		o := uint16(occupancy)
		d.Occupancy = &o
	}
	return d, nil
}

// options reads key=value (or a bare key) fields, only of the keys allowed.
func options(fields []string, allowed ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range fields {
		k, v, _ := strings.Cut(f, "=")
		ok := false
		for _, a := range allowed {
			ok = ok || a == k
		}
		if !ok {
			return nil, fmt.Errorf("%q: the settings here are %s", k, strings.Join(allowed, ", "))
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%s is given twice", k)
		}
		out[k] = v
	}
	return out, nil
}

// intOption reads opts[key] in lo..hi; missing, it is def, or an error when
// def is -1 (required).
func intOption(opts map[string]string, key string, def, lo, hi int) (int, error) {
	v, ok := opts[key]
	if !ok {
		if def == -1 {
			return 0, fmt.Errorf("%s= is required", key)
		}
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s=%s: must be a number %d..%d", key, v, lo, hi)
	}
	return n, nil
}

func durationOption(opts map[string]string, key string) (time.Duration, error) {
	v, ok := opts[key]
	if !ok {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%s: must be a positive duration such as 300ms", key, v)
	}
	return d, nil
}

func oneDuration(l doorMapLine) (time.Duration, error) {
	if len(l.fields) != 1 {
		return 0, fmt.Errorf("%s: write %s DURATION, e.g. %s 200ms", l.kind, l.kind, l.kind)
	}
	d, err := time.ParseDuration(l.fields[0])
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %s: must be a positive duration such as 200ms", l.kind, l.fields[0])
	}
	return d, nil
}

// boardBank is a bank of doors on lock boards: a door handler Driver with
// its own serial lines to open and close.
type boardBank interface {
	Open(door int) error
	Watch(report func(door int, st contract.DoorState))
	Start(ctx context.Context) error
	Close() error
}

// banks drives the doors of every bank of the map as one door.Driver.
type banks struct {
	all    []boardBank
	byDoor map[int]boardBank
}

// newBanks builds the banks of m (nothing is opened before Start).
func (m DoorMap) newBanks(set *metrics.Set, log *slog.Logger) (*banks, error) {
	b := &banks{byDoor: map[int]boardBank{}}
	if len(m.Kerong.Doors) > 0 {
		c := m.Kerong
		c.Metrics, c.Logger = set, log
		k, err := kerong.New(c)
		if err != nil {
			return nil, err
		}
		for n := range c.Doors {
			b.byDoor[n] = k
		}
		b.all = append(b.all, k)
	}
	for _, c := range m.Modbus {
		c.Metrics, c.Logger = set, log
		mb, err := modbus.New(c)
		if err != nil {
			return nil, err
		}
		for _, d := range c.Doors {
			b.byDoor[d.Door] = mb
		}
		b.all = append(b.all, mb)
	}
	return b, nil
}

func (b *banks) Open(door int) error {
	bank, ok := b.byDoor[door]
	if !ok {
		return fmt.Errorf("door %d is not in the door map (--door-map)", door)
	}
	return bank.Open(door)
}

func (b *banks) Watch(report func(door int, st contract.DoorState)) {
	for _, bank := range b.all {
		bank.Watch(report)
	}
}

// Start starts every bank; when one fails, those started are closed.
func (b *banks) Start(ctx context.Context) error {
	for i, bank := range b.all {
		if err := bank.Start(ctx); err != nil {
			errs := []error{err}
			for _, started := range b.all[:i] {
				errs = append(errs, started.Close())
			}
			return errors.Join(errs...)
		}
	}
	return nil
}

// Close closes every bank and returns their errors joined.
func (b *banks) Close() error {
	var errs []error
	for _, bank := range b.all {
		errs = append(errs, bank.Close())
	}
	return errors.Join(errs...)
}
