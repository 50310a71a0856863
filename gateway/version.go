package gateway

import "runtime/debug"

// Build returns the version and commit of this binary: the -ldflags stamps
// when set, else what the Go toolchain recorded (the module version of a
// `go install …@v1.2.3`, the VCS revision of a build in a checkout, marked
// -dirty when the tree had uncommitted changes).
func Build() (version, commit string) {
	version, commit = Version, Commit
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version, commit
	}
	if version == "dev" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		version = info.Main.Version
	}
	if commit == "unknown" {
		var rev, dirty string
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision":
				rev = s.Value
			case s.Key == "vcs.modified" && s.Value == "true":
				dirty = "-dirty"
			}
		}
		if rev != "" {
			commit = rev + dirty
		}
	}
	return version, commit
}
