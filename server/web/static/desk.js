// The desk: find the caller's device as you type; keep the fleet list live.
"use strict";

(() => {
  const input = document.getElementById("q");
  const results = document.getElementById("find-results");
  const form = document.getElementById("find-form");
  let timer;
  let asked = 0;
  let matches = [];

  let matchCount = 0;
  function render(query, answer) {
    matches = answer.items;
    matchCount = answer.count;
    if (!answer.count) {
      results.innerHTML = `<p class="muted">${fl.esc(fl.t("No device matches “{query}”.", { query }))}</p>`;
      return;
    }
    const shown = answer.count > answer.items.length ? " " + fl.t("(showing {shown}; type more to narrow)", { shown: fl.number(answer.items.length) }) : "";
    const count = answer.more
      ? fl.t("{count}+ matches", { count: fl.number(answer.count) })
      : fl.tn("{count} match", "{count} matches", answer.count, { count: fl.number(answer.count) });
    results.innerHTML =
      `<p class="small muted">${fl.esc(count + shown)}</p><ul class="plain">` +
      answer.items
        .map(
          (d) => `<li><a class="match" href="/devices/${encodeURIComponent(d.id)}">
            <strong>${fl.esc(d.customer)}</strong> <span class="muted">${fl.esc(d.site || "")}</span><br>
            <span>${fl.esc(d.id)} · ${fl.esc(d.type)} · ${fl.esc(d.serial)}</span>
            <span class="muted">${fl.esc(d.contact_phone || "")}</span>
            ${fl.deviceBadges(d)}</a></li>`,
        )
        .join("") +
      "</ul>";
  }

  async function search() {
    const query = input.value.trim();
    const mine = ++asked;
    if (query.length < 2) {
      results.innerHTML = "";
      matches = [];
      return;
    }
    try {
      const answer = await fl.api("GET", "/desk/find?q=" + encodeURIComponent(query));
      if (mine === asked) render(query, answer);
    } catch (error) {
      if (mine === asked) results.innerHTML = `<p class="error">${fl.esc(error.message)}</p>`;
    }
  }

  input?.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(search, 150);
  });
  // Keyboard shortcuts (listed on the page): / focuses the search; in it, Ctrl+Enter opens the
  // first match, Shift+Enter opens a session on it, the arrows move through the matches.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest("input, textarea, select, [contenteditable=true], dialog")) return;
    event.preventDefault();
    input?.focus();
    input?.select();
  });
  input?.addEventListener("keydown", (event) => {
    const first = matches[0];
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey || event.shiftKey)) {
      event.preventDefault();
      if (!first) return;
      const page = "/devices/" + encodeURIComponent(first.id);
      location.href = event.shiftKey ? page + "?open=session" : page;
    } else if (event.key === "ArrowDown") {
      const link = results.querySelector("a.match");
      if (link) {
        event.preventDefault();
        link.focus();
      }
    }
  });
  results?.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    const links = Array.from(results.querySelectorAll("a.match"));
    const at = links.indexOf(document.activeElement);
    if (at < 0) return;
    event.preventDefault();
    if (event.key === "ArrowUp" && at === 0) input.focus();
    else links[Math.min(links.length - 1, Math.max(0, at + (event.key === "ArrowDown" ? 1 : -1)))].focus();
  });

  form?.addEventListener("submit", (event) => {
    if (matches.length === 1 && matchCount === 1) {
      event.preventDefault();
      location.href = "/devices/" + encodeURIComponent(matches[0].id);
    }
  });
  if (input?.value.trim()) search();

  // The fleet list refreshes every 10 s, unless the user is working inside it.
  async function refresh() {
    const fleet = document.getElementById("fleet");
    if (!fleet || fleet.contains(document.activeElement) || document.hidden) return;
    try {
      const answer = await fetch("/desk/fleet?" + fleet.dataset.query, { credentials: "same-origin" });
      if (!answer.ok || answer.redirected) return;
      const html = await answer.text();
      const current = document.getElementById("fleet");
      if (current && !current.contains(document.activeElement)) current.outerHTML = html;
    } catch {
      // The next round tries again.
    }
  }
  setInterval(refresh, 10000);
})();
