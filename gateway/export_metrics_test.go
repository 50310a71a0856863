package gateway

// MetricHelp is the # HELP text of every locky_ family, for the tests.
var MetricHelp = metricHelp
