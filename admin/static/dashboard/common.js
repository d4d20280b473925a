"use strict";
// Shared by the dashboard's pages: JSON calls (401 sends the browser to the login form), the session
// (name, role, CSRF token), number formatting. Text from the server is set with textContent, never HTML.
const ADP = (() => {
  let session = null;

  async function api(path, options) {
    const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    if (response.status === 401) {
      location.assign("/dashboard/login");
      throw new Error("logged out");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(body.detail || ("HTTP " + response.status));
      error.status = response.status;
      throw error;
    }
    return body;
  }

  async function me() {
    if (session === null) {
      session = await api("/dashboard/api/me");
      document.getElementById("who").textContent = session.name + " (" + session.role + ")";
      document.getElementById("logout").addEventListener("click", async () => {
        await post("/dashboard/logout").catch(() => null);
        location.assign("/dashboard/login");
      });
    }
    return session;
  }

  async function post(path) {
    const s = await me();
    return api(path, { method: "POST", headers: { "X-CSRF-Token": s.csrf } });
  }

  const nf = (digits) => new Intl.NumberFormat("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  const fmt = {
    num: (v, digits = 0) => (v === null || v === undefined ? "—" : nf(digits).format(v)),
    rate: (v) => (v === null || v === undefined ? "—" : nf(v < 10 ? 2 : v < 100 ? 1 : 0).format(v)),
    pct: (v, digits = 1) => (v === null || v === undefined ? "—" : nf(digits).format(v * 100) + "%"),
    ms: (v) => (v === null || v === undefined ? "—" : nf(v < 10 ? 2 : 1).format(v) + " ms"),
    money: (v) => (v === null || v === undefined ? "—" : nf(v < 100 ? 4 : 2).format(v)),
  };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  function setText(id, text) {
    const node = document.getElementById(id);
    if (node) node.textContent = text;
    return node;
  }

  function paceClass(state) {
    return "badge pace-" + String(state).replace(/\s+/g, "-");
  }

  Chart.defaults.animation = false;  // redraws every second: no tweening, little CPU
  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif';
  Chart.defaults.color = "#6b7482";
  Chart.defaults.maintainAspectRatio = false;

  return { api, me, post, fmt, el, setText, paceClass };
})();
