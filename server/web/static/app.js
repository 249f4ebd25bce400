// fieldlink console: what every page shares (API calls with the CSRF token, dialogs, notices).
"use strict";

const fl = (() => {
  // The texts this script and the page's others write, in the page's language: fl.t("Text
  // with {name}", {name: value}) and fl.tn(singular, plural, n, {n}) look them up in the
  // translations the server embeds (#fl-texts, gettext domain console_js,
  // server/web/scripttexts.py); a text not there (English) stays as written.
  const lang = document.documentElement.lang || "en";
  let catalog = {};
  try {
    catalog = JSON.parse(document.getElementById("fl-texts")?.textContent || "{}") || {};
  } catch {
    catalog = {};
  }
  const texts = catalog.texts || {};
  const pluralRules = new Intl.PluralRules(lang);
  function fill(text, params) {
    if (!params) return text;
    return text.replace(/\{([a-z_]+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
  }
  function t(text, params) {
    const found = texts[text];
    return fill(typeof found === "string" && found ? found : text, params);
  }
  function tn(singular, plural, n, params) {
    const forms = texts[singular];
    if (Array.isArray(forms) && forms.length) {
      const index = catalog.plural?.[pluralRules.select(n)] ?? catalog.plural?.other ?? forms.length - 1;
      return fill(forms[Math.min(index, forms.length - 1)] || (n === 1 ? singular : plural), params);
    }
    return fill(n === 1 ? singular : plural, params);
  }
  // Numbers and percentages the page's way (server/i18n.py: "62 %" in English, the locale's
  // own pattern in the others).
  function number(value, digits = 0) {
    return new Intl.NumberFormat(lang, { minimumFractionDigits: digits, maximumFractionDigits: digits }).format(value);
  }
  function percent(fraction, digits = 0) {
    if (lang === "en") return `${number(fraction * 100, digits)} %`;
    return new Intl.NumberFormat(lang, { style: "percent", minimumFractionDigits: digits, maximumFractionDigits: digits }).format(fraction);
  }
  // Inside this script, fl is what the others get (its texts go through fl.t, so that
  // pybabel finds them here too); the rest joins it at the end.
  const fl = { t, tn, lang, number, percent };
  // A translated text as HTML: the text escaped, its placeholders filled with the HTML given
  // (already escaped by the caller: fl.esc).
  function html(text, fragments) {
    return fill(esc(text), fragments);
  }
  // A remote session's states and why it ended, as the pages name them (server/web/texts.py).
  const SESSION_STATE_NAMES = {
    requested: fl.t("requested"),
    awaiting_consent: fl.t("awaiting consent"),
    connecting: fl.t("connecting"),
    active: fl.t("active"),
    closed: fl.t("closed"),
  };
  const CLOSE_REASON_NAMES = {
    operator: fl.t("operator"),
    idle_timeout: fl.t("idle timeout"),
    max_duration: fl.t("max duration"),
    site_denied: fl.t("site denied"),
    site_ended: fl.t("site ended"),
    agent_unreachable: fl.t("agent unreachable"),
    server_restart: fl.t("server restart"),
    access_revoked: fl.t("access revoked"),
    operator_gone: fl.t("operator gone"),
    error: fl.t("error"),
  };
  const sessionState = (state) => SESSION_STATE_NAMES[state] || String(state).replace(/_/g, " ");
  const closeReason = (reason) => CLOSE_REASON_NAMES[reason] || String(reason).replace(/_/g, " ");

  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // A FastAPI/fieldlink error body as one readable line.
  function describe(data) {
    if (data === null || data === undefined) return fl.t("no answer");
    const detail = typeof data === "object" && "detail" in data ? data.detail : data;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) {
      return detail
        .map((p) => {
          const where = p.line ? fl.t("line {line}", { line: p.line }) : "";
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
      throw new ApiError(401, fl.t("logged out"));
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
        .then(() => toast(fl.t("Copied: {text}", { text })))
        .catch(() => toast(fl.t("Select and copy: {text}", { text })));
    }
  });


  // Similar past cases (issue 14): every [data-similar-incident=ID] gets one line, as
  // "12 past cases of SC-541 on this model: 75 % fixed remotely, median 1.2 h; top fixes: ...".
  function hours(value) {
    if (value === null || value === undefined) return null;
    return fl.t("{hours} h", { hours: number(value, value < 10 ? 1 : 0) });
  }
  function similarText(s) {
    if (!s.count) return fl.t("No closed case of {code} yet.", { code: s.error_code });
    const facts = { count: number(s.count), code: s.error_code, share: percent(s.remote_share) };
    const parts = [
      s.scope === "model"
        ? fl.tn("{count} past case of {code} on this model: {share} fixed remotely", "{count} past cases of {code} on this model: {share} fixed remotely", s.count, facts)
        : fl.tn("{count} past case of {code} on any model: {share} fixed remotely", "{count} past cases of {code} on any model: {share} fixed remotely", s.count, facts),
    ];
    const remote = hours(s.median_ttr_remote_hours);
    const dispatch = hours(s.median_ttr_dispatch_hours);
    if (remote) parts.push(fl.t("median {hours}", { hours: remote }));
    if (dispatch) parts.push(fl.t("dispatch median {hours}", { hours: dispatch }));
    let text = parts.join(", ");
    // The fixes are the operators' notes: shown as written.
    if (s.fixes.length) text += "; " + fl.t("top fixes: {fixes}", { fixes: s.fixes.slice(0, 3).map((f) => `${f.note} (${f.count}×)`).join("; ") });
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

  // An incident's resolutions, as the pages name them (server/web/texts.py RESOLUTION_NAMES).
  const RESOLUTION_NAMES = { remote: fl.t("remote"), phone: fl.t("phone"), dispatch: fl.t("dispatch"), no_fault: fl.t("no fault") };

  // One click closes an incident whose fault cleared: [data-quick-close=ID][data-resolution=R]
  // (restored_at is the time the fault cleared, proposed by the server).
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-quick-close]");
    if (!button) return;
    button.disabled = true;
    try {
      const incident = await api("POST", `/api/v1/incidents/${encodeURIComponent(button.dataset.quickClose)}/close`, { resolution: button.dataset.resolution });
      const resolution = RESOLUTION_NAMES[incident.resolution] || incident.resolution.replace("_", " ");
      toast(fl.t("Incident #{id} closed ({resolution}).", { id: incident.id, resolution }));
      setTimeout(() => location.reload(), 800);
    } catch (error) {
      button.disabled = false;
      toast(error.message, "error");
    }
  });

  // A device's state badges, as the pages render them (server/web/templating.py device_badges):
  // revoked / online / offline and why; health, green only while online; a skewed clock.
  const OFFLINE_REASONS = {
    shutdown: fl.t("shut down"),
    connection_lost: fl.t("connection lost"),
    unreachable: fl.t("unreachable from its gateway"),
    silent: fl.t("silent (no report)"),
    gateway_offline: fl.t("its gateway is offline"),
    gateway_revoked: fl.t("its gateway was revoked"),
    revoked: fl.t("revoked"),
  };
  // A health report's status as the badges name it (the device's own word if it is another).
  const STATUS_NAMES = { ok: fl.t("ok"), warning: fl.t("warning"), fault: fl.t("fault") };
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
    return seconds > 0 ? fl.t("{amount} ahead", { amount }) : fl.t("{amount} behind", { amount });
  }
  function deviceBadgeList(d) {
    const list = [];
    if (d.revoked_at) list.push({ cls: "revoked", text: fl.t("revoked"), title: fl.t("Certificate revoked") });
    else if (d.online) list.push({ cls: "online", text: fl.t("online"), title: fl.t("Connected"), online: "true" });
    else {
      const why = OFFLINE_REASONS[d.online_reason || ""] || (d.last_seen ? "" : fl.t("never connected"));
      list.push({ cls: "offline", text: why ? fl.t("offline · {why}", { why }) : fl.t("offline"), title: d.online_reason || "", online: "false" });
    }
    const status = STATUS_NAMES[d.status] || d.status;
    if (!d.status) list.push({ cls: "unknown", text: fl.t("no data"), title: fl.t("No health report yet") });
    else if (d.online && !d.revoked_at) list.push({ cls: `health-${d.status}`, text: status, title: fl.t("Latest health") });
    else list.push({ cls: "stale", text: fl.t("last: {status}", { status }), title: fl.t("Its last report, not current") });
    if (d.clock_skewed && typeof d.clock_offset_s === "number") {
      list.push({ cls: "skew", text: fl.t("clock {offset}", { offset: skew(d.clock_offset_s) }), title: `${d.clock_offset_s > 0 ? "+" : ""}${Math.round(d.clock_offset_s)} s` });
    }
    return list;
  }
  function deviceBadges(d) {
    return deviceBadgeList(d)
      .map((b) => `<span class="badge ${esc(b.cls)}"${b.online ? ` data-online="${b.online}"` : ""}${b.title ? ` title="${esc(b.title)}"` : ""}>${esc(b.text)}</span>`)
      .join(" ");
  }

  return Object.assign(fl, { html, sessionState, closeReason, api, ApiError, describe, esc, toast, formError, when, csrf, similarText, deviceBadges, showTime });
})();
