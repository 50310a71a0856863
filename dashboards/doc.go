// Package dashboards holds the Grafana dashboards of the locker (locker.json)
// and of the fleet (fleet.json), and the provisioning files that load them
// into Grafana over a VictoriaMetrics datasource (see README.md).
//
// The package has no code to import. Its tests check that the dashboards are
// well formed, and that every panel's query parses and returns data from a
// real VictoriaMetrics fed by a real gateway, both scraped and pushed.
//
// Its place in the layering: beside the code, not in it; nothing imports it,
// and its tests run the gateway from the top (gateway/gatewaytest).
package dashboards
