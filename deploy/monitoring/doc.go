// Package monitoring holds streamd's Grafana dashboard
// (grafana-dashboard.json) and Prometheus alert rules
// (prometheus-rules.yaml) with their promtool unit tests
// (prometheus-rules.test.yaml); see deploy/README.md, "Monitoring".
//
// Its tests check that the dashboard is a loadable Grafana dashboard
// (structure, unique panel ids, a layout within the grid, a query in every
// panel), that every metric the dashboard and the rules query is one streamd
// exports, and that every alert has a unit test that fires it. CI runs
// promtool on the rules and their tests, and on a live streamd's /metrics.
//
// The package has no Go API.
package monitoring
