"use strict";
// A campaign's page: facts, spend against the even plan slot by slot, delivery, diagnosis; stop/resume for
// the write role (the server checks the role and the CSRF token again). Refreshes every 5 s.
(() => {
  const { api, me, post, fmt, el, setText, paceClass } = ADP;
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const charts = {};

  function label(ms, multiDay) {
    const d = new Date(ms);
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
    return multiDay ? d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time : time;
  }

  function draw(name, config) {
    if (charts[name]) {
      charts[name].data = config.data;
      charts[name].update("none");
    } else {
      charts[name] = new Chart(document.getElementById(name), config);
    }
  }

  function bars(name, buckets, color) {
    draw(name, {
      type: "bar",
      data: { labels: buckets.map((b) => b.key), datasets: [{ label: "served", data: buckets.map((b) => b.served),
        backgroundColor: color, borderRadius: 3 }] },
      options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true } } },
    });
  }

  function fact(dl, term, value) {
    const div = el("div");
    div.append(el("dt", term), el("dd", value));
    dl.append(div);
  }

  function render(b, session) {
    const c = b.detail.campaign, m = b.detail.money, d = b.detail.delivery;
    document.title = "adplatform · " + c.campaign_id;
    setText("cid", c.campaign_id);
    setText("ctext", c.text);
    setText("cstatus", c.status);
    const pace = setText("cpacing", b.detail.pacing);
    pace.className = paceClass(b.detail.pacing);
    const dl = document.getElementById("facts");
    dl.replaceChildren();
    fact(dl, "Budget", m.budget);
    fact(dl, "Spent (live, Redis)", m.spent);
    fact(dl, "Spent (booked, ledger)", m.spent_booked);
    fact(dl, "Remaining", m.remaining);
    fact(dl, "Slot budget / spent", (m.slot_budget || "—") + " / " + (m.slot_spent || "—"));
    fact(dl, "Flight", c.flight_start.replace("T", " ").replace("Z", "") + " → " + c.flight_end.replace("T", " ").replace("Z", "") + " UTC");
    fact(dl, "Bid (cpm / cpc / cpa)", c.cpm + " / " + c.cpc + " / " + c.cpa);
    fact(dl, "Served (flight / today)", fmt.num(d.flight.served) + " / " + fmt.num(d.today.served));
    fact(dl, "Clicks · CTR", fmt.num(d.flight.clicks) + " · " + fmt.pct(d.flight.ctr, 2));
    fact(dl, "Last change", b.detail.last_change.action + " by " + (b.detail.last_change.author || "CSV") + (b.detail.last_change.pending ? " (pending)" : ""));
    const writer = session.role === "write" || session.role === "admin";
    document.getElementById("stop").hidden = !writer || c.status !== "Active";
    document.getElementById("resume").hidden = !writer || c.status === "Active";

    const first = b.pacing.length ? b.pacing[0].t : 0, last = b.pacing.length ? b.pacing[b.pacing.length - 1].t : 0;
    const multiDay = last - first > 20 * 3600 * 1000;
    setText("slot-note", "cumulative booked spend at the end of each " + (b.slot_s / 60) + "-minute slot");
    draw("pacing-chart", {
      type: "line",
      data: {
        labels: b.pacing.map((p) => label(p.t, multiDay)),
        datasets: [
          { label: "spent (booked)", data: b.pacing.map((p) => p.spent), borderColor: "#2f6fdf",
            backgroundColor: "rgba(47,111,223,.10)", fill: true, pointRadius: 0, borderWidth: 2, stepped: true },
          { label: "even plan", data: b.pacing.map((p) => p.plan), borderColor: "#9aa3b1", borderDash: [6, 4],
            pointRadius: 0, borderWidth: 1.5 },
        ],
      },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "spend" } },
                           x: { ticks: { maxTicksLimit: 12 } } },
                 plugins: { legend: { position: "top", align: "end" } } },
    });
    bars("by-city", b.by_city, "#2f6fdf");
    bars("by-device", b.by_device, "#1f8a4c");
    bars("by-age", b.by_age, "#b7791f");
    renderDiagnosis(b);
  }

  function renderDiagnosis(b) {
    const box = document.getElementById("diagnosis");
    box.replaceChildren();
    const g = b.diagnosis;
    if (!g) {
      box.className = "muted";
      box.textContent = b.diagnosis_note || "No diagnosis.";
      return;
    }
    box.className = "";
    const share = (s) => fmt.num(s.count) + " (" + fmt.pct(s.share) + ")";
    const dl = el("dl", null, "facts");
    fact(dl, "Sampled requests", fmt.num(g.samples));
    fact(dl, "Matched targeting", share(g.matched));
    fact(dl, "Won", share(g.won));
    fact(dl, "Lost", share(g.lost));
    for (const [reason, s] of Object.entries(g.lost_by_reason)) fact(dl, "Lost: " + reason.replace(/_/g, " "), share(s));
    fact(dl, "Not matched", share(g.not_matched));
    if (g.top_mismatch.attribute) {
      fact(dl, "Most rejected by", g.top_mismatch.attribute + " (campaign: " + (g.top_mismatch.campaign_value || "—") + ")");
    }
    if (g.static.length) fact(dl, "Stopped for every request by", g.static.join(", "));
    box.append(dl);
  }

  async function load() {
    const session = await me();
    try {
      render(await api("/dashboard/api/campaigns/" + encodeURIComponent(id)), session);
    } catch (error) {
      setText("cid", id);
      setText("ctext", "— " + error.message);
    }
  }

  async function act(path) {
    const error = document.getElementById("action-error");
    error.hidden = true;
    try {
      await post("/dashboard/api/campaigns/" + encodeURIComponent(id) + "/" + path);
      setTimeout(load, 1500);
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    }
  }
  document.getElementById("stop").addEventListener("click", () => act("stop"));
  document.getElementById("resume").addEventListener("click", () => act("resume"));

  load();
  setInterval(load, 5000);
})();
