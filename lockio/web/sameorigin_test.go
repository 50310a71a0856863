package web_test

import (
	"context"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/locky-edge/locky/handlers/contract"
	"github.com/locky-edge/locky/lockio/web"
)

// TestPostsFromAnotherOriginAreRefused sends what a page of another origin
// can make a browser send to each POST of the pages, and what the pages
// themselves send.
func TestPostsFromAnotherOriginAreRefused(t *testing.T) {
	submitted := 0
	_, srv := newSite(t, web.Config{Dev: true, CloseDoor: func(int) error { return nil },
		Submit: func(context.Context, string) (contract.Display, error) {
			submitted++
			return contract.Display{Result: contract.ResultInvalidCode}, nil
		}})
	own := srv.URL // http://127.0.0.1:port
	f := func(path, contentType, origin, site, body string, want int) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		for k, v := range map[string]string{"Content-Type": contentType, "Origin": origin, "Sec-Fetch-Site": site} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST %s type %q origin %q site %q: got %d; want %d", path, contentType, origin, site, resp.StatusCode, want)
		}
	}
	const code = `{"code":"123456"}`
	for _, path := range []string{"/api/kiosk/code", "/api/doors/2/close", "/api/test/reservations", "/api/test/cleanup"} {
		f(path, "text/plain", "", "", code, 415)
		f(path, "application/x-www-form-urlencoded", "", "", "code=123456", 415)
		f(path, "multipart/form-data; boundary=x", "", "", "--x--", 415)
		f(path, "", "", "", code, 415) // a body with no type
		f(path, "application/json", "http://evil.example", "", code, 403)
		f(path, "application/json", "null", "", code, 403)
		f(path, "application/json", strings.Replace(own, "http:", "https:", 1), "", code, 403)
		f(path, "application/json", own+"0", "", code, 403) // another port
		f(path, "application/json", "", "cross-site", code, 403)
		f(path, "application/json", "", "same-site", code, 403)
		f(path, "", "http://evil.example", "cross-site", "", 403) // a bodiless fetch
	}
	if submitted != 0 {
		t.Fatalf("%d refused kiosk codes were submitted", submitted)
	}
	// What the pages send passes.
	f("/api/kiosk/code", "application/json", own, "same-origin", code, 200)
	f("/api/kiosk/code", "application/json; charset=utf-8", "", "", code, 200)
	f("/api/doors/2/close", "", "", "", "", 204) // curl -X POST
	f("/api/doors/2/close", "application/json", own, "same-origin", "", 204)
	f("/api/test/cleanup", "application/json", own, "same-origin", "", 200)
	if submitted != 2 {
		t.Errorf("%d codes submitted; want 2", submitted)
	}
}

// TestPagesPostJSON holds the pages' own fetches to what SameOrigin lets
// through: each POST says application/json.
func TestPagesPostJSON(t *testing.T) {
	f := func(name string) {
		t.Helper()
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		calls := regexp.MustCompile(`fetch\([^)]*\{[^}]*\}`).FindAllString(string(b), -1)
		if len(calls) == 0 {
			t.Errorf("%s: no fetch found", name)
		}
		for _, c := range calls {
			if strings.Contains(c, "'POST'") && !strings.Contains(c, "'Content-Type': 'application/json'") {
				t.Errorf("%s: a POST without Content-Type application/json: %s", name, c)
			}
		}
	}
	f("assets/kiosk.js")
	f("assets/locker.js")
}
