// fieldlink console: the desk's call-back queue. Closing a follow-up records what was done
// (POST /api/v1/followups/{id}/close) and takes it off the queue.
"use strict";

(() => {
  for (const form of document.querySelectorAll("form.followup-close")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button");
      const note = form.elements.note.value.trim();
      if (!note) return fl.toast(fl.t("Say what was done first."), "error");
      button.disabled = true;
      try {
        await fl.api("POST", `/api/v1/followups/${encodeURIComponent(form.dataset.followup)}/close`, { note });
        const item = form.closest("li");
        const list = item?.parentElement;
        item?.remove();
        if (list && !list.children.length) {
          list.outerHTML = `<p class="muted">${fl.esc(fl.t("No customer is waiting for a call back."))}</p>`;
        }
        fl.toast(fl.t("Follow-up closed."));
      } catch (error) {
        button.disabled = false;
        fl.toast(error.message, "error");
      }
    });
  }
})();
