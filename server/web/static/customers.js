// Customers: a manager registers one (the call banner's "register?" brings the caller's number along).
"use strict";

(() => {
  const form = document.getElementById("new-customer-form");
  if (!form) return;
  const dialog = document.getElementById("new-customer");
  // The caller's number travels in this tab's storage, never in a URL (the access log).
  const ani = sessionStorage.getItem("fieldlink.register.ani");
  if (location.hash === "#new") {
    sessionStorage.removeItem("fieldlink.register.ani");
    if (ani) document.getElementById("nc-phone").value = ani;
    fl.formError(form, "");
    dialog.showModal();
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const text = (name) => (data.get(name) || "").trim() || null;
    const body = { number: text("number"), name: text("name"), country: text("country"), region: text("region"), contacts: [] };
    if (text("contact_name") || text("contact_phone")) {
      body.contacts.push({ name: text("contact_name") || text("name"), phone: text("contact_phone"), email: text("contact_email"), language: text("contact_language") });
    }
    try {
      const customer = await fl.api("POST", "/api/v1/customers", body);
      location.href = "/customers/" + encodeURIComponent(customer.number);
    } catch (error) {
      fl.formError(form, error.message);
    }
  });
})();
