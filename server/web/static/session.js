// A remote session: its state as it moves, the xterm.js terminal, diagnostics, close, the recording.
"use strict";

(() => {
  const root = document.getElementById("session");
  const sessionId = root.dataset.session;
  const base = "/api/v1/sessions/" + encodeURIComponent(sessionId);
  const order = ["requested", "awaiting_consent", "connecting", "active", "closed"];
  const statusLine = document.getElementById("terminal-status");
  // "observe": a read-only view of another operator's terminal (the incident's specialist).
  const observing = root.dataset.mode === "observe";
  const observers = document.getElementById("observers");
  // The owner's list of watchers, each with a switch to let them type (observer -> allowed).
  const observerList = document.getElementById("observer-list");
  const watchers = new Map();
  const me = root.dataset.me;
  let mayType = false;
  const watchingText = (user) => fl.t("Watching {user}'s terminal: read only, your keys are not sent.", { user });

  function observerNews(message) {
    const who = message.user;
    if (message.event === "join") {
      if (!watchers.has(who)) watchers.set(who, false);
      observers.textContent = fl.t("{who} is watching (read only).", { who });
    } else if (message.event === "leave") {
      watchers.delete(who);
      observers.textContent = fl.t("{who} stopped watching.", { who });
    } else if (message.event === "input_allowed") {
      watchers.set(who, true);
      observers.textContent = fl.t("{by} lets {who} type.", { by: message.by, who });
    } else if (message.event === "input_revoked") {
      watchers.set(who, false);
      observers.textContent = fl.t("{by} took the keyboard back from {who}.", { by: message.by, who });
    } else if (message.event === "typing") {
      observers.textContent = fl.t("{who} is typing.", { who });
    }
    if (observing && who === me && (message.event === "input_allowed" || message.event === "input_revoked")) {
      mayType = message.event === "input_allowed";
      statusLine.textContent = mayType ? fl.t("{by} lets you type: your keys go to the device.", { by: message.by }) : watchingText(message.by);
    }
    if (observerList) renderWatchers();
  }

  function renderWatchers() {
    observerList.replaceChildren();
    for (const [who, allowed] of watchers) {
      const item = document.createElement("li");
      item.append((allowed ? fl.t("{who} may type", { who }) : fl.t("{who} is watching", { who })) + " ");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small";
      button.dataset.observer = who;
      button.textContent = allowed ? fl.t("Take the keyboard back from {who}", { who }) : fl.t("Let {who} type", { who });
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          await fl.api(allowed ? "DELETE" : "POST", `${base}/observers/${encodeURIComponent(who)}/allow-input`);
        } catch (error) {
          fl.toast(error.message, "error");
          button.disabled = false;
        }
      });
      item.append(button);
      observerList.append(item);
    }
    observerList.hidden = watchers.size === 0;
  }
  let state = root.dataset.state;
  let term = null;
  let socket = null;
  let player = null;
  let recordingShown = false;
  const TERMINAL_FONT = "'DejaVu Sans Mono', 'Cascadia Mono', Menlo, Consolas, 'Liberation Mono', monospace";

  function showState(next, closeReason, detail) {
    state = next;
    root.dataset.state = next;
    document.getElementById("state").innerHTML = `<span class="badge state-${fl.esc(next)}">${fl.esc(fl.sessionState(next))}</span>`;
    const index = order.indexOf(next);
    for (const step of document.querySelectorAll(".steps li")) {
      const at = order.indexOf(step.dataset.step);
      step.className = at < index ? "done" : at === index ? "current" : "";
      if (at === index) step.setAttribute("aria-current", "step");
      else step.removeAttribute("aria-current");
    }
    if (detail !== undefined) document.getElementById("state-detail").textContent = detail || "";
    if (next === "closed") {
      const reason = closeReason ? fl.closeReason(closeReason) : "";
      document.getElementById("close-reason").textContent = reason ? fl.t("closed: {reason}", { reason }) : fl.sessionState("closed");
      const closeButton = document.getElementById("close-session");
      if (closeButton) closeButton.hidden = true;
      const diagnostics = document.getElementById("diagnostics");
      if (diagnostics) diagnostics.hidden = true;
      if (statusLine) statusLine.textContent = fl.t("Session closed.");
      showRecording();
    }
  }
  showState(state);

  // The state from the API, waiting for changes (long poll) until the session closes.
  async function follow() {
    while (state !== "closed") {
      try {
        const s = await fl.api("GET", `${base}?wait_s=20&since=${encodeURIComponent(state)}`);
        if (s.state !== state || s.state === "closed") showState(s.state, s.close_reason, s.detail);
        fillFacts(s);
      } catch {
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }

  function fillFacts(s) {
    for (const [id, iso] of [["started", s.started_at], ["ended", s.ended_at]]) {
      const time = document.createElement("time");
      document.getElementById(id).replaceChildren(time);
      fl.showTime(time, iso);
    }
    document.getElementById("used").textContent = (s.services_used || []).join(", ") || "—";
  }

  function openTerminal() {
    const el = document.getElementById("terminal");
    term = new Terminal({
      cursorBlink: !observing,
      // A font Chromium knows by name first (it ignores ui-monospace), and rows a little taller
      // than the font: at lineHeight 1 the DOM renderer clips the glyphs that sit below the
      // baseline, and `x86_64` reads `x86 64`.
      fontFamily: TERMINAL_FONT,
      fontSize: 14,
      lineHeight: 1.2,
      scrollback: 5000,
      theme: { background: "#101418", foreground: "#e6e9ee" },
    });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(el);
    fit.fit();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ cols: term.cols, rows: term.rows, term: "xterm-256color" });
    const path = observing ? "/observe" : `/terminal?${query}`;
    socket = new WebSocket(`${scheme}//${location.host}${base}${path}`);
    socket.binaryType = "arraybuffer";
    const encoder = new TextEncoder();
    socket.onmessage = (event) => {
      if (typeof event.data === "string") {
        const message = JSON.parse(event.data);
        if (message.type === "observer") {
          observerNews(message);
          return;
        }
        if (message.type === "error") {
          statusLine.textContent = message.detail;
          return;
        }
        if (message.type === "state" && message.state === "observing") {
          statusLine.textContent = watchingText(message.owner);
          return;
        }
        if (message.type === "state") {
          showState(message.state, message.close_reason, message.detail);
          if (message.state === "active") {
            statusLine.textContent = fl.t("Connected. Keys go to the device.");
            term.focus();
          } else if (message.state !== "closed") {
            statusLine.textContent = message.state === "awaiting_consent" ? fl.t("Waiting for the site to approve…") : fl.t("Connecting…");
          }
        } else if (message.type === "exit") {
          const status = message.exit_status ?? fl.t("unknown");
          statusLine.textContent = fl.t("The shell exited (status {status}).", { status });
        }
        return;
      }
      term.write(new Uint8Array(event.data));
    };
    socket.onclose = (event) => {
      // The reason is the server's word, as it gives it.
      const reason = event.reason;
      if (observing) statusLine.textContent = reason ? fl.t("No longer watching: {reason}.", { reason }) : fl.t("No longer watching.");
      else if (state !== "closed") statusLine.textContent = reason ? fl.t("Terminal disconnected: {reason}.", { reason }) : fl.t("Terminal disconnected.");
    };
    term.onData((data) => {
      // An observer's keys go out only while the owner lets them type (the server checks too).
      if (observing && !mayType) return;
      if (socket.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
    });
    if (observing) return;
    term.onResize(({ cols, rows }) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "resize", cols, rows }));
    });
    let pending;
    window.addEventListener("resize", () => {
      clearTimeout(pending);
      pending = setTimeout(() => fit.fit(), 100);
    });
  }

  async function showRecording() {
    const card = document.getElementById("recording-card");
    card.hidden = false;
    document.querySelector(".terminal-card")?.setAttribute("hidden", "");
    if (recordingShown) return;
    recordingShown = true;
    let s;
    try {
      s = await fl.api("GET", base);
    } catch {
      return;
    }
    fillFacts(s);
    const note = document.getElementById("recording-note");
    if (!s.has_recording) {
      note.textContent = fl.t("This session has no shell recording.");
      return;
    }
    note.textContent = "";
    player = AsciinemaPlayer.create(`${base}/recording`, document.getElementById("player"), {
      fit: "width",
      preload: true,
      idleTimeLimit: 2,
      terminalFontFamily: TERMINAL_FONT,
      terminalLineHeight: 1.2,
    });
  }

  if (observing) {
    if (state !== "closed") openTerminal();
    return;
  }

  document.getElementById("close-session").addEventListener("click", async (event) => {
    event.target.disabled = true;
    try {
      const s = await fl.api("DELETE", base);
      socket?.close();
      showState(s.state, s.close_reason, s.detail);
    } catch (error) {
      fl.toast(error.message, "error");
      event.target.disabled = false;
    }
  });

  const output = document.getElementById("diag-output");
  for (const button of document.querySelectorAll("[data-command]")) {
    button.addEventListener("click", async () => {
      const command = button.dataset.command;
      output.textContent = `$ ${command}\n…`;
      button.disabled = true;
      try {
        const r = await fl.api("POST", `${base}/exec`, { command, timeout_s: 30 });
        const status = r.exit_status ?? fl.t("unknown");
        output.textContent = `$ ${command}\n${r.stdout}${r.stderr}\n${fl.t("[exit status {status}]", { status })}`;
      } catch (error) {
        output.textContent = `$ ${command}\n${error.message}`;
      } finally {
        button.disabled = false;
      }
    });
  }

  // A device watched through a site gateway: the session reaches its web page, no shell.
  if (state !== "closed" && root.dataset.forwardOnly !== "yes") openTerminal();
  follow();
})();
