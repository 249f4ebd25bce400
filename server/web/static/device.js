// A device: live health, history charts from hourly rollups, opening a session or an incident.
"use strict";

(() => {
  const root = document.getElementById("device");
  const deviceId = root.dataset.device;
  const base = "/api/v1/devices/" + encodeURIComponent(deviceId);

  async function refresh() {
    if (document.hidden) return;
    try {
      const d = await fl.api("GET", base);
      const head = document.getElementById("device-badges");
      const seen = head.querySelector("span.small");
      head.innerHTML = fl.deviceBadges(d) + " ";
      head.appendChild(seen);
      fl.showTime(document.getElementById("last-seen"), d.last_seen);
      fl.showTime(document.getElementById("health-ts"), d.health_ts);
      // The rows as the server words them (labels, units, bars; server/web/readings.py).
      const rows = await fetch(`/devices/${encodeURIComponent(deviceId)}/health`, { credentials: "same-origin" });
      if (rows.ok && !rows.redirected) document.getElementById("metrics").innerHTML = await rows.text();
    } catch {
      // Next round.
    }
  }
  setInterval(refresh, 5000);

  // History: one chart per metric. A short range (1 h) shows every raw sample; longer ones the
  // hourly rollups of the hours before this one plus this hour's raw samples, so a device's
  // first hour (no finished rollup yet) has points too, and a month is never fetched raw.
  const RAW_HOURS = 1;
  let hours = 24;
  async function series(metric, resolution, since, until) {
    const query = new URLSearchParams({ metric, resolution, since: since.toISOString(), until: until.toISOString(), limit: "10000" });
    const answer = await fl.api("GET", `${base}/telemetry?${query}`);
    return answer.points.map((p) =>
      resolution === "raw" ? { ts: p.ts, avg: p.value, min: p.value, max: p.value, raw: true } : p,
    );
  }
  async function history(metric, since, until) {
    if (hours <= RAW_HOURS) return series(metric, "raw", since, until);
    const thisHour = new Date(until);
    thisHour.setUTCMinutes(0, 0, 0);
    const [rollups, recent] = await Promise.all([
      series(metric, "hour", since, thisHour),
      series(metric, "raw", thisHour > since ? thisHour : since, until),
    ]);
    return rollups.concat(recent);
  }
  // The readings in the page's language (its decimal sign and grouping).
  const figures = new Intl.NumberFormat(fl.lang, { maximumFractionDigits: 2 });
  const value = (u, v) => (v == null ? "—" : figures.format(v));
  async function drawCharts() {
    const until = new Date();
    const since = new Date(until.getTime() - hours * 3600 * 1000);
    for (const figure of document.querySelectorAll("#charts .chart")) {
      const metric = figure.dataset.metric;
      let points = [];
      try {
        points = await history(metric, since, until);
      } catch (error) {
        fl.toast(error.message, "error");
      }
      figure.dataset.raw = String(points.filter((p) => p.raw).length);
      const plot = figure.querySelector(".plot");
      figure.querySelector(".empty").hidden = points.length > 0;
      figure.dataset.points = String(points.length);
      if (!points.length) {
        plot.textContent = "";
        continue;
      }
      const xs = points.map((p) => Date.parse(p.ts) / 1000);
      flCharts.draw(
        plot,
        [xs, points.map((p) => p.avg), points.map((p) => p.min), points.map((p) => p.max)],
        [
          { label: fl.t("mean"), stroke: "#1f5fbf", width: 2, value },
          { label: fl.t("min"), stroke: "#9db6dd", width: 1, dash: [4, 4], value },
          { label: fl.t("max"), stroke: "#9db6dd", width: 1, dash: [4, 4], value },
        ],
        { yValues: (u, values) => values.map((v) => (v == null ? "" : figures.format(v))) },
      );
    }
  }
  for (const button of document.querySelectorAll("[data-range]")) {
    button.addEventListener("click", () => {
      hours = Number(button.dataset.range);
      for (const b of document.querySelectorAll("[data-range]")) b.setAttribute("aria-pressed", String(b === button));
      drawCharts();
    });
  }
  drawCharts();

  document.getElementById("session-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const data = new FormData(form);
    const body = { reason: data.get("reason").trim() };
    if (data.get("incident_id")) body.incident_id = Number(data.get("incident_id"));
    const services = data.get("services").split(",").map((s) => s.trim()).filter(Boolean);
    if (services.length) body.services = services;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const session = await fl.api("POST", `${base}/sessions`, body, { "X-Fieldlink-Origin": "console" });
      location.href = "/sessions/" + encodeURIComponent(session.id);
    } catch (error) {
      fl.formError(form, error.message);
      button.disabled = false;
    }
  });

  // Opening a session by keyboard: "s" on the page, or ?open=session (Shift+Enter on the desk).
  function openSessionDialog() {
    const opener = document.querySelector('[data-open="session-dialog"]');
    if (opener && !opener.disabled) opener.click();
  }
  document.addEventListener("keydown", (event) => {
    if (event.key !== "s" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select, [contenteditable=true], dialog")) return;
    event.preventDefault();
    openSessionDialog();
  });
  if (new URLSearchParams(location.search).get("open") === "session") openSessionDialog();

  // The incident form's "answered at" starts at now: the operator is on the call.
  document.querySelector('[data-open="incident-dialog"]')?.addEventListener("click", () => {
    const d = new Date();
    d.setSeconds(0, 0);
    d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
    document.getElementById("i-answered").value = d.toISOString().slice(0, 16);
  });

  document.getElementById("incident-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const data = new FormData(form);
    const body = { device_id: deviceId, opened_at: new Date().toISOString(), channel: data.get("channel"), symptom: data.get("symptom").trim() };
    if (data.get("error_code").trim()) body.error_code = data.get("error_code").trim();
    for (const name of ["answered_at", "down_at"]) {
      if (data.get(name)) body[name] = new Date(data.get(name)).toISOString();
    }
    // A call answered before the form was sent came in by then at the latest.
    if (body.answered_at && body.answered_at < body.opened_at) body.opened_at = body.answered_at;
    try {
      const incident = await fl.api("POST", "/api/v1/incidents", body);
      fl.toast(fl.t("Incident #{id} opened.", { id: incident.id }));
      location.reload();
    } catch (error) {
      fl.formError(form, error.message);
    }
  });
})();
