// Incidents: create, escalate, close with a resolution, import a CSV.
"use strict";

(() => {
  document.getElementById("new-incident-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const data = new FormData(form);
    const body = { device_id: data.get("device_id").trim(), opened_at: new Date().toISOString(), channel: data.get("channel"), symptom: data.get("symptom").trim() };
    if (data.get("error_code").trim()) body.error_code = data.get("error_code").trim();
    for (const name of ["answered_at", "down_at"]) {
      if (data.get(name)) body[name] = new Date(data.get(name)).toISOString();
    }
    // A call answered before the form was sent came in by then at the latest.
    if (body.answered_at && body.answered_at < body.opened_at) body.opened_at = body.answered_at;
    try {
      await fl.api("POST", "/api/v1/incidents", body);
      location.reload();
    } catch (error) {
      fl.formError(form, error.message);
    }
  });

  const closeDialog = document.getElementById("close-incident");
  const closeForm = document.getElementById("close-incident-form");
  function localInput(d) {
    d.setMinutes(d.getMinutes() - d.getTimezoneOffset());
    return d.toISOString().slice(0, 16);
  }
  // The new-incident form's "answered at" starts at now: the operator is on the call.
  document.querySelector('[data-open="new-incident"]')?.addEventListener("click", () => {
    document.getElementById("n-answered").value = localInput(new Date());
  });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-close-incident]");
    if (!button) return;
    closeForm.dataset.incident = button.dataset.closeIncident;
    document.getElementById("close-incident-id").textContent = "#" + button.dataset.closeIncident;
    // An alert-opened incident whose fault cleared: the clearing time is proposed.
    const proposed = button.dataset.proposed ? new Date(button.dataset.proposed) : new Date();
    document.getElementById("c-restored").value = localInput(proposed);
    document.getElementById("c-note").value = "";
    fl.formError(closeForm, "");
    closeDialog.showModal();
  });
  closeForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(closeForm);
    const restored = new Date(data.get("restored_at"));
    const body = { resolution: data.get("resolution"), restored_at: restored.toISOString(), closed_at: new Date().toISOString() };
    for (const name of ["dispatched_at", "engineer_arrived_at"]) {
      if (data.get(name)) body[name] = new Date(data.get(name)).toISOString();
    }
    const note = data.get("resolution_note").trim();
    if (note) body.resolution_note = note;
    try {
      await fl.api("POST", "/api/v1/incidents/" + encodeURIComponent(closeForm.dataset.incident) + "/close", body);
      location.reload();
    } catch (error) {
      fl.formError(closeForm, error.message);
    }
  });

  // Escalate: a tier and/or an assignee, with the handover note (POST .../escalate).
  const escalateDialog = document.getElementById("escalate-incident");
  const escalateForm = document.getElementById("escalate-incident-form");
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-escalate-incident]");
    if (!button) return;
    escalateForm.dataset.incident = button.dataset.escalateIncident;
    document.getElementById("escalate-incident-id").textContent = "#" + button.dataset.escalateIncident;
    const tier = Number(button.dataset.tier || 1);
    document.getElementById("e-tier").value = tier < 3 ? String(tier + 1) : "";
    document.getElementById("e-assignee").value = "";
    document.getElementById("e-note").value = "";
    fl.formError(escalateForm, "");
    escalateDialog.showModal();
  });
  escalateForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(escalateForm);
    const body = { note: data.get("note").trim() };
    if (data.get("tier")) body.tier = Number(data.get("tier"));
    if (data.get("assignee").trim()) body.assignee = data.get("assignee").trim();
    if (!body.note) {
      fl.formError(escalateForm, fl.t("A handover note is needed."));
      return;
    }
    try {
      await fl.api("POST", "/api/v1/incidents/" + encodeURIComponent(escalateForm.dataset.incident) + "/escalate", body);
      location.reload();
    } catch (error) {
      fl.formError(escalateForm, error.message);
    }
  });

  const importForm = document.getElementById("import-form");
  importForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = document.getElementById("import-result");
    result.textContent = fl.t("Importing…");
    try {
      const r = await fl.api("POST", "/api/v1/incidents/import", new FormData(importForm));
      const counts = { rows: fl.number(r.rows), inserted: fl.number(r.inserted), updated: fl.number(r.updated), skipped: fl.number(r.skipped) };
      const line = fl.tn("{rows} row: {inserted} new, {updated} updated, {skipped} unchanged.", "{rows} rows: {inserted} new, {updated} updated, {skipped} unchanged.", r.rows, counts);
      result.innerHTML = `<p class="notice">${fl.esc(line)}</p>`;
    } catch (error) {
      const problems = error.message.split("; ").map((p) => `<li>${fl.esc(p)}</li>`).join("");
      result.innerHTML = `<div class="error"><p>${fl.esc(fl.t("Nothing was imported:"))}</p><ul>${problems}</ul></div>`;
    }
  });
})();
