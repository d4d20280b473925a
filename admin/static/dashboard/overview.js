"use strict";
// The overview: polls /dashboard/api/overview every refresh_ms (1 s) and the campaigns table every 5 s.
(() => {
  const { api, me, fmt, el, setText, paceClass } = ADP;
  const HISTORY = 120;  // points of the traffic chart (2 minutes at 1 s)
  const labels = [], requests = [], served = [];
  const chart = new Chart(document.getElementById("traffic-chart"), {
    type: "line",
    data: { labels, datasets: [
      { label: "requests/s", data: requests, borderColor: "#2f6fdf", backgroundColor: "rgba(47,111,223,.08)",
        fill: true, pointRadius: 0, borderWidth: 2, tension: 0.2 },
      { label: "served/s", data: served, borderColor: "#1f8a4c", pointRadius: 0, borderWidth: 2, tension: 0.2 },
    ] },
    options: { scales: { y: { beginAtZero: true }, x: { ticks: { maxTicksLimit: 8 } } },
               plugins: { legend: { position: "top", align: "end" } } },
  });

  // Redis's own stalls (its latency monitor): "—" when it cannot say (monitor off, a cluster).
  function stallsText(r) {
    if (r === null) return "—";
    const head = "Redis stalls ≥ " + r.threshold_ms + " ms in " + r.window_s + " s: ";
    if (r.events.length === 0) return head + "none";
    return head + r.events.map((e) => e.event + " in " + e.seconds + " s, worst " + e.worst_ms + " ms").join(" · ");
  }

  function render(o) {
    const total = document.getElementById("requests-total");
    total.textContent = fmt.num(o.requests_total);
    total.dataset.value = o.requests_total === null ? "" : String(o.requests_total);
    setText("requests-rate", fmt.rate(o.requests_per_s));
    setText("fill-rate", fmt.pct(o.fill_rate));
    setText("fill-total", fmt.pct(o.fill_rate_total));
    setText("p50", fmt.ms(o.serve_p50_ms));
    setText("p99", fmt.ms(o.serve_p99_ms));
    setText("feedback-rate", fmt.rate(o.feedback_per_s));
    setText("feedback-p50", fmt.ms(o.feedback_p50_ms));
    setText("feedback-p99", fmt.ms(o.feedback_p99_ms));
    const st = o.feedback_stages_ms;
    setText("feedback-stages", st.debit_ms === undefined ? "—"
      : "gate " + fmt.ms(st.gate_ms) + " · debit " + fmt.ms(st.debit_ms) + " · publish " + fmt.ms(st.publish_ms));
    setText("redis-stalls", stallsText(o.redis_stalls));
    setText("spend-rate", fmt.money(o.spend_per_min));
    setText("burn-ratio", fmt.pct(o.burn.ratio, 0));
    setText("burn-spent", fmt.money(o.burn.spent));
    setText("burn-planned", fmt.money(o.burn.planned));
    setText("live", fmt.num(o.campaigns.live));
    setText("blocked", fmt.num(o.campaigns.blocked));
    setText("exhausted", fmt.num(o.campaigns.exhausted));
    setText("dlq-rate", fmt.rate(o.dlq_per_s));
    setText("archive-lag", fmt.num(o.archive_lag));
    const lag = document.querySelector("#lag tbody");
    lag.replaceChildren();
    const groups = Object.keys(o.consumer_lag).sort();
    if (groups.length === 0) lag.append(rowOf([el("td", "no consumer reporting", "muted")]));
    for (const g of groups) lag.append(rowOf([el("td", g), el("td", fmt.num(o.consumer_lag[g]), "num")]));
    const up = o.targets.filter((t) => t.up).length;
    setText("targets", "metrics from " + up + " of " + o.targets.length + " targets"
      + (up < o.targets.length ? " (down: " + o.targets.filter((t) => !t.up).map((t) => t.url).join(", ") + ")" : "")
      + (o.window_s ? " · rates over " + o.window_s.toFixed(1) + " s" : ""));
    labels.push(new Date(o.at * 1000).toLocaleTimeString([], { hour12: false }));
    requests.push(o.requests_per_s);
    served.push(o.requests_per_s === null || o.fill_rate === null ? null : o.requests_per_s * o.fill_rate);
    while (labels.length > HISTORY) { labels.shift(); requests.shift(); served.shift(); }
    chart.update("none");
  }

  function rowOf(cells) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }

  const status = document.getElementById("status");
  let refreshMs = 1000;
  async function poll() {
    try {
      render(await api("/dashboard/api/overview"));
      status.textContent = "live · every " + refreshMs / 1000 + " s";
      status.className = "status ok";
    } catch (error) {
      status.textContent = "stale: " + error.message;
      status.className = "status stale";
    }
    setTimeout(poll, refreshMs);
  }

  // The campaigns table: searched by the server, sorted here.
  let rows = [], sortKey = "spent_value", sortDir = -1, query = "";
  const tbody = document.querySelector("#campaigns tbody");
  function drawTable() {
    const sorted = rows.slice().sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      if (x === y) return a.campaign_id < b.campaign_id ? -1 : 1;
      if (x === null) return 1;
      if (y === null) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    tbody.replaceChildren(...sorted.map((r) => {
      const link = el("a", r.campaign_id);
      link.href = "/dashboard/campaigns/" + encodeURIComponent(r.campaign_id);
      const id = el("td"); id.append(link, el("span", "  " + r.text, "muted small"));
      const pace = el("td"); pace.append(el("span", r.pacing, paceClass(r.pacing)));
      return rowOf([id, el("td", r.status), el("td", r.spent, "num"), el("td", r.remaining, "num"), pace,
        el("td", fmt.num(r.served), "num"), el("td", fmt.num(r.clicks), "num"), el("td", fmt.pct(r.ctr, 2), "num")]);
    }));
    for (const th of document.querySelectorAll("#campaigns th")) {
      th.className = (th.dataset.key === sortKey ? (sortDir > 0 ? "sorted-asc" : "sorted-desc") : "")
        + (th.classList.contains("num") ? " num" : "");
    }
  }
  for (const th of document.querySelectorAll("#campaigns th")) {
    th.addEventListener("click", () => {
      sortDir = th.dataset.key === sortKey ? -sortDir : (["campaign_id", "status", "pacing"].includes(th.dataset.key) ? 1 : -1);
      sortKey = th.dataset.key;
      drawTable();
    });
  }
  async function loadTable() {
    try {
      const page = await api("/dashboard/api/campaigns?q=" + encodeURIComponent(query));
      rows = page.items;
      setText("rows-note", rows.length + " campaigns" + (page.truncated ? " (first 500 by id: search to narrow)" : ""));
      drawTable();
    } catch (error) {
      setText("rows-note", "table not refreshed: " + error.message);
    }
  }
  let searchTimer = null;
  document.getElementById("search").addEventListener("input", (event) => {
    query = event.target.value.trim();
    clearTimeout(searchTimer);
    searchTimer = setTimeout(loadTable, 250);
  });

  me().then((s) => {
    refreshMs = s.refresh_ms;
    poll();
    loadTable();
    setInterval(loadTable, 5000);
  });
})();
