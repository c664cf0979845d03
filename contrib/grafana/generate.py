#!/usr/bin/env python3
"""Writes ferrum's dashboards from one list of panels, so they never disagree:
  contrib/grafana/ferrum.json           the Grafana dashboard (import it; it asks for a Prometheus data source)
  contrib/prometheus/ferrum.html        the same panels as a Prometheus console (no Grafana needed)
Run it after changing PANELS:  python3 contrib/grafana/generate.py
"""
import json
import os
import re

# (title, unit, [(expr, legend)]). Units are Grafana's; the console formats numbers alike.
PANELS = [
    ("Heights", "none", [
        ("ferrum_daemon_height", "daemon"),
        ("ferrum_sync_height", "applied"),
        ("ferrum_db_height", "indexed"),
    ]),
    ("Indexing rate", "ops", [
        ("rate(ferrum_blocks_processed_total[1m])", "blocks/s"),
        ("rate(ferrum_transactions_processed_total[1m])", "transactions/s"),
    ]),
    ("Block apply and flush, p99", "s", [
        ("histogram_quantile(0.99, sum by (le) (rate(ferrum_block_apply_duration_seconds_bucket[5m])))", "apply a block"),
        ("histogram_quantile(0.99, sum by (le) (rate(ferrum_db_flush_duration_seconds_bucket[5m])))", "flush"),
    ]),
    ("Write cache", "bytes", [
        ("ferrum_write_cache_bytes", "held"),
        ("ferrum_write_cache_limit_bytes", "CACHE_MB"),
    ]),
    ("Requests by method", "reqps", [
        ("sum by (method) (rate(ferrum_requests_total[1m]))", "{{method}}"),
    ]),
    ("Request latency by method, p99", "s", [
        ("histogram_quantile(0.99, sum by (method, le) (rate(ferrum_request_duration_seconds_bucket[1m])))", "{{method}}"),
    ]),
    ("Errors by code", "reqps", [
        ("sum by (code) (rate(ferrum_request_errors_total[1m]))", "code {{code}}"),
    ]),
    ("Sessions", "none", [
        ("sum by (transport) (ferrum_sessions)", "{{transport}}"),
        ("ferrum_sessions_throttled", "throttled"),
    ]),
    ("Peer servers, by status", "none", [
        ("sum by (status) (ferrum_peers)", "{{status}}"),
    ]),
    ("Sessions closed, by why", "ops", [
        ("sum by (reason) (rate(ferrum_sessions_closed_total[1m]))", "{{reason}}"),
    ]),
    ("Subscriptions", "none", [
        ("sum by (kind) (ferrum_subscriptions)", "{{kind}}"),
    ]),
    ("Notifications sent", "ops", [
        ("sum by (kind) (rate(ferrum_notifications_sent_total[1m]))", "{{kind}}"),
    ]),
    ("Notification delay, p99", "s", [
        ("histogram_quantile(0.99, sum by (kind, le) (rate(ferrum_notification_delay_seconds_bucket[5m])))", "{{kind}}"),
    ]),
    ("Daemon latency by call, p99 (not the long poll)", "s", [
        ("histogram_quantile(0.99, sum by (method, le) (rate(ferrum_daemon_rpc_duration_seconds_bucket{method!=\"waitforblockheight\"}[5m])))", "{{method}}"),
    ]),
    ("Daemon errors and failovers", "ops", [
        ("sum by (kind) (rate(ferrum_daemon_rpc_errors_total[5m]))", "{{kind}}"),
        ("rate(ferrum_daemon_failovers_total[5m])", "failovers"),
    ]),
    ("Mempool", "none", [
        ("ferrum_mempool_transactions", "transactions"),
    ]),
    ("Database size", "bytes", [
        ("sum by (table) (ferrum_db_size_bytes)", "{{table}}"),
    ]),
    ("Network", "Bps", [
        ("rate(ferrum_network_received_bytes_total[1m])", "received"),
        ("rate(ferrum_network_sent_bytes_total[1m])", "sent"),
    ]),
    ("Process", "none", [
        ("rate(process_cpu_seconds_total{job=\"ferrum\"}[1m])", "CPU (cores)"),
        ("process_resident_memory_bytes{job=\"ferrum\"} / 1e9", "memory (GB)"),
    ]),
]

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def grafana_expr(expr):
    """Restricts every ferrum_/process_ selector to the chosen instance."""
    def add(m):
        name, labels = m.group(1), m.group(2)
        inner = labels[1:-1] if labels else ""
        inner = ", ".join(x for x in [inner, 'instance=~"$instance"'] if x)
        return f"{name}{{{inner}}}"
    return re.sub(r'\b((?:ferrum|process)_[a-z_]+)(\{[^}]*\})?', add, expr)


def grafana():
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10}}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [
                {"refId": chr(ord("A") + j), "expr": grafana_expr(e), "legendFormat": legend,
                 "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}}
                for j, (e, legend) in enumerate(targets)
            ],
        })
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
                       {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
                       {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""}],
        "title": "ferrum",
        "uid": "ferrum",
        "description": "ferrum Electrum server: sync, requests, sessions, notifications, the daemon (generated by contrib/grafana/generate.py)",
        "tags": ["ferrum", "electrum", "bitcoin"],
        "timezone": "browser",
        "schemaVersion": 37,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "instance", "label": "instance", "type": "query",
            "datasource": {"type": "prometheus", "uid": "${DS_PROMETHEUS}"},
            "query": {"query": "label_values(ferrum_build_info, instance)", "refId": "instance"},
            "definition": "label_values(ferrum_build_info, instance)",
            "includeAll": True, "multi": True, "refresh": 2,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        }]},
        "panels": panels,
    }


def console():
    out = ['{{/* ferrum: the dashboard of contrib/grafana/ferrum.json as a Prometheus console, generated by',
           '    contrib/grafana/generate.py. Serve it with --web.console.templates=contrib/prometheus and',
           '    --web.console.libraries=<prometheus console_libraries>, at /consoles/ferrum.html (an hour;',
           '    /consoles/ferrum.html#pctc{"duration":600,"endTime":0} shows the last 10 minutes). */}}',
           '{{ template "head" . }}',
           '{{ template "prom_content_head" . }}',
           '<h1>ferrum</h1>',
           '<style>.ferrum-grid{display:grid;grid-template-columns:1fr 1fr;gap:8px 24px}'
           ' .ferrum-grid h3{font-size:1.05rem;margin:12px 0 2px}</style>',
           '<div class="ferrum-grid">']
    for i, (title, unit, targets) in enumerate(PANELS):
        exprs = json.dumps([e for e, _ in targets])
        # A legend naming a label ("{{method}}") names each series by that label's value; the
        # console spells the placeholder [[ method ]].
        name = json.dumps([re.sub(r"\{\{(\w+)\}\}", r"[[ \1 ]]", legend) for _, legend in targets])
        fmt = "PromConsole.NumberFormatter.humanize1024" if unit == "bytes" else "PromConsole.NumberFormatter.humanizeNoSmallPrefix"
        out.append(f'<div><h3>{title}</h3><div id="g{i}"></div><script>\n'
                   f'new PromConsole.Graph({{node: document.querySelector("#g{i}"), expr: {exprs}, name: {name},\n'
                   f'  width: 560, height: 160,\n'
                   f'  yAxisFormatter: {fmt}, yHoverFormatter: {fmt}, yTitle: "{unit}"}})\n</script></div>')
    out += ['</div>', '{{ template "prom_content_tail" . }}', '{{ template "tail" }}', '']
    return "\n".join(out)


def main():
    with open(os.path.join(HERE, "ferrum.json"), "w") as f:
        json.dump(grafana(), f, indent=2)
        f.write("\n")
    os.makedirs(os.path.join(ROOT, "contrib", "prometheus"), exist_ok=True)
    with open(os.path.join(ROOT, "contrib", "prometheus", "ferrum.html"), "w") as f:
        f.write(console())


if __name__ == "__main__":
    main()
