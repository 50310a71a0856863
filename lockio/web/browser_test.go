package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/locky-edge/locky/gateway"
	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/web"
)

// waitLimit bounds every wait for the page or the gateway: a broken feature
// fails the test instead of hanging it. It is not a timing assertion.
const waitLimit = 30 * time.Second

// chromiumPath is where Debian's chromium package puts the browser.
const chromiumPath = "/usr/bin/chromium"

// TestPagesInBrowser drives the locker and kiosk pages in headless Chromium
// against a real gateway: a test reservation made with the page's helper, its
// deposit code typed on the kiosk, the door seen opening live on the locker
// page and closed with a click, the parcel stored; the pickup code on a kiosk
// that resets by itself; a wrong code refused; a lockout counting down; the
// test data removed; and outside dev mode, no way from the kiosk to the
// locker page.
func TestPagesInBrowser(t *testing.T) {
	exe := chromium(t)
	cfg := testConfig(t)
	cfg.LockoutThreshold = 2
	g := startGateway(t, cfg)
	site := serve(t, g, cfg, time.Hour)
	quick := serve(t, g, cfg, 300*time.Millisecond) // a kiosk that resets itself soon
	shots := screenshotDir(t)
	browser := newBrowser(t, exe)
	locker := newTab(t, browser)
	kiosk := newTab(t, browser)

	var res struct{ id, deposit, pickup, courier string }
	t.Run("locker page shows the doors live", func(t *testing.T) {
		do(t, locker, chromedp.Navigate(site+"/"),
			chromedp.WaitVisible(chromedp.CSS(`#link[data-state="live"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#door-12[data-state="closed"] .parcel[data-status="none"]`)))
		if n := run(t, locker, chromedp.Evaluate[int](`document.querySelectorAll('#doors .tile').length`)); n != cfg.SimDoors {
			t.Fatalf("%d tiles; want %d", n, cfg.SimDoors)
		}
		if got := run(t, locker, chromedp.Text(chromedp.ID("bridge"))); got != "no bridge" {
			t.Errorf("bridge: got %q; want %q", got, "no bridge")
		}
		// Nothing sends the outbox without a bridge: the figure says so.
		if got := run(t, locker, chromedp.Text(chromedp.ID("outbox"))); !strings.HasSuffix(got, " kept, no bridge") {
			t.Errorf("outbox: got %q; want the count and %q", got, "kept, no bridge")
		}
		if got := run(t, locker, chromedp.Evaluate[string](`document.getElementById('outbox-figure').title`)); !strings.Contains(got, "--cloud-url") {
			t.Errorf("outbox figure's title %q; want the reason, naming --cloud-url", got)
		}
		screenshot(t, locker, shots, "locker")
	})

	t.Run("test helper creates a reservation", func(t *testing.T) {
		do(t, locker,
			chromedp.WaitReady(chromedp.CSS(`#test-door option[value="7"]`)),
			chromedp.SetValue(chromedp.ID("test-door"), "7"),
			chromedp.Click(chromedp.ID("create-reservation")),
			chromedp.WaitVisible(chromedp.CSS(`#codes-dialog[open] #code-deposit`)))
		res.id = run(t, locker, chromedp.Text(chromedp.ID("codes-id")))
		res.deposit = run(t, locker, chromedp.Text(chromedp.ID("code-deposit")))
		res.pickup = run(t, locker, chromedp.Text(chromedp.ID("code-pickup")))
		res.courier = run(t, locker, chromedp.Text(chromedp.ID("code-courier")))
		for _, c := range []string{res.deposit, res.pickup, res.courier} {
			if contract.CheckCode(c) != nil || len(c) != 6 {
				t.Fatalf("code %q on the page; want 6 digits", c)
			}
		}
		if !strings.HasPrefix(res.id, web.TestPrefix) {
			t.Fatalf("reservation id %q; want the prefix %q", res.id, web.TestPrefix)
		}
		if st := statusOf(t, g, res.id); st != contract.StatusArriving {
			t.Fatalf("reservation %s is %q in the store; want %q", res.id, st, contract.StatusArriving)
		}
		screenshot(t, locker, shots, "locker-codes")
		codes := fmt.Sprintf("[%q, %q, %q]", res.deposit, res.pickup, res.courier)
		if got := run(t, locker, chromedp.Text(chromedp.ID("tool-result"))); got != "Created "+res.id+" for door 7." {
			t.Errorf("status line %q; want %q, without the codes", got, "Created "+res.id+" for door 7.")
		}
		do(t, locker, chromedp.Click(chromedp.ID("codes-close")),
			chromedp.WaitNotVisible(chromedp.ID("codes-dialog")),
			chromedp.WaitVisible(chromedp.CSS(`#door-7 .parcel[data-status="arriving"]`)))
		// "Shown only now": once the dialog is closed, no code is left in the
		// page, the status line included.
		poll(t, locker, `!`+codes+`.some((c) => document.documentElement.textContent.includes(c))`)
	})

	t.Run("deposit code opens the door, a click closes it", func(t *testing.T) {
		do(t, kiosk, chromedp.Navigate(site+"/kiosk"), chromedp.WaitVisible(chromedp.ID("keypad")))
		if n := run(t, kiosk, chromedp.Evaluate[int](`document.querySelectorAll('a[href="/"]').length`)); n != 1 {
			t.Errorf("dev mode: %d links from the kiosk to the locker page; want 1", n)
		}
		for _, d := range res.deposit[:3] {
			do(t, kiosk, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#keypad [data-digit="%c"]`, d))))
		}
		screenshot(t, kiosk, shots, "kiosk")
		for _, d := range res.deposit[3:] {
			do(t, kiosk, chromedp.Click(chromedp.CSS(fmt.Sprintf(`#keypad [data-digit="%c"]`, d))))
		}
		if got := run(t, kiosk, chromedp.Text(chromedp.ID("code"))); got != res.deposit {
			t.Fatalf("code shown %q; want %q", got, res.deposit)
		}
		do(t, kiosk, chromedp.Click(chromedp.ID("key-ok")),
			chromedp.WaitVisible(chromedp.CSS(`#result[data-result="opened"]`)))
		if got, want := run(t, kiosk, chromedp.Text(chromedp.ID("result-text"))), "Door 7 is open — please close it when done"; got != want {
			t.Errorf("kiosk: got %q; want %q", got, want)
		}
		screenshot(t, kiosk, shots, "kiosk-opened")

		do(t, locker, chromedp.WaitVisible(chromedp.CSS(`button#door-7[data-state="open"]`)))
		screenshot(t, locker, shots, "locker-open")
		do(t, locker, chromedp.Click(chromedp.CSS(`button#door-7`)),
			chromedp.WaitVisible(chromedp.CSS(`#door-7[data-state="closed"] .parcel[data-status="stored"]`)))
		if got := run(t, locker, chromedp.Text(chromedp.CSS(`#door-7 .parcel`))); got != "Parcel inside" {
			t.Errorf("door 7: got %q; want %q", got, "Parcel inside")
		}
		pollText(t, locker, "last-event", contract.EventStored)
		if st := statusOf(t, g, res.id); st != contract.StatusStored {
			t.Fatalf("reservation %s is %q; want %q", res.id, st, contract.StatusStored)
		}
	})

	t.Run("pickup code, then the kiosk resets itself", func(t *testing.T) {
		do(t, kiosk, chromedp.Navigate(quick+"/kiosk"), chromedp.WaitVisible(chromedp.ID("keypad")),
			chromedp.KeyEvent(res.pickup), chromedp.KeyEvent("\r"))
		// The door opens only after the kiosk's answer, so once it is open the
		// answer came; a kiosk that reset itself shows the empty keypad again.
		do(t, locker, chromedp.WaitVisible(chromedp.CSS(`button#door-7[data-state="open"]`)))
		poll(t, kiosk, `document.getElementById('result').hidden && document.getElementById('code').dataset.empty === 'true'`)
		do(t, locker, chromedp.Click(chromedp.CSS(`button#door-7`)),
			chromedp.WaitVisible(chromedp.CSS(`#door-7[data-state="closed"] .parcel[data-status="none"]`)))
		if st := statusOf(t, g, res.id); st != contract.StatusDelivered {
			t.Fatalf("reservation %s is %q; want %q", res.id, st, contract.StatusDelivered)
		}
	})

	t.Run("a wrong code is refused", func(t *testing.T) {
		do(t, kiosk, chromedp.Navigate(site+"/kiosk"), chromedp.WaitVisible(chromedp.ID("keypad")),
			chromedp.KeyEvent("0000"), chromedp.KeyEvent("\r"),
			chromedp.WaitVisible(chromedp.CSS(`#result[data-result="invalid_code"]`)))
		if got, want := run(t, kiosk, chromedp.Text(chromedp.ID("result-text"))), "This code is not valid"; got != want {
			t.Errorf("kiosk: got %q; want %q", got, want)
		}
		screenshot(t, kiosk, shots, "kiosk-invalid")
		do(t, kiosk, chromedp.Click(chromedp.ID("result-ok")), chromedp.WaitNotVisible(chromedp.ID("result")))
	})

	t.Run("a lockout counts down", func(t *testing.T) {
		do(t, kiosk, chromedp.KeyEvent("1111"), chromedp.KeyEvent("\r"),
			chromedp.WaitVisible(chromedp.CSS(`#result[data-result="locked_out"] #countdown`)))
		text := run(t, kiosk, chromedp.Text(chromedp.ID("result-text")))
		if !strings.HasPrefix(text, "Too many attempts, try again in ") || !strings.HasSuffix(text, " s") {
			t.Errorf("kiosk: got %q; want %q", text, "Too many attempts, try again in 60 s")
		}
		screenshot(t, kiosk, shots, "kiosk-lockout")
		first := run(t, kiosk, chromedp.Evaluate[int](`Number(document.getElementById('countdown').textContent)`))
		if first < 1 || first > 60 {
			t.Fatalf("countdown %d; want 1..60", first)
		}
		poll(t, kiosk, fmt.Sprintf(`Number(document.getElementById('countdown').textContent) < %d`, first))
		if !run(t, kiosk, chromedp.Evaluate[bool](`[...document.querySelectorAll('#keypad button')].every(b => b.disabled)`)) {
			t.Errorf("the keypad works during a lockout")
		}
		pollText(t, locker, "last-event", contract.EventLockout)
	})

	t.Run("test helper removes the test data", func(t *testing.T) {
		do(t, locker,
			chromedp.SetValue(chromedp.ID("test-door"), "3"),
			chromedp.Click(chromedp.ID("create-reservation")),
			chromedp.WaitVisible(chromedp.CSS(`#codes-dialog[open]`)),
			chromedp.Click(chromedp.ID("codes-close")),
			chromedp.WaitVisible(chromedp.CSS(`#door-3 .parcel[data-status="arriving"]`)),
			chromedp.Click(chromedp.ID("cleanup")),
			chromedp.WaitVisible(chromedp.CSS(`#door-3 .parcel[data-status="none"]`)))
		pollText(t, locker, "tool-result", "Removed 2 test reservations.")
		all, err := g.Store().Reservations()
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 0 {
			t.Errorf("%d reservations left after the clean-up; want 0: %+v", len(all), all)
		}
	})

	t.Run("outside dev mode, with a bridge", func(t *testing.T) {
		prod := serve(t, g, cfg, time.Hour, func(c *web.Config) {
			c.Dev = false
			c.BridgeUp = func() bool { return false }
		})
		do(t, kiosk, chromedp.Navigate(prod+"/kiosk"), chromedp.WaitVisible(chromedp.ID("keypad")))
		if n := run(t, kiosk, chromedp.Evaluate[int](`document.querySelectorAll('a[href="/"]').length`)); n != 0 {
			t.Errorf("%d links from the kiosk to the locker page outside dev mode; want none", n)
		}
		do(t, kiosk, chromedp.Navigate(prod+"/"),
			chromedp.WaitVisible(chromedp.CSS(`#link[data-state="live"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#outbox[data-bridge="down"]`)))
		if got := run(t, kiosk, chromedp.Text(chromedp.ID("outbox"))); strings.Trim(got, "0123456789") != "" || got == "" {
			t.Errorf("outbox with a bridge: got %q; want the count alone", got)
		}
		screenshot(t, kiosk, shots, "locker-prod")
	})
}

// TestJammedDoorShowsAFault: a simulated door told to jam ignores its open
// command and reports nothing, as a jammed lock may; its retained state still
// says closed. The code typed on the kiosk is answered door_fault, and the
// locker page shows the door's tile at fault with the controller's reason,
// until the door, no longer jammed, opens on the same code.
func TestJammedDoorShowsAFault(t *testing.T) {
	exe := chromium(t)
	cfg := testConfig(t)
	cfg.DoorTimeout = time.Second // how long the controller waits for the jammed door
	g := startGateway(t, cfg)
	site := serve(t, g, cfg, time.Hour)
	browser := newBrowser(t, exe)
	locker, kiosk := newTab(t, browser), newTab(t, browser)

	status, body := post(t, site+"/api/test/reservations", `{"door":5}`)
	var res web.TestReservation
	if err := json.Unmarshal([]byte(body), &res); status != 201 || err != nil {
		t.Fatalf("test reservation: got %d %q; want 201 with its codes", status, body)
	}
	g.SimDoor(t, 5, "jam")
	do(t, locker, chromedp.Navigate(site+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#link[data-state="live"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#door-5[data-state="closed"] .parcel[data-status="arriving"]`)))

	do(t, kiosk, chromedp.Navigate(site+"/kiosk"), chromedp.WaitVisible(chromedp.ID("keypad")),
		chromedp.KeyEvent(res.DepositCode), chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(chromedp.CSS(`#result[data-result="door_fault"]`)))
	do(t, locker, chromedp.WaitVisible(chromedp.CSS(`div#door-5[data-state="fault"] .tile-reason`)))
	if got, want := run(t, locker, chromedp.Text(chromedp.CSS(`#door-5 .tile-reason`))), "door 5 did not report open within 1s"; got != want {
		t.Errorf("door 5's reason: got %q; want %q", got, want)
	}
	if got := run(t, locker, chromedp.Text(chromedp.CSS(`#door-5 .state`))); !strings.HasSuffix(got, "Fault") {
		t.Errorf("door 5's state: got %q; want %q", got, "Fault")
	}
	if got := run(t, locker, chromedp.Evaluate[string](`getComputedStyle(document.getElementById('door-5')).borderTopColor`)); got != "rgb(179, 38, 30)" {
		t.Errorf("door 5's frame is %s; want the alarm's red rgb(179, 38, 30)", got)
	}
	pollText(t, locker, "announce", "Door 5 has a fault: door 5 did not report open within 1s.")
	screenshot(t, locker, screenshotDir(t), "locker-fault")

	// The code is still valid; the door, no longer jammed, opens on it, and
	// the fault is gone.
	g.SimDoor(t, 5, "unjam")
	do(t, kiosk, chromedp.Click(chromedp.ID("result-ok")), chromedp.WaitNotVisible(chromedp.ID("result")),
		chromedp.KeyEvent(res.DepositCode), chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(chromedp.CSS(`#result[data-result="opened"]`)))
	do(t, locker, chromedp.WaitVisible(chromedp.CSS(`button#door-5[data-state="open"]`)))
	if n := run(t, locker, chromedp.Evaluate[int](`document.querySelectorAll('#door-5 .tile-reason').length`)); n != 0 {
		t.Errorf("door 5 opened and still shows %d fault reasons; want none", n)
	}
	do(t, locker, chromedp.Click(chromedp.CSS(`button#door-5`)),
		chromedp.WaitVisible(chromedp.CSS(`#door-5[data-state="closed"] .parcel[data-status="stored"]`)))
}

// TestKioskResetLeavesNoFocusBehind: an answer gives its OK button the
// focus. When the kiosk resets, by that button or by the next code's first
// digit, the hidden button must not keep the focus, or the Enter of the next
// code clicks it: the kiosk resets again and the code is lost (it looked
// like a lockout answered invalid_code). The focus is checked in the page's
// own task, before the browser could move it by rendering.
func TestKioskResetLeavesNoFocusBehind(t *testing.T) {
	exe := chromium(t)
	var mu sync.Mutex
	var codes []string
	_, srv := newSite(t, web.Config{ResetAfter: time.Hour, Submit: func(_ context.Context, code string) (contract.Display, error) {
		mu.Lock()
		defer mu.Unlock()
		codes = append(codes, code)
		return contract.Display{Result: contract.ResultInvalidCode, Message: "This code is not valid"}, nil
	}})
	t.Cleanup(func() { // which code a failure stopped at
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("codes the locker received: %q", codes)
		}
	})
	tab := newTab(t, newBrowser(t, exe))
	answered := chromedp.WaitVisible(chromedp.CSS(`#result[data-result="invalid_code"]`))
	do(t, tab, chromedp.Navigate(srv.URL+"/kiosk"), chromedp.WaitVisible(chromedp.ID("keypad")),
		chromedp.KeyEvent("0000"), chromedp.KeyEvent("\r"), answered)
	for _, dismiss := range []struct{ how, js, next string }{
		{"the answer's OK", `document.getElementById('result-ok').click()`, "1111"},
		{"the next code's first digit", `document.dispatchEvent(new KeyboardEvent('keydown', {key: '2', bubbles: true}))`, "222"},
	} {
		if id := run(t, tab, chromedp.Evaluate[string](`document.activeElement.id`)); id != "result-ok" {
			t.Fatalf("the focus is on %q with the answer shown; want result-ok", id)
		}
		left := run(t, tab, chromedp.Evaluate[bool](`(() => { `+dismiss.js+`;
			const r = document.getElementById('result');
			return r.hidden && !r.contains(document.activeElement); })()`))
		if !left {
			t.Errorf("reset by %s: the hidden answer keeps the focus", dismiss.how)
		}
		do(t, tab, chromedp.WaitNotVisible(chromedp.ID("result")),
			chromedp.KeyEvent(dismiss.next), chromedp.KeyEvent("\r"), answered)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"0000", "1111", "2222"}; !slices.Equal(codes, want) {
		t.Errorf("codes entered %q; want %q", codes, want)
	}
}

// chromium returns the browser to drive, or fails the test: the page tests
// are part of the suite, not optional.
func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatalf("the page tests need headless Chromium at %s and it is missing: install it with `apt-get install -y chromium`", chromiumPath)
	return ""
}

// serve serves the pages of g on their own HTTP server, as the gateway will;
// each of change, if any, alters their configuration first.
func serve(t *testing.T, g *testGateway, cfg gateway.Config, resetAfter time.Duration, change ...func(*web.Config)) string {
	t.Helper()
	wc := web.Config{
		Store: g.PageStore(), Broker: g.Broker(), Submit: g.Screen().Submit,
		CloseDoor: g.Sim().Close, Clients: g.Broker().Clients,
		LockerID: cfg.LockerID, Version: gateway.Version, Started: g.Started(), Dev: cfg.Dev,
		SubmitTimeout: cfg.DoorTimeout + 2*time.Second, ResetAfter: resetAfter,
		Logger: testLogger(t),
	}
	for _, c := range change {
		c(&wc)
	}
	w, err := web.New(wc)
	if err != nil {
		t.Fatalf("web.New: %v", err)
	}
	if err := w.Start(t.Context()); err != nil {
		t.Fatalf("web.Start: %v", err)
	}
	srv := httptest.NewServer(w.Handler())
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("web.Close: %v", err)
		}
		srv.Close()
	})
	return srv.URL
}

// newBrowser starts headless Chromium with a fresh profile until the test ends.
func newBrowser(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// Two pages are open at once; neither may be slowed down for being
		// in the background.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() { cancel(); acancel() })
	// Start the browser with a context without a timeout: the first Run ties
	// the browser's life to its context.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("cannot start %s: %v", exe, err)
	}
	return ctx
}

// newTab opens a window of the browser, 800×480 like the locker's screen, and
// fails the test on any uncaught exception of its pages.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewWindow(true))
	var mu sync.Mutex
	var exceptions []string
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, e := range exceptions {
			t.Errorf("the page threw: %s", e)
		}
	})
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(800, 480)); err != nil {
		t.Fatalf("cannot open a tab: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.IsException() {
				mu.Lock()
				exceptions = append(exceptions, fmt.Sprintf("%s:%d %s", m.URL, m.Line+1, m.Text))
				mu.Unlock()
			}
		}
	}()
	return ctx
}

// do runs actions in a tab, within waitLimit.
func do(t *testing.T, tab context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, waitLimit)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("browser: %v%s", err, pageDump(tab))
	}
}

// run runs one action that returns a value in a tab, within waitLimit.
func run[T any](t *testing.T, tab context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, waitLimit)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v%s", err, pageDump(tab))
	}
	return v
}

// poll waits until a JavaScript expression is true in the page.
func poll(t *testing.T, tab context.Context, expr string) {
	t.Helper()
	do(t, tab, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond),
			chromedp.WithPollingTimeout(waitLimit))(ctx, tg)
		return err
	}))
}

// pollText waits until the element with id contains text.
func pollText(t *testing.T, tab context.Context, id, text string) {
	t.Helper()
	poll(t, tab, fmt.Sprintf(`(document.getElementById(%q).textContent || '').includes(%q)`, id, text))
}

// pageDump describes the page for a failure message.
func pageDump(tab context.Context) string {
	ctx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	if err != nil {
		return ""
	}
	return "\npage:\n" + text
}

// screenshotDir is $LOCKY_SCREENSHOTS, or a temporary directory.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("LOCKY_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("LOCKY_SCREENSHOTS: %v", err)
	}
	return dir
}

// screenshot saves the page at the locker's 800×480 and at 1280×800, and
// leaves the tab at 800×480.
func screenshot(t *testing.T, tab context.Context, dir, name string) {
	t.Helper()
	for _, size := range [][2]int64{{1280, 800}, {800, 480}} {
		do(t, tab, chromedp.EmulateViewport(size[0], size[1]))
		png := run(t, tab, chromedp.CaptureScreenshot())
		path := filepath.Join(dir, fmt.Sprintf("%s-%dx%d.png", name, size[0], size[1]))
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		t.Logf("screenshot %s", path)
	}
}

// statusOf returns a reservation's status in the store.
func statusOf(t *testing.T, g *testGateway, id string) string {
	t.Helper()
	r, err := g.Store().Reservation(id)
	if err != nil {
		t.Fatalf("reservation %s: %v", id, err)
	}
	if r == nil {
		t.Fatalf("reservation %s: not in the store", id)
	}
	return r.Status
}
