// Sessions awaiting the site's consent: approve or deny them (admins and site users),
// then follow each one live until it is active or closed.
"use strict";

(() => {
  const badge = (state) => `<span class="badge state-${fl.esc(state)}">${fl.esc(fl.sessionState(state))}</span>`;

  function show(s) {
    document.querySelectorAll(`[data-state-of="${CSS.escape(s.id)}"]`).forEach((element) => {
      element.innerHTML = badge(s.state) + (s.close_reason ? ` <span class="muted small">${fl.esc(fl.closeReason(s.close_reason))}</span>` : "");
    });
    document.querySelectorAll(`[data-approved-of="${CSS.escape(s.id)}"]`).forEach((element) => {
      element.textContent = s.approved_by ? fl.t("approved by {name} ({via})", { name: s.approved_by, via: s.approved_via }) : s.state === "closed" ? s.detail || "" : "";
    });
  }

  // Long-polls the session's state as its approver may see it, until it settles.
  async function follow(id, state) {
    const base = `/api/v1/sessions/${encodeURIComponent(id)}/approval`;
    while (state !== "active" && state !== "closed") {
      let s;
      try {
        s = await fl.api("GET", `${base}?wait_s=20&since=${encodeURIComponent(state)}`);
      } catch (error) {
        await new Promise((resolve) => setTimeout(resolve, 2000));
        continue;
      }
      state = s.state;
      show(s);
    }
  }

  document.querySelectorAll("form[data-approval]").forEach((form) => {
    const id = form.dataset.approval;
    const error = form.querySelector(".error");
    form.addEventListener("submit", (event) => event.preventDefault());
    form.querySelectorAll("button[data-decide]").forEach((button) => {
      button.addEventListener("click", async () => {
        const verdict = button.dataset.decide;
        const body = verdict === "deny" ? { reason: form.elements.reason.value.trim() } : {};
        form.querySelectorAll("button").forEach((b) => (b.disabled = true));
        error.hidden = true;
        try {
          const s = await fl.api("POST", `/api/v1/sessions/${encodeURIComponent(id)}/${verdict}`, body);
          form.remove();
          show(s);
          fl.toast(verdict === "approve" ? fl.t("Session {id} approved", { id }) : fl.t("Session {id} denied", { id }));
          follow(id, s.state);
        } catch (failure) {
          error.textContent = failure.message;
          error.hidden = false;
          form.querySelectorAll("button").forEach((b) => (b.disabled = false));
        }
      });
    });
  });
})();
