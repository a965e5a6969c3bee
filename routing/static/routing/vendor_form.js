// Adding a vendor: its kind decides the form's fields, so choosing another kind loads that kind's form.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const kind = document.getElementById("id_kind");
  if (!kind || kind.tagName !== "SELECT") return;
  kind.addEventListener("change", () => {
    const url = new URL(window.location.href);
    url.searchParams.set("kind", kind.value);
    window.location.assign(url.toString());
  });
});
