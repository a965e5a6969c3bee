// The page that shows a new API key once: select it on click, copy it with the button, and say so.
// A static file rather than inline handlers: the Content-Security-Policy runs no inline script.
(function () {
  "use strict";
  var field = document.getElementById("new-api-key");
  var copy = document.getElementById("copy-api-key");
  var status = document.getElementById("copy-api-key-status");
  if (!field) { return; }
  field.addEventListener("click", function () { field.select(); });
  if (!copy) { return; }
  var label = copy.textContent;
  var timer = null;

  function show(copied, message) {
    copy.textContent = copied ? "Copied" : label;
    copy.classList.toggle("copied", copied);
    if (status) { status.textContent = message; }
    window.clearTimeout(timer);
    if (copied) { timer = window.setTimeout(function () { show(false, ""); }, 2000); }
  }

  function copyBySelection() {
    field.select();
    var done = false;
    try { done = document.execCommand("copy"); } catch (e) { done = false; }
    if (done) { show(true, "Copied to the clipboard."); }
    else { show(false, "Copying was not allowed: the key is selected, press Ctrl+C (or Cmd+C) to copy it."); }
  }

  copy.addEventListener("click", function () {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(
        function () { show(true, "Copied to the clipboard."); },
        copyBySelection
      );
    } else {
      copyBySelection();
    }
  });
})();
