package dashboards

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The parts of Grafana's dashboard model that the tests check.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`

	file string
}

type variable struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Datasource *datasource `json:"datasource"`
	Definition string      `json:"definition"`
	Query      struct {
		Query string `json:"query"`
	} `json:"query"`
	Multi    bool   `json:"multi"`
	AllValue string `json:"allValue"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Datasource  *datasource `json:"datasource"`
	GridPos     *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []target `json:"targets"`
	Panels  []panel  `json:"panels"` // a collapsed row's panels
}

type target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *datasource `json:"datasource"`
}

const datasourceUID = "victoriametrics"

// loadDashboards reads every dashboard of the directory.
func loadDashboards(t *testing.T) []dashboard {
	t.Helper()
	files, err := filepath.Glob("*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	var out []dashboard
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		d.file = f
		out = append(out, d)
	}
	return out
}

// queryPanels returns the panels with queries, rows flattened.
func (d dashboard) queryPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	return out
}

func TestDashboardsAreWellFormed(t *testing.T) {
	uids := map[string]string{}
	for _, d := range loadDashboards(t) {
		t.Run(d.file, func(t *testing.T) {
			if d.UID == "" || d.Title == "" {
				t.Fatalf("uid %q, title %q; want both", d.UID, d.Title)
			}
			if other, dup := uids[d.UID]; dup {
				t.Fatalf("uid %q is also %s's", d.UID, other)
			}
			uids[d.UID] = d.file
			if d.SchemaVersion < 36 {
				t.Errorf("schemaVersion %d; want at least 36", d.SchemaVersion)
			}
			if len(d.Templating.List) != 1 {
				t.Fatalf("%d template variables; want one, locker", len(d.Templating.List))
			}
			v := d.Templating.List[0]
			const lv = "label_values(locky_build_info, locker)"
			if v.Name != "locker" || v.Type != "query" || v.Query.Query != lv || v.Definition != lv ||
				v.Datasource == nil || v.Datasource.UID != datasourceUID {
				t.Errorf("variable %+v; want locker, a query %s over the datasource %s", v, lv, datasourceUID)
			}
			ids := map[int]bool{}
			var walk func([]panel)
			walk = func(ps []panel) {
				for _, p := range ps {
					if ids[p.ID] || p.ID == 0 {
						t.Errorf("panel %q: id %d is zero or not unique", p.Title, p.ID)
					}
					ids[p.ID] = true
					if g := p.GridPos; g == nil || g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 {
						t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, p.GridPos)
					}
					walk(p.Panels)
				}
			}
			walk(d.Panels)
			titles := map[string]bool{}
			for _, p := range d.queryPanels() {
				if titles[p.Title] {
					t.Errorf("two panels titled %q", p.Title)
				}
				titles[p.Title] = true
				checkPanel(t, p, v.Multi)
			}
		})
	}
}

var lockerMatcher = map[bool]*regexp.Regexp{
	false: regexp.MustCompile(`locker="\$locker"`),
	true:  regexp.MustCompile(`locker=~"\$locker"`),
}

func checkPanel(t *testing.T, p panel, multi bool) {
	t.Helper()
	if p.Title == "" || p.Description == "" {
		t.Errorf("panel %d: title %q, description %q; want both (README.md describes them too)", p.ID, p.Title, p.Description)
	}
	if p.Datasource == nil || p.Datasource.UID != datasourceUID || p.Datasource.Type != "prometheus" {
		t.Errorf("panel %q: datasource %+v; want prometheus %s", p.Title, p.Datasource, datasourceUID)
	}
	if len(p.Targets) == 0 {
		t.Errorf("panel %q: no query", p.Title)
	}
	refs := map[string]bool{}
	for _, tg := range p.Targets {
		if tg.RefID == "" || refs[tg.RefID] {
			t.Errorf("panel %q: refId %q empty or not unique", p.Title, tg.RefID)
		}
		refs[tg.RefID] = true
		if tg.Datasource == nil || tg.Datasource.UID != datasourceUID {
			t.Errorf("panel %q %s: datasource %+v; want %s", p.Title, tg.RefID, tg.Datasource, datasourceUID)
		}
		// Every selector of the query filters by the chosen locker(s).
		want := lockerMatcher[multi]
		if n, m := strings.Count(tg.Expr, "{"), len(want.FindAllString(tg.Expr, -1)); n == 0 || n != m {
			t.Errorf("panel %q %s: %d selectors, %d filtered by %s: %s", p.Title, tg.RefID, n, m, want, tg.Expr)
		}
	}
}

// The provisioning files are mounted into Grafana as they are: check the
// fields that tie them to the dashboards and to VictoriaMetrics.
func TestProvisioningFiles(t *testing.T) {
	f := func(path string, want ...string) {
		t.Helper()
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(string(raw), w) {
				t.Errorf("%s lacks %q", path, w)
			}
		}
	}
	f("provisioning/datasources/victoriametrics.yaml", "apiVersion: 1", "type: prometheus", "uid: "+datasourceUID, "url: http://victoriametrics:8428")
	f("provisioning/dashboards/locky.yaml", "apiVersion: 1", "type: file", "path: /var/lib/grafana/dashboards")
}
