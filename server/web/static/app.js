// fieldlink console: what every page shares (API calls with the CSRF token, dialogs, notices).
"use strict";

const fl = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // A FastAPI/fieldlink error body as one readable line.
  function describe(data) {
    if (data === null || data === undefined) return "no answer";
    const detail = typeof data === "object" && "detail" in data ? data.detail : data;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((p) => {
          const where = p.line ? `line ${p.line}` : "";
          const field = p.field || (Array.isArray(p.loc) ? p.loc.filter((x) => x !== "body").join(".") : "");
          return [where, field].filter(Boolean).join(", ") + (where || field ? ": " : "") + (p.msg || p.message || "");
        })
        .join("; ");
    }
    return JSON.stringify(detail);
  }

  // Calls the API as the logged-in user: the cookie goes by itself, the CSRF token in a header.
  async function api(method, path, body, extraHeaders = {}) {
    const headers = { Accept: "application/json", "X-CSRF-Token": csrf(), ...extraHeaders };
    let payload;
    if (body instanceof FormData) {
      payload = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const answer = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
    if (answer.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new ApiError(401, "logged out");
    }
    const text = await answer.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!answer.ok) throw new ApiError(answer.status, describe(data));
    return data;
  }

  function esc(value) {
    return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  let toastTimer;
  function toast(message, kind = "info") {
    const box = document.getElementById("toast");
    if (!box) return;
    box.textContent = message;
    box.className = `toast show ${kind}`;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (box.className = "toast"), 6000);
  }

  // Shows a form's error line (the <p class="error"> inside it).
  function formError(form, message) {
    const line = form.querySelector(".error");
    if (!line) return toast(message, "error");
    line.textContent = message || "";
    line.hidden = !message;
  }

  // Times: in the viewer's time zone (the browser's), the UTC time on hover.
  const localFormat = new Intl.DateTimeFormat("en-CA", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    hourCycle: "h23", timeZoneName: "short",
  });
  function localText(d) {
    const part = Object.fromEntries(localFormat.formatToParts(d).map((p) => [p.type, p.value]));
    return `${part.year}-${part.month}-${part.day} ${part.hour}:${part.minute} ${part.timeZoneName || ""}`.trim();
  }
  function utcText(d) {
    return d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }
  function when(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? iso : localText(d);
  }
  // Shows a <time> element's moment in local time, UTC in its title (iso: a new moment).
  function showTime(element, iso) {
    if (iso !== undefined) element.setAttribute("datetime", iso || "");
    const d = new Date(element.getAttribute("datetime") || "");
    if (!element.getAttribute("datetime") || isNaN(d)) {
      if (iso !== undefined) element.textContent = "—";
      element.removeAttribute("title");
      return;
    }
    const text = localText(d);
    if (element.textContent !== text) element.textContent = text;
    element.title = utcText(d);
    element.dataset.local = "yes";
  }
  function localizeTimes(root) {
    for (const t of root.querySelectorAll("time[datetime]")) if (t.dataset.local !== "yes") showTime(t);
  }
  localizeTimes(document);
  // Rows the pages refresh (fleet, health, results) bring new <time> elements.
  new MutationObserver((changes) => {
    for (const change of changes) {
      for (const node of change.addedNodes) {
        if (node.nodeType !== 1) continue;
        if (node.matches("time[datetime]") && node.dataset.local !== "yes") showTime(node);
        else localizeTimes(node);
      }
    }
  }).observe(document.body, { childList: true, subtree: true });

  // Dialogs: [data-open=ID] opens one, [data-close] inside closes it.
  document.addEventListener("click", (event) => {
    const opener = event.target.closest("[data-open]");
    if (opener) {
      const dialog = document.getElementById(opener.dataset.open);
      if (dialog) {
        formError(dialog.querySelector("form") || dialog, "");
        dialog.showModal();
      }
    }
    const closer = event.target.closest("[data-close]");
    if (closer) closer.closest("dialog")?.close();
    const copy = event.target.closest("[data-copy]");
    if (copy) {
      const text = copy.dataset.copy;
      (navigator.clipboard ? navigator.clipboard.writeText(text) : Promise.reject())
        .then(() => toast("Copied: " + text))
        .catch(() => toast("Select and copy: " + text));
    }
  });


  // Similar past cases (issue 14): every [data-similar-incident=ID] gets one line, as
  // "12 past cases of SC-541 on this model: 75 % fixed remotely, median 1.2 h; top fixes: ...".
  function hours(value) {
    return value === null || value === undefined ? null : `${value < 10 ? value.toFixed(1) : Math.round(value)} h`;
  }
  function similarText(s) {
    if (!s.count) return `No closed case of ${s.error_code} yet.`;
    const where = s.scope === "model" ? "on this model" : "on any model";
    const parts = [`${s.count} past case${s.count === 1 ? "" : "s"} of ${s.error_code} ${where}: ${Math.round(s.remote_share * 100)} % fixed remotely`];
    const remote = hours(s.median_ttr_remote_hours);
    const dispatch = hours(s.median_ttr_dispatch_hours);
    if (remote) parts.push(`median ${remote}`);
    if (dispatch) parts.push(`dispatch median ${dispatch}`);
    let text = parts.join(", ");
    if (s.fixes.length) text += "; top fixes: " + s.fixes.slice(0, 3).map((f) => `${f.note} (${f.count}×)`).join("; ");
    return text;
  }
  async function loadSimilar(element) {
    try {
      const similar = await api("GET", `/api/v1/incidents/${encodeURIComponent(element.dataset.similarIncident)}/similar`);
      element.textContent = similarText(similar);
      element.hidden = false;
    } catch {
      element.hidden = true;
    }
  }
  for (const element of document.querySelectorAll("[data-similar-incident]")) loadSimilar(element);

  // One click closes an incident whose fault cleared: [data-quick-close=ID][data-resolution=R]
  // (restored_at is the time the fault cleared, proposed by the server).
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-quick-close]");
    if (!button) return;
    button.disabled = true;
    try {
      const incident = await api("POST", `/api/v1/incidents/${encodeURIComponent(button.dataset.quickClose)}/close`, { resolution: button.dataset.resolution });
      toast(`Incident #${incident.id} closed (${incident.resolution.replace("_", " ")}).`);
      setTimeout(() => location.reload(), 800);
    } catch (error) {
      button.disabled = false;
      toast(error.message, "error");
    }
  });

  // A device's state badges, as the pages render them (server/web/templating.py device_badges):
  // revoked / online / offline and why; health, green only while online; a skewed clock.
  const OFFLINE_REASONS = {
    shutdown: "shut down",
    connection_lost: "connection lost",
    unreachable: "unreachable from its gateway",
    silent: "silent (no report)",
    gateway_offline: "its gateway is offline",
    revoked: "revoked",
  };
  function skew(seconds) {
    const size = Math.abs(seconds);
    let amount;
    if (size < 120) amount = `${Math.round(size)} s`;
    else if (size < 7200) amount = `${Math.round(size / 60)} min`;
    else {
      const total = Math.round(size / 60);
      const h = Math.floor(total / 60);
      const m = total % 60;
      amount = m ? `${h} h ${m} min` : `${h} h`;
    }
    return `${amount} ${seconds > 0 ? "ahead" : "behind"}`;
  }
  function deviceBadgeList(d) {
    const list = [];
    if (d.revoked_at) list.push({ cls: "revoked", text: "revoked", title: "Certificate revoked" });
    else if (d.online) list.push({ cls: "online", text: "online", title: "Connected", online: "true" });
    else {
      const why = OFFLINE_REASONS[d.online_reason || ""] || (d.last_seen ? "" : "never connected");
      list.push({ cls: "offline", text: why ? `offline · ${why}` : "offline", title: d.online_reason || "", online: "false" });
    }
    if (!d.status) list.push({ cls: "unknown", text: "no data", title: "No health report yet" });
    else if (d.online && !d.revoked_at) list.push({ cls: `health-${d.status}`, text: d.status, title: "Latest health" });
    else list.push({ cls: "stale", text: `last: ${d.status}`, title: "Its last report, not current" });
    if (d.clock_skewed && typeof d.clock_offset_s === "number") {
      list.push({ cls: "skew", text: `clock ${skew(d.clock_offset_s)}`, title: `${d.clock_offset_s > 0 ? "+" : ""}${Math.round(d.clock_offset_s)} s` });
    }
    return list;
  }
  function deviceBadges(d) {
    return deviceBadgeList(d)
      .map((b) => `<span class="badge ${esc(b.cls)}"${b.online ? ` data-online="${b.online}"` : ""}${b.title ? ` title="${esc(b.title)}"` : ""}>${esc(b.text)}</span>`)
      .join(" ");
  }

  return { api, ApiError, describe, esc, toast, formError, when, csrf, similarText, deviceBadges, showTime };
})();
