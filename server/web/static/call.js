// fieldlink console: the banner of an incoming call (a page opened by /desk/call carries ?call=ID).
"use strict";

(() => {
  const params = new URLSearchParams(location.search);
  const callId = params.get("call");
  const banner = document.getElementById("call-banner");
  if (!callId || !/^[0-9]{1,18}$/.test(callId) || !banner) return;

  // Links to the customer's devices keep the call, so its banner follows the operator.
  for (const link of document.querySelectorAll("a[data-call-link]")) {
    link.href += (link.href.includes("?") ? "&" : "?") + "call=" + callId;
  }

  const pageDevice = document.getElementById("device")?.dataset.device || null;

  function render(call) {
    const caller = fl.esc(call.ani_e164 || call.ani);
    const when = fl.esc(fl.when(call.started_at));
    let html =
      fl.html(fl.t("{incoming_call} from {caller}"), { incoming_call: `<strong>${fl.esc(fl.t("Incoming call"))}</strong>`, caller: `<span id="call-ani">${caller}</span>` }) +
      ` <span class="muted small">${fl.html(fl.t("at {time}"), { time: when })}</span> `;
    if (call.incident_id) {
      const link = `<a href="/incidents?device_id=${encodeURIComponent(call.device_id || "")}">${fl.esc(fl.t("incident #{id}", { id: call.incident_id }))}</a>`;
      html += "· " + fl.html(fl.t("{incident} opened from this call"), { incident: link });
    } else if (pageDevice) {
      html += `<button type="button" class="primary" id="call-incident">${fl.esc(fl.t("Open incident from this call"))}</button>`;
    } else if (!call.customer_number && !call.device_id) {
      html += `· <span id="call-nomatch">${fl.esc(fl.t("No device or customer matches this number."))}</span> <a href="/customers#new" id="call-register">${fl.esc(fl.t("Register the customer?"))}</a>`;
      if (document.querySelector('a[href="/admin"]')) html += ` · <a href="/admin/devices">${fl.esc(fl.t("Register a device"))}</a>`;
    } else {
      html += "· " + fl.esc(fl.t("choose the device the caller is calling about"));
    }
    banner.innerHTML = html;
    banner.hidden = false;
    document.getElementById("call-register")?.addEventListener("click", () => {
      sessionStorage.setItem("fieldlink.register.ani", call.ani_e164 || call.ani);
    });
    const button = document.getElementById("call-incident");
    if (button) {
      button.addEventListener("click", async () => {
        button.disabled = true;
        try {
          const incident = await fl.api("POST", `/api/v1/calls/${callId}/incident`, { device_id: pageDevice });
          fl.toast(fl.t("Incident #{id} opened from the call", { id: incident.id }));
          render({ ...call, incident_id: incident.id, device_id: pageDevice });
        } catch (error) {
          button.disabled = false;
          fl.toast(error.message, "error");
        }
      });
    }
  }

  fl.api("GET", `/api/v1/calls/${callId}`).then(render).catch((error) => fl.toast(error.message, "error"));
})();
