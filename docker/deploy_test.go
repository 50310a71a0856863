// Package docker holds the deployment files (images, compose, systemd, the
// example configuration); its tests keep them in step with the code.
//
// Its place in the layering: beside the code, not in it; its tests build and
// run the programs of gateway/cmd as a deployment would.
package docker

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/locky-edge/locky/gateway"
)

func TestExampleConfigIsValidAndDocumentsEveryOption(t *testing.T) {
	if _, _, err := gateway.ParseArgs([]string{"--config", "locky.example.conf", "--check-config"},
		func(string) string { return "" }, os.Stderr); err != nil {
		t.Fatalf("locky.example.conf does not pass --check-config: %v", err)
	}
	f, err := os.Open("locky.example.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	documented := map[string]bool{}
	line := regexp.MustCompile(`^#?\s*([a-z0-9-]+)\s*=`)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := line.FindStringSubmatch(sc.Text()); m != nil {
			documented[m[1]] = true
		}
	}
	for _, name := range gateway.OptionNames() {
		if !documented[name] {
			t.Errorf("option %q is missing from locky.example.conf", name)
		}
	}
}

// compose reads a compose file through a real YAML parser (Debian's python3
// with python3-yaml, which CI installs).
func compose(t *testing.T, path string) map[string]any {
	t.Helper()
	out, err := exec.Command("/usr/bin/python3", "-c", // Debian's, with python3-yaml
		"import json,sys,yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))", path).CombinedOutput()
	if err != nil {
		t.Fatalf("%s is not valid YAML (or python3-yaml is missing): %v\n%s", path, err, out)
	}
	var doc map[string]any
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestComposeFilesMountFilesThatExistAndSetRealOptions(t *testing.T) {
	options := gateway.OptionNames()
	for _, file := range []string{"compose.yaml", "compose.fleet.yaml"} {
		services, _ := compose(t, file)["services"].(map[string]any)
		if len(services) == 0 {
			t.Fatalf("%s has no services", file)
		}
		for name, v := range services {
			svc, _ := v.(map[string]any)
			vols, _ := svc["volumes"].([]any)
			for _, vol := range vols {
				src, _, _ := strings.Cut(vol.(string), ":")
				if !strings.HasPrefix(src, ".") {
					continue // a named volume
				}
				if _, err := os.Stat(src); err != nil {
					t.Errorf("%s: service %s mounts %s, which does not exist", file, name, src)
				}
			}
			if b, ok := svc["build"].(map[string]any); ok {
				df := filepath.Join(b["context"].(string), b["dockerfile"].(string))
				if _, err := os.Stat(df); err != nil {
					t.Errorf("%s: service %s builds with %s, which does not exist", file, name, df)
				}
			}
			env, _ := svc["environment"].(map[string]any)
			for k := range env {
				opt, ok := strings.CutPrefix(k, "LOCKY_")
				if !ok {
					continue
				}
				opt = strings.ToLower(strings.ReplaceAll(opt, "_", "-"))
				if !slices.Contains(options, opt) {
					t.Errorf("%s: service %s sets %s, but the gateway has no option --%s", file, name, k, opt)
				}
			}
		}
	}
}

func TestDockerfileBuildsThePrograms(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\./gateway/cmd/[a-z-]+`).FindAllString(string(raw), -1) {
		if _, err := os.Stat(filepath.Join("..", m)); err != nil {
			t.Errorf("Dockerfile builds %s, which does not exist", m)
		}
	}
	if !strings.Contains(string(raw), "--probe") {
		t.Errorf("the image's HEALTHCHECK does not use --probe")
	}
}
