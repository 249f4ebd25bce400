// Admin: register devices and issue enrollment tokens, revoke, SSH keys, verify the audit chain.
"use strict";

(() => {
  function showToken(deviceId, token, expires) {
    const server = location.origin;
    // The agent refuses plain http to another host unless told (it pins what it is sent):
    // say so in the command rather than hand the site one that fails.
    const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
    const insecure = location.protocol === "http:" && !loopback ? " --insecure-http" : "";
    const command = `fieldlink agent enroll --server ${server} --token ${token}${insecure}`;
    const what = fl.t("{device}: one-time enrollment token (shown only now, valid until {time}).");
    const where = fl.t("On the device: {command}");
    const device = "<strong>" + fl.esc(deviceId) + "</strong>";
    document.getElementById("token-result").innerHTML = `<div class="notice">
      <p>${fl.html(what, { device, time: fl.esc(fl.when(expires)) })}</p>
      <p>${fl.html(where, { command: "<code>" + fl.esc(command) + "</code>" })}
      <button type="button" class="link" data-copy="${fl.esc(command)}">${fl.esc(fl.t("Copy"))}</button></p></div>`;
    document.getElementById("token-result").scrollIntoView({ block: "nearest" });
  }

  // The device list as the server renders it now (a registration adds a row).
  async function refreshDevices() {
    const list = document.getElementById("device-list");
    if (!list) return;
    try {
      const answer = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!answer.ok) return;
      const fresh = new DOMParser().parseFromString(await answer.text(), "text/html").getElementById("device-list");
      if (fresh) list.replaceChildren(...fresh.childNodes);
    } catch {
      // The list stays as it was; a reload shows the new device.
    }
  }

  document.getElementById("register-form")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const body = {};
    for (const [key, value] of new FormData(form)) if (String(value).trim()) body[key] = String(value).trim();
    try {
      const r = await fl.api("POST", "/api/v1/devices", body);
      form.reset();
      if (r.enrollment_token) showToken(r.device.id, r.enrollment_token, r.enrollment_expires_at);
      else {
        const line = fl.html(fl.t("{device}: registered, watched via {gateway} (no agent, no enrollment token)."), {
          device: `<strong>${fl.esc(r.device.id)}</strong>`,
          gateway: `<strong>${fl.esc(r.device.via || "")}</strong>`,
        });
        document.getElementById("token-result").innerHTML = `<div class="notice"><p>${line}</p></div>`;
      }
      await refreshDevices();
    } catch (error) {
      document.getElementById("token-result").innerHTML = `<p class="error">${fl.esc(error.message)}</p>`;
    }
  });

  document.addEventListener("click", async (event) => {
    const token = event.target.closest("[data-token]");
    if (token) {
      try {
        const r = await fl.api("POST", `/api/v1/devices/${encodeURIComponent(token.dataset.token)}/enrollment-token`);
        showToken(r.device_id, r.enrollment_token, r.enrollment_expires_at);
      } catch (error) {
        fl.toast(error.message, "error");
      }
    }
    const revoke = event.target.closest("[data-revoke]");
    if (revoke) {
      const id = revoke.dataset.revoke;
      if (!confirm(fl.t("Revoke {id}? Its certificate goes on the CRL and its open sessions end.", { id }))) return;
      try {
        const r = await fl.api("POST", `/api/v1/devices/${encodeURIComponent(id)}/revoke`);
        // Not applied by the broker yet: the device page says since when and why.
        if (r && r.broker && r.broker.state === "pending") location.href = `/devices/${encodeURIComponent(id)}`;
        else location.reload();
      } catch (error) {
        fl.toast(error.message, "error");
      }
    }
    const remove = event.target.closest("[data-delete-key]");
    if (remove) {
      try {
        await fl.api("DELETE", `/api/v1/users/${encodeURIComponent(remove.dataset.user)}/keys/${remove.dataset.deleteKey}`);
        location.reload();
      } catch (error) {
        fl.toast(error.message, "error");
      }
    }
    const add = event.target.closest("[data-add-key]");
    if (add) {
      const dialog = document.getElementById("key-dialog");
      document.getElementById("key-user").textContent = add.dataset.addKey;
      dialog.dataset.user = add.dataset.addKey;
      fl.formError(dialog.querySelector("form"), "");
      dialog.showModal();
    }
  });

  document.getElementById("key-form")?.addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const user = document.getElementById("key-dialog").dataset.user;
    const data = new FormData(form);
    const body = { public_key: data.get("public_key").trim() };
    if (data.get("name").trim()) body.name = data.get("name").trim();
    try {
      await fl.api("POST", `/api/v1/users/${encodeURIComponent(user)}/keys`, body);
      location.reload();
    } catch (error) {
      fl.formError(form, error.status === 404 ? fl.t("SSH keys are not available on this server yet.") : error.message);
    }
  });

  document.getElementById("verify-audit")?.addEventListener("click", async (event) => {
    const out = document.getElementById("verify-result");
    event.target.disabled = true;
    out.textContent = fl.t("Verifying…");
    try {
      const r = await fl.api("GET", "/api/v1/audit/verify");
      out.className = r.intact ? "notice" : "error";
      // The server's own message when it gives one; the reason of a break is the server's word.
      const verdict = r.intact
        ? fl.tn("Intact: {entries} entry.", "Intact: {entries} entries.", r.entries, { entries: fl.number(r.entries) })
        : fl.t("Broken at entry {entry}: {reason}", { entry: r.broken_at, reason: r.reason });
      out.textContent = r.message || verdict;
    } catch (error) {
      out.className = "error";
      out.textContent = error.message;
    } finally {
      event.target.disabled = false;
    }
  });
})();
